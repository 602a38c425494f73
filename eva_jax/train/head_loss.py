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

CHUNK_LOGITS = 1 << 22  # fp32 logits per chunk (16 MB): a chunk's softmax stays in a CPU's last-level cache


def head_cross_entropy(h: Float[Array, "B T D"], w: Float[Array, "D V"], targets: Int[Array, "B T"],
                       mask: Float[Array, "B T"]) -> Float[Array, ""]:
    """Σ mask·(−log softmax(h·w)[target]) / max(Σ mask, 1); logits accumulate in fp32 from h's dtype."""
    n, d = h.shape[0] * h.shape[1], h.shape[2]
    rows = _chunk_rows(n, w.shape[1])
    pad = -n % rows
    x = jnp.pad(h.reshape(n, d), ((0, pad), (0, 0)))
    t = jnp.pad(targets.reshape(n), (0, pad))
    m = jnp.pad(mask.reshape(n).astype(jnp.float32), (0, pad))
    return _loss(x, w.astype(h.dtype), t, m, rows)


def _chunk_rows(n: int, vocab: int) -> int:
    rows = max(8, CHUNK_LOGITS // vocab // 8 * 8)
    return min(rows, -(-n // 8) * 8)


def _chunks(a: Array, rows: int) -> Array:
    return a.reshape(-1, rows, *a.shape[1:])


def _nll_and_probs(x: Array, w: Array, t: Array) -> tuple[Array, Array]:
    """Per-row −log p(target) and the softmax of one chunk of rows."""
    logits = jnp.dot(x, w, preferred_element_type=jnp.float32)
    top = jax.lax.stop_gradient(logits.max(axis=-1, keepdims=True))
    e = jnp.exp(logits - top)
    total = e.sum(axis=-1, keepdims=True)
    picked = jnp.take_along_axis(logits, t[:, None], axis=-1)
    return (jnp.log(total) + top - picked)[:, 0], e / total


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _loss(x, w, t, m, rows: int):
    def body(total, chunk):
        xc, tc, mc = chunk
        nll, _ = _nll_and_probs(xc, w, tc)
        return total + (nll * mc).sum(), None

    total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (_chunks(x, rows), _chunks(t, rows), _chunks(m, rows)))
    return total / jnp.maximum(m.sum(), 1.0)


def _loss_fwd(x, w, t, m, rows):
    denom = jnp.maximum(m.sum(), 1.0)

    def body(carry, chunk):
        total, d_w = carry
        xc, tc, mc = chunk
        nll, probs = _nll_and_probs(xc, w, tc)
        d_logits = (probs - jax.nn.one_hot(tc, w.shape[1], dtype=probs.dtype)) * (mc / denom)[:, None]
        d_logits = d_logits.astype(x.dtype)
        d_x = jnp.dot(d_logits, w.T, preferred_element_type=jnp.float32).astype(x.dtype)
        d_w = d_w + jnp.dot(xc.T, d_logits, preferred_element_type=jnp.float32)
        return (total + (nll * mc).sum(), d_w), d_x

    init = (jnp.zeros((), jnp.float32), jnp.zeros(w.shape, jnp.float32))
    (total, d_w), d_x = jax.lax.scan(body, init, (_chunks(x, rows), _chunks(t, rows), _chunks(m, rows)))
    return total / denom, (d_x.reshape(x.shape), d_w)


def _loss_bwd(rows, saved, g):
    d_x, d_w = saved
    return (g * d_x).astype(d_x.dtype), (g * d_w).astype(d_x.dtype), None, None


_loss.defvjp(_loss_fwd, _loss_bwd)
