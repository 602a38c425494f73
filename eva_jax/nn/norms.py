"""RMSNorm with fp32 statistics, rounding in Hugging Face's order (reference §2.1)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from eva_jax.nn.layers import param


def rms_norm(x: Float[Array, "... D"], gain: Float[Array, " D"], eps: float) -> Float[Array, "... D"]:
    """w · cast(x / rms(x)): the normalised value is cast to x's dtype *before* the gain multiply, as HF does."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + eps)
    return gain.astype(x.dtype) * normed.astype(x.dtype)


class RMSNorm(nn.Module):
    eps: float
    param_dtype: str = "float32"
    axis_name: str = "norm"

    @nn.compact
    def __call__(self, x: Float[Array, "... D"]) -> Float[Array, "... D"]:
        gain = param(self, "scale", (x.shape[-1],), (self.axis_name,), nn.initializers.ones,
                     jnp.dtype(self.param_dtype))
        return rms_norm(x, gain, self.eps)
