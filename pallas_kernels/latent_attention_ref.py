"""Pure-jnp references for the latent-attention kernels: training/prefill MLA attention and absorbed paged decode.

Numerics follow eva_jax.nn.attention.mla_attention (reference §2.2): scores and softmax in fp32, probabilities cast
to the value dtype before the value product. Kept self-contained (no eva_jax import) because eva_jax.nn sits above
this package; the tests check the two agree.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

MASKED = float(jnp.finfo(jnp.float32).min)


def causal_segment_mask(segment_ids: Int[Array, "B T"] | None, b: int, t: int) -> Bool[Array, "B T T"]:
    """Query t sees key s when s ≤ t and, for packed rows, both carry the same segment id."""
    allowed = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
    if segment_ids is not None:
        allowed = allowed & (segment_ids[:, :, None] == segment_ids[:, None, :])
    return allowed


def flash_mla_ref(q_nope: Float[Array, "B T H N"], q_rope: Float[Array, "B T H R"],
                  k_nope: Float[Array, "B T H N"], k_rope: Float[Array, "B T R"], v: Float[Array, "B T H V"],
                  segment_ids: Int[Array, "B T"] | None, scale: float) -> Float[Array, "B T H V"]:
    """softmax(scale·(q_nope·k_nope + q_rope·k_rope), causal and same-segment)·v with T×T scores (the oracle)."""
    b, t = q_nope.shape[:2]
    mask = causal_segment_mask(segment_ids, b, t)
    scores = jnp.einsum("BTHN,BSHN->BHTS", q_nope, k_nope, preferred_element_type=jnp.float32)
    scores += jnp.einsum("BTHR,BSR->BHTS", q_rope, k_rope, preferred_element_type=jnp.float32)
    scores = jnp.where(mask[:, None], scores * scale, MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("BHTS,BSHV->BTHV", probs, v)


def mla_decode_ref(q_latent: Float[Array, "B T H C"], q_rope: Float[Array, "B T H R"],
                   latent: Float[Array, "B S C"], k_rope: Float[Array, "B S R"], lengths: Int[Array, " B"],
                   scale: float) -> Float[Array, "B T H C"]:
    """Absorbed MLA over a contiguous latent cache (reference §2.4); output stays in latent space.

    q_latent is q_nope·W_UK per head. The T new tokens are the last T of each sequence's `lengths[b]` cached
    positions, so query t sits at position lengths[b] − T + t and sees keys s ≤ that (causal for T > 1, e.g.
    speculative verification). Cache rows at or beyond lengths[b] are never read (they may hold anything).
    """
    t, s = q_latent.shape[1], latent.shape[1]
    q_pos = lengths[:, None] - t + jnp.arange(t)[None, :]  # [B, T]
    allowed = jnp.arange(s)[None, None, :] <= q_pos[:, :, None]  # [B, T, S]
    live = (jnp.arange(s)[None, :] < lengths[:, None])[..., None]
    latent, k_rope = jnp.where(live, latent, 0), jnp.where(live, k_rope, 0)
    scores = jnp.einsum("BTHC,BSC->BHTS", q_latent, latent, preferred_element_type=jnp.float32)
    scores += jnp.einsum("BTHR,BSR->BHTS", q_rope, k_rope, preferred_element_type=jnp.float32)
    scores = jnp.where(allowed[:, None], scores * scale, MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(latent.dtype)
    return jnp.einsum("BHTS,BSC->BTHC", probs, latent).astype(q_latent.dtype)


def gather_pages(pages: Float[Array, "P Z X"], page_table: Int[Array, "B M"]) -> Float[Array, "B S X"]:
    """A paged cache [pages, page size, features] laid out contiguously per sequence: [B, M·Z, X]."""
    b, m = page_table.shape
    return pages[page_table].reshape(b, m * pages.shape[1], pages.shape[2])


def mla_decode_paged_ref(q_latent: Float[Array, "B T H C"], q_rope: Float[Array, "B T H R"],
                         latent_pages: Float[Array, "P Z C"], rope_pages: Float[Array, "P Z R"],
                         page_table: Int[Array, "B M"], lengths: Int[Array, " B"], scale: float
                         ) -> Float[Array, "B T H C"]:
    """`mla_decode_ref` over a paged cache; page-table entries past a sequence's last page are ignored."""
    n_used = -(-lengths // latent_pages.shape[1])
    # Entries beyond the used pages may be garbage (even out of range): point them at page 0, masked anyway.
    page_table = jnp.where(jnp.arange(page_table.shape[1])[None, :] < n_used[:, None], page_table, 0)
    return mla_decode_ref(q_latent, q_rope, gather_pages(latent_pages, page_table),
                          gather_pages(rope_pages, page_table), lengths, scale)
