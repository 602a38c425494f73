"""FP8 (E4M3) block quantisation, DeepSeek's format (reference §6.2): W ≈ float32(Wq) · S[i//b, j//b].

`S` ("weight_scale_inv") is multiplied on dequantisation. Edge blocks are partial: the scale grid is
ceil(out/b) × ceil(in/b) and indexing is by floor division, so 576 rows (4.5 blocks) work.
These work on numpy and jax.numpy arrays alike (the `xp` argument).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_dtypes
import numpy as np

E4M3_MAX = 448.0
FP8_DTYPE = ml_dtypes.float8_e4m3fn


def scale_grid_shape(shape: tuple[int, int], block: int = 128) -> tuple[int, int]:
    return (-(-shape[0] // block), -(-shape[1] // block))


def expand_scales(scale: Any, shape: tuple[int, int], block: int = 128, xp: Any = np) -> Any:
    """The per-element scale of a [out, in] weight from its block grid."""
    return xp.repeat(xp.repeat(scale, block, axis=0), block, axis=1)[: shape[0], : shape[1]]


def dequantize_blocks(wq: Any, scale_inv: Any, block: int = 128, xp: Any = np) -> Any:
    """float32 weight from E4M3 values and their block scales."""
    if scale_inv.shape != scale_grid_shape(wq.shape, block):
        raise ValueError(f"scale grid {tuple(scale_inv.shape)} does not match weight {tuple(wq.shape)} in "
                         f"{block}×{block} blocks (expected {scale_grid_shape(wq.shape, block)})")
    return wq.astype(xp.float32) * expand_scales(scale_inv.astype(xp.float32), wq.shape, block, xp)


def quantize_blocks(w: Any, block: int = 128, xp: Any = np) -> tuple[Any, Any]:
    """(E4M3 values, float32 scale grid) with S = amax/448 per block; an all-zero block gets S = 1."""
    w = w.astype(xp.float32)
    rows, cols = scale_grid_shape(w.shape, block)
    padded = xp.zeros((rows * block, cols * block), xp.float32)
    if xp is np:
        padded[: w.shape[0], : w.shape[1]] = w
    else:
        padded = padded.at[: w.shape[0], : w.shape[1]].set(w)
    amax = xp.abs(padded.reshape(rows, block, cols, block)).max(axis=(1, 3))
    scale = xp.where(amax > 0, amax / E4M3_MAX, 1.0).astype(xp.float32)
    wq = (w / expand_scales(scale, w.shape, block, xp)).astype(FP8_DTYPE)
    return wq, scale


# ---- Activation (and gradient) tiles: 1×128 along one axis, quantised on the fly (reference §6.2, §7). ----

def tile_scale_shape(shape: tuple[int, ...], axis: int, tile: int = 128) -> tuple[int, ...]:
    """The scale array's shape: `shape` with `axis` shrunk to ceil(n/tile)."""
    axis = axis % len(shape)
    return tuple(-(-n // tile) if i == axis else n for i, n in enumerate(shape))


def quantize_tiles(x: Any, axis: int = -1, tile: int = 128, power_of_two: bool = False) -> tuple[Any, Any]:
    """(E4M3 values shaped like x, float32 scales) with one scale per `tile` consecutive elements along `axis`.

    axis=-1 of a [M, K] activation is DeepSeek's 1×128 tile; axis=0 is the 128×1 re-tiling used for the
    weight gradient, where the contraction runs over tokens. S = amax/448 (power_of_two: rounded up to 2^k,
    the "ue8m0" format). Unlike OFF's `act_quant` there is no 1e-4 floor on amax: gradient tiles are often far
    smaller than that and the floor would flush them to E4M3 subnormals; an all-zero tile gets S = 1 instead.
    jax.numpy only (runs inside jit and custom_vjp rules).
    """
    axis = axis % x.ndim
    x = jnp.moveaxis(x.astype(jnp.float32), axis, -1)
    n = x.shape[-1]
    n_tiles = -(-n // tile)
    padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n_tiles * tile - n)])
    tiles = padded.reshape(*x.shape[:-1], n_tiles, tile)
    amax = jnp.abs(tiles).max(axis=-1)
    # Below the float32 normal range amax/448 would flush to zero and x/S would overflow.
    scale = jnp.where(amax >= jnp.finfo(jnp.float32).tiny * E4M3_MAX, amax / E4M3_MAX, 1.0)
    if power_of_two:
        scale = jnp.exp2(jnp.ceil(jnp.log2(scale)))
    q = jnp.clip(tiles / scale[..., None], -E4M3_MAX, E4M3_MAX).astype(FP8_DTYPE)
    q = q.reshape(*x.shape[:-1], n_tiles * tile)[..., :n]
    return jnp.moveaxis(q, -1, axis), jnp.moveaxis(scale.astype(jnp.float32), -1, axis)


def dequantize_tiles(q: Any, scale: Any, axis: int = -1, tile: int = 128) -> Any:
    """float32 values from E4M3 tiles and their scales (the inverse layout of `quantize_tiles`)."""
    axis = axis % q.ndim
    if scale.shape != tile_scale_shape(q.shape, axis, tile):
        raise ValueError(f"scales {tuple(scale.shape)} do not match values {tuple(q.shape)} in tiles of {tile} "
                         f"along axis {axis} (expected {tile_scale_shape(q.shape, axis, tile)})")
    full = jnp.repeat(scale.astype(jnp.float32), tile, axis=axis)
    full = jnp.take(full, jnp.arange(q.shape[axis]), axis=axis)
    return q.astype(jnp.float32) * full
