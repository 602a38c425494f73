"""Causal attention math for MLA shapes: a per-head nope part and one rope key shared by all heads."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from eva_jax.config import ComputeConfig, ModelConfig
from pallas_kernels import latent_attention
from pallas_kernels.backend import resolve


def attention_mask(t: int, s: int, segment_ids_q: Int[Array, "B T"] | None = None,
                   segment_ids_k: Int[Array, "B S"] | None = None, q_offset: int = 0) -> Bool[Array, "#B T S"]:
    """True where query t may attend key s: causal (s ≤ t + q_offset), and same segment when ids are given."""
    allowed = (jnp.arange(s)[None, :] <= (jnp.arange(t)[:, None] + q_offset))[None]
    if segment_ids_q is not None:
        allowed = allowed & (segment_ids_q[:, :, None] == segment_ids_k[:, None, :])
    return allowed


def mla_attention(q_nope: Float[Array, "B T H N"], q_rope: Float[Array, "B T H R"],
                  k_nope: Float[Array, "B S H N"], k_rope: Float[Array, "B S R"],
                  v: Float[Array, "B S H V"], mask: Bool[Array, "#B T S"], scale: float) -> Float[Array, "B T H V"]:
    """softmax(scale·(q_nope·k_nope + q_rope·k_rope) + mask)·v, scores and softmax in fp32 (reference §2.2).

    The shared rope key is broadcast to every head and joined to the nope key, so one contraction over 96
    dims makes the scores: contracting it apart (over R, for all heads at once) costs its backward a transpose
    of the whole [B, H, T, S] score gradient, 1.25× the time of this form on CPU.
    """
    b, s, h = k_nope.shape[:3]
    q = jnp.concatenate([q_nope, q_rope.astype(q_nope.dtype)], axis=-1)
    k = jnp.concatenate([k_nope, jnp.broadcast_to(k_rope[:, :, None], (b, s, h, k_rope.shape[-1]))], axis=-1)
    scores = jnp.einsum("BTHK,BSHK->BHTS", q, k.astype(q.dtype), preferred_element_type=jnp.float32)
    scores = jnp.where(mask[:, None], scores * scale, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("BHTS,BSHV->BTHV", probs, v)


def causal_attention(cfg: ModelConfig, compute: ComputeConfig, q_nope: Float[Array, "B T H N"],
                     q_rope: Float[Array, "B T H R"], k_nope: Float[Array, "B T H N"],
                     k_rope: Float[Array, "B T R"], v: Float[Array, "B T H V"],
                     segment_ids: Int[Array, "B T"] | None) -> Float[Array, "B T H V"]:
    """Self-attention over one (packed) sequence: the Pallas flash kernel or the XLA form, per
    compute.attention_impl."""
    choice = resolve("attention", compute.attention_impl, interpret=compute.kernel_interpret)
    if choice.use_pallas:
        return latent_attention.flash_mla(q_nope, q_rope, k_nope, k_rope, v, segment_ids, cfg.softmax_scale,
                                          interpret=choice.interpret, flavour=choice.flavour)
    t = q_nope.shape[1]
    if 0 < compute.attention_chunk < t:
        return _query_blocks(q_nope, q_rope, k_nope, k_rope, v, segment_ids, cfg.softmax_scale,
                             compute.attention_chunk)
    return _causal_blocks(q_nope, q_rope, k_nope, k_rope, v, segment_ids, cfg.softmax_scale)


CAUSAL_BLOCKS = 4
MIN_CAUSAL_BLOCK = 64


def _causal_blocks(q_nope: Float[Array, "B T H N"], q_rope: Float[Array, "B T H R"],
                   k_nope: Float[Array, "B T H N"], k_rope: Float[Array, "B T R"], v: Float[Array, "B T H V"],
                   segment_ids: Int[Array, "B T"] | None, scale: float) -> Float[Array, "B T H V"]:
    """mla_attention with the keys after each query block left out instead of masked: query rows [lo, hi)
    attend keys [0, hi) only, so 4 blocks compute (1+2+3+4)/16 of the scores. Exact (a masked key adds an
    exact zero to the softmax); the train-step attention runs 1.6× faster on CPU at T = 512."""
    t = q_nope.shape[1]
    blocks = max(1, min(CAUSAL_BLOCKS, t // MIN_CAUSAL_BLOCK))
    bounds = [t * i // blocks for i in range(blocks + 1)]
    outs = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        seg_q, seg_k = (None, None) if segment_ids is None else (segment_ids[:, lo:hi], segment_ids[:, :hi])
        mask = attention_mask(hi - lo, hi, seg_q, seg_k, q_offset=lo)
        outs.append(mla_attention(q_nope[:, lo:hi], q_rope[:, lo:hi], k_nope[:, :hi], k_rope[:, :hi], v[:, :hi],
                                  mask, scale))
    return jnp.concatenate(outs, axis=1) if blocks > 1 else outs[0]


def _query_blocks(q_nope: Float[Array, "B T H N"], q_rope: Float[Array, "B T H R"],
                  k_nope: Float[Array, "B T H N"], k_rope: Float[Array, "B T R"], v: Float[Array, "B T H V"],
                  segment_ids: Int[Array, "B T"] | None, scale: float, chunk: int) -> Float[Array, "B T H V"]:
    """mla_attention one block of `chunk` query rows at a time against all keys (each row's softmax is whole,
    so the result is the same), the blocks rematerialised in the backward pass: peak scores memory falls by
    T / chunk. A last partial block is padded with query rows whose outputs are dropped (the MTP modules see
    T − k tokens)."""
    b, t = q_nope.shape[:2]
    blocks = -(-t // chunk)
    pad = blocks * chunk - t

    def split(x):  # [B, T, ...] -> [blocks, B, chunk, ...]
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return jnp.moveaxis(x.reshape(b, blocks, chunk, *x.shape[2:]), 1, 0)

    seg = segment_ids if segment_ids is not None else jnp.zeros((b, t), jnp.int32)

    @jax.checkpoint
    def block(args):
        qn, qr, seg_q, start = args
        mask = (jnp.arange(t)[None, :] <= (jnp.arange(chunk)[:, None] + start))[None]
        mask = mask & (seg_q[:, :, None] == seg[:, None, :])
        return mla_attention(qn, qr, k_nope, k_rope, v, mask, scale)

    starts = jnp.arange(blocks, dtype=jnp.int32) * chunk
    out = jax.lax.map(block, (split(q_nope), split(q_rope), split(seg), starts))
    return jnp.moveaxis(out, 0, 1).reshape(b, blocks * chunk, *out.shape[3:])[:, :t]
