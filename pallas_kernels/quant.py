"""FP8 (E4M3) block quantisation, DeepSeek's format (reference §6.2): W ≈ float32(Wq) · S[i//b, j//b].

`S` ("weight_scale_inv") is multiplied on dequantisation. Edge blocks are partial: the scale grid is
ceil(out/b) × ceil(in/b) and indexing is by floor division, so 576 rows (4.5 blocks) work.
These work on numpy and jax.numpy arrays alike (the `xp` argument).
"""

from __future__ import annotations

from typing import Any

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
