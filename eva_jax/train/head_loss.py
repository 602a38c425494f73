"""Cross-entropy of the LM head without the [B, T, V] logits: `cross_entropy(h @ w, targets, mask)` with the
rows taken a chunk at a time and the gradients made in the forward pass.

Why: on CPU the plain form (logits, log_softmax, take_along_axis, their autodiff) spends more time moving
[B·T, V] fp32 tensors through memory than in the three head GEMMs; at DeepSeek-V3's vocabulary (129,280) the
logits of one 4K-token micro-batch are 2 GB. The loss is a scalar, so its cotangent only scales the gradients:
the forward pass computes d_h and d_w chunk by chunk (the softmax is used while it is in cache) and keeps them
as residuals; the backward pass multiplies them by the cotangent. Called without differentiation (held-out
loss), only the loss is computed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from eva_jax.arrays import HostOrDevice

CHUNK_LOGITS = 1 << 22  # fp32 logits per chunk and device (16 MB): a chunk's softmax stays in a CPU's cache


def head_cross_entropy(h: Float[Array, "B T D"], w: Float[Array, "D V"], targets: Int[HostOrDevice, "B T"],
                       mask: Float[HostOrDevice, "B T"], batch_shards: int = 1) -> Float[Array, ""]:
    """Σ mask·(−log softmax(h·w)[target]) / max(Σ mask, 1); logits accumulate in fp32 from h's dtype.

    Chunks run along T and keep the whole batch axis, so a batch sharded over the mesh stays sharded and each
    device computes the loss of its own rows without relying on the partitioner to split a flattened B·T axis;
    the chunk length is sized by the rows one device holds (`batch_shards`: how many ways the batch is split)."""
    b, t, _ = h.shape
    chunk = _chunk_length(t, w.shape[1], -(-b // batch_shards))
    pad = -t % chunk
    x = jnp.pad(h, ((0, 0), (0, pad), (0, 0)))
    tg = jnp.pad(targets, ((0, 0), (0, pad)))
    m = jnp.pad(mask.astype(jnp.float32), ((0, 0), (0, pad)))
    return _loss(x, w.astype(h.dtype), tg, m, chunk)


def _chunk_length(t: int, vocab: int, local_batch: int) -> int:
    return max(1, min(t, CHUNK_LOGITS // (vocab * local_batch)))


def _chunks(a: Array, chunk: int) -> Array:
    """[B, T, ...] -> [T / chunk, B, chunk, ...]: the scan runs over the first axis."""
    return jnp.moveaxis(a.reshape(a.shape[0], -1, chunk, *a.shape[2:]), 1, 0)


def _pieces(x: Array, t: Array, m: Array, chunk: int) -> tuple[Array, Array, Array]:
    return _chunks(x, chunk), _chunks(t, chunk), _chunks(m, chunk)


def _unchunk(a: Array) -> Array:
    a = jnp.moveaxis(a, 0, 1)
    return a.reshape(a.shape[0], -1, *a.shape[3:])


def _nll_and_probs(x: Array, w: Array, t: Array) -> tuple[Array, Array]:
    """Per-row −log p(target) and the softmax of one chunk [B, C, ...]."""
    logits = jnp.einsum("BCD,DV->BCV", x, w, preferred_element_type=jnp.float32)
    top = jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))
    e = jnp.exp(logits - top)
    total = e.sum(axis=-1, keepdims=True)
    picked = jnp.take_along_axis(logits, t[..., None], axis=-1)
    return (jnp.log(total) + top - picked)[..., 0], e / total


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _loss(x, w, t, m, chunk: int):
    def body(total, piece):
        xc, tc, mc = piece
        nll, _ = _nll_and_probs(xc, w, tc)
        return total + (nll * mc).sum(), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), _pieces(x, t, m, chunk))
    return total / jnp.maximum(m.sum(), 1.0)


def _loss_fwd(x, w, t, m, chunk):
    denom = jnp.maximum(m.sum(), 1.0)

    def body(carry, piece):
        total, d_w = carry
        xc, tc, mc = piece
        nll, probs = _nll_and_probs(xc, w, tc)
        d_logits = (probs - jax.nn.one_hot(tc, w.shape[1], dtype=probs.dtype)) * (mc / denom)[..., None]
        d_logits = d_logits.astype(x.dtype)
        d_x = jnp.einsum("BCV,DV->BCD", d_logits, w, preferred_element_type=jnp.float32).astype(x.dtype)
        d_w = d_w + jnp.einsum("BCD,BCV->DV", xc, d_logits, preferred_element_type=jnp.float32)
        return (total + (nll * mc).sum(), d_w), d_x

    init = (jnp.zeros((), jnp.float32), jnp.zeros(w.shape, jnp.float32))
    (total, d_w), d_x = jax.lax.scan(body, init, _pieces(x, t, m, chunk))
    return total / denom, (_unchunk(d_x), d_w)


def _loss_bwd(chunk, saved, g):
    d_x, d_w = saved
    return (g * d_x).astype(d_x.dtype), (g * d_w).astype(d_x.dtype), None, None


_loss.defvjp(_loss_fwd, _loss_bwd)
