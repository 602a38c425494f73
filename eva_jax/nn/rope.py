"""Rotary embeddings with YaRN frequency correction (reference §2.3 and §3).

Frequencies are computed in numpy float32 exactly as Hugging Face does; angles are formed in fp32 on device.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from eva_jax.config import ModelConfig, YarnConfig, yarn_mscale


def _correction_dim(rotations: float, dim: int, base: float, original_len: int) -> float:
    return dim * math.log(original_len / (rotations * 2 * math.pi)) / (2 * math.log(base))


def yarn_ramp_bounds(dim: int, base: float, yarn: YarnConfig) -> tuple[int | float, int | float]:
    """The [low, high] dimension range blended between extrapolation and interpolation (§3 step 3)."""
    low = _correction_dim(yarn.beta_fast, dim, base, yarn.original_max_position_embeddings)
    high = _correction_dim(yarn.beta_slow, dim, base, yarn.original_max_position_embeddings)
    if yarn.truncate:
        low, high = math.floor(low), math.ceil(high)
    return max(low, 0), min(high, dim - 1)


def inverse_frequencies(dim: int, base: float, yarn: YarnConfig | None) -> np.ndarray:
    """ω_j for j < dim/2, float32; YaRN-blended when `yarn` is given (§3 steps 1–5)."""
    pos_freqs = np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    extrapolated = (np.float32(1.0) / pos_freqs).astype(np.float32)
    if yarn is None:
        return extrapolated
    interpolated = (np.float32(1.0) / (np.float32(yarn.factor) * pos_freqs)).astype(np.float32)
    low, high = yarn_ramp_bounds(dim, base, yarn)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - np.float32(low)) / np.float32(high - low), 0, 1)
    keep = (np.float32(1.0) - ramp).astype(np.float32)  # HF's inv_freq_extrapolation_factor
    return (interpolated * (1 - keep) + extrapolated * keep).astype(np.float32)


def cos_sin_amplitude(yarn: YarnConfig | None) -> float:
    """HF's `attention_factor` that multiplies cos and sin (§3 step 6); 1 without YaRN."""
    if yarn is None:
        return 1.0
    if yarn.attention_factor is not None:
        return float(yarn.attention_factor)
    if yarn.mscale and yarn.mscale_all_dim:
        return float(yarn_mscale(yarn.factor, yarn.mscale) / yarn_mscale(yarn.factor, yarn.mscale_all_dim))
    return yarn_mscale(yarn.factor)


def rope_tables(cfg: ModelConfig, positions: Int[Array, "B T"]
                ) -> tuple[Float[Array, "B T R2"], Float[Array, "B T R2"]]:
    """cos and sin of θ_j = pos·ω_j in fp32, scaled by the YaRN amplitude; R2 = qk_rope_head_dim / 2."""
    inv_freq = jnp.asarray(inverse_frequencies(cfg.qk_rope_head_dim, cfg.rope_theta, cfg.rope_scaling))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq
    amplitude = cos_sin_amplitude(cfg.rope_scaling)
    return jnp.cos(angles) * amplitude, jnp.sin(angles) * amplitude


def apply_rope(x: Float[Array, "... R"], cos: Float[Array, "... R2"], sin: Float[Array, "... R2"],
               interleave: bool) -> Float[Array, "... R"]:
    """Rotates x (computed in fp32, returned in x's dtype).

    interleave=True pairs adjacent dims (2j, 2j+1) — DeepSeek's convention — and writes the result
    de-interleaved ([evens' ; odds']), like HF: q and k share the permutation, so q·k is unchanged.
    interleave=False pairs dim j with j + R/2 (rotate-half).
    """
    x32 = x.astype(jnp.float32)
    if interleave:
        first, second = x32[..., 0::2], x32[..., 1::2]
    else:
        half = x.shape[-1] // 2
        first, second = x32[..., :half], x32[..., half:]
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)
