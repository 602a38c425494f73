"""MLA attention of a step's new tokens against the paged latent cache, in the absorbed form (reference §2.4):
W_UK is folded into the query, so scores are taken against the C-dim latent directly, and W_UV is applied
after the attention-weighted sum of latents; K and V are never materialised. T new tokens per row attend to
the cache and causally to each other (T = 1 plain decode, D + 1 speculative verification, 2D + 1 an MTP
window). Through the Pallas paged decode kernel when compute.attention_impl picks it, else in XLA.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from eva_jax.config import ComputeConfig, ModelConfig
from eva_jax.nn import kv_cache
from eva_jax.nn.kv_cache import Pages, Rows
from pallas_kernels import latent_attention
from pallas_kernels.backend import KernelChoice, resolve


def _power_of_two(n: int) -> bool:
    return n > 0 and not n & (n - 1)


def kernel_choice(cfg: ModelConfig, compute: ComputeConfig, page_size: int) -> KernelChoice | None:
    """The backend's KernelChoice for cached steps, or None for the XLA form.

    "pallas" always takes the kernel (errors that it cannot compile come from the kernel, with the reason);
    "auto" takes it only where it compiles: natively, and on GPU only for power-of-two latent, rope and page
    sizes (Triton's block shapes)."""
    choice = resolve("attention", compute.attention_impl, interpret=compute.kernel_interpret)
    if not choice.use_pallas:
        return None
    sizes = (cfg.kv_lora_rank, cfg.qk_rope_head_dim, page_size)
    if (compute.attention_impl == "auto" and not choice.interpret and choice.flavour == "triton"
            and not all(map(_power_of_two, sizes))):
        return None
    return choice


def _new_token_mask(valid: Bool[Array, "B T"]) -> Bool[Array, "B T T"]:
    """The new tokens see each other causally, and only the ones that are real (not padding)."""
    t = valid.shape[1]
    return jnp.tril(jnp.ones((t, t), bool))[None] & valid[:, None, :]


def absorbed_attention(cfg: ModelConfig, compute: ComputeConfig, q_nope: Float[Array, "B T H N"],
                       q_rope: Float[Array, "B T H R"], latent_BTC: Float[Array, "B T C"],
                       k_rope_BTR: Float[Array, "B T R"], w_kv: Float[Array, "H NV C"], pages: Pages, rows: Rows
                       ) -> tuple[Float[Array, "B T H V"], Pages]:
    """The new tokens' attention output, and the layer's pages with their (c_n, rotated k_r) stored.
    w_kv is MLA's wkv_b, [H, N + V, C]: per head, W_UK's rows then W_UV's, the layout both absorbed products
    read without a transposed copy of the weight."""
    n = cfg.qk_nope_head_dim
    q_latent = jnp.einsum("BTHN,HNC->BTHC", q_nope, w_kv[:, :n])
    choice = kernel_choice(cfg, compute, pages.latent.shape[1])
    if choice is not None:
        # The kernel reads the new tokens' keys from the cache, so they are stored first.
        pages = kv_cache.write(pages, latent_BTC, k_rope_BTR, rows.positions, rows.valid, rows.page_table)
        lengths = rows.positions[:, 0] + q_latent.shape[1]
        out_BTHC = latent_attention.mla_decode(q_latent, q_rope, pages.latent, pages.rope, rows.page_table, lengths,
                              cfg.softmax_scale, interpret=choice.interpret, flavour=choice.flavour)
        return _values(out_BTHC, w_kv, n), pages
    out_BTHC = _xla_attention(cfg, q_latent, q_rope, latent_BTC, k_rope_BTR, pages, rows)
    out_BTHV = _values(out_BTHC, w_kv, n)
    # The write must come after the read. Without a data dependency XLA cannot order them and copies the
    # whole pool (every step, every layer); making the stored flags depend on the output orders them.
    # As a side effect a token whose attention output is not finite is not cached.
    valid = rows.valid & jnp.isfinite(out_BTHV).all(axis=(2, 3))
    return out_BTHV, kv_cache.write(pages, latent_BTC, k_rope_BTR, rows.positions, valid, rows.page_table)


def _values(out_BTHC: Float[Array, "B T H C"], w_kv: Float[Array, "H NV C"], n: int) -> Float[Array, "B T H V"]:
    # The weight is the left operand, so its per-head [V, C] block is read as stored.
    return jnp.einsum("HVC,BTHC->BTHV", w_kv[:, n:], out_BTHC)


def _xla_attention(cfg: ModelConfig, q_latent: Float[Array, "B T H C"], q_rope: Float[Array, "B T H R"],
                   latent_BTC: Float[Array, "B T C"], k_rope_BTR: Float[Array, "B T R"], pages: Pages,
                   rows: Rows) -> Float[Array, "B T H C"]:
    """softmax over [cached slots before the first new position; the new tokens], output in latent space.
    Cached slots at or past that position are masked and read as zeros (kv_cache.read), so whatever they
    hold — the trash page, a recycled page, a NaN — contributes exactly 0."""
    f32 = jnp.float32
    start: Int[Array, " B"] = rows.positions[:, 0]
    latent_BSC, k_rope_BSR = kv_cache.read(pages, rows.page_table, start)
    # Scores are laid out [B, S, T, H] so the cached latent is the matmul's left operand as stored: no
    # copy of it is transposed, whatever the context length.
    old = (jnp.einsum("BSC,BTHC->BSTH", latent_BSC, q_latent, preferred_element_type=f32)
           + jnp.einsum("BSR,BTHR->BSTH", k_rope_BSR, q_rope, preferred_element_type=f32))
    new = (jnp.einsum("BUC,BTHC->BUTH", latent_BTC, q_latent, preferred_element_type=f32)
           + jnp.einsum("BUR,BTHR->BUTH", k_rope_BTR, q_rope, preferred_element_type=f32))
    (b, s), t = latent_BSC.shape[:2], q_latent.shape[1]
    mask_old = jnp.broadcast_to(jnp.arange(s)[None, :, None] < start[:, None, None], (b, s, t))
    mask = jnp.concatenate([mask_old, jnp.swapaxes(_new_token_mask(rows.valid), 1, 2)], 1)[..., None]
    scores = jnp.where(mask, jnp.concatenate([old, new], 1) * cfg.softmax_scale, jnp.finfo(f32).min)
    probs = jax.nn.softmax(scores, axis=1).astype(q_latent.dtype)  # [B, S+U, T, H]
    return (jnp.einsum("BSTH,BSC->BTHC", probs[:, :s], latent_BSC)
            + jnp.einsum("BUTH,BUC->BTHC", probs[:, s:], latent_BTC))
