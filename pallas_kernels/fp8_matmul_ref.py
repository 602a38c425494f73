"""FP8 block-scaled matmul: the pure-jnp reference and the FP8 training recipe shared with the Pallas kernel.

The recipe (reference §7, DeepSeek-V3 §3.3) for Y = X·W with X [M, K] and W [K, N] (Eva stores kernels [in, out]):

- forward  Y  = Q(X, 1×128 along K) · Q(W, 128×128)
- dgrad    dX = Q(dY, 1×128 along N) · Q(W, 128×128)ᵀ          (the weight's blocks are transpose-invariant)
- wgrad    dW = Q(X, 128×1 along M)ᵀ · Q(dY, 128×1 along M)

Every GEMM's scales therefore sit on its contraction axis, which is what lets a kernel multiply each 128-long
partial product by one scale per row and one per column and accumulate it in fp32 (the "promotion every 128
elements" of §7). For wgrad the contraction runs over tokens, so both operands are re-tiled along M (the paper's
1×128 → 128×1 re-tiling). We re-quantise X from the high-precision residual instead of re-tiling the cached FP8
copy: it saves one double rounding, and a remat policy decides what stays in memory. All tensors use E4M3 (the
paper rejects E5M2 gradients; fine-grained scales supply the range). Quantisation is treated as the identity in
the backward pass (straight-through), as in DeepSeek's training.

Error against the unquantised product (documented bound, tested): with u = 2⁻⁴ (E4M3's unit roundoff) and
S the element's tile scale, every quantised element obeys |q̂ − q| ≤ u·|q| + 2⁻¹⁰·S (the second term covers
E4M3 subnormals, spacing 2⁻⁹·S), so elementwise
    |Ŷ − Y| ≤ (u|X| + 2⁻¹⁰S_X)·|Ŵ| + |X|·(u|W| + 2⁻¹⁰S_W), plus fp32 rounding.
In practice (random Gaussian data) the relative Frobenius error is ≈ 3–4 %.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from pallas_kernels.quant import FP8_DTYPE, quantize_blocks, quantize_tiles

TILE = 128


@runtime_checkable
class ScaledGemm(Protocol):
    """Y[m, n] = Σ_kb a_scale[m, kb]·b_scale[kb, n]·(a_q[m, kb-tile] · b_q[kb-tile, n]), fp32 accumulation."""

    def __call__(self, a_q: Array, a_scale: Array, b_q: Array, b_scale: Array, *, out_dtype: DTypeLike) -> Array:
        ...


def column_scales(block_scale: Float[Array, "Kb Nb"], n: int, block: int = TILE) -> Float[Array, "Kb N"]:
    """A 128×128 weight-block grid spread to one scale per (K tile, column): the operand layout of every GEMM."""
    return jnp.repeat(block_scale, block, axis=1)[:, :n]


def scaled_matmul_ref(a_q: Array, a_scale: Float[Array, "M Kb"], b_q: Array, b_scale: Float[Array, "Kb N"], *,
                      out_dtype: DTypeLike = jnp.float32) -> Array:
    """dequant(a_q, a_scale) · dequant(b_q, b_scale) in fp32 at highest precision (the reference GEMM).

    a_q [M, K] and b_q [K, N] are E4M3; a_scale has one scale per row per 128 of K, b_scale one per 128 of K
    per column. Equal to the kernel's per-tile promotion up to fp32 rounding order.
    """
    _check_operands(a_q, a_scale, b_q, b_scale)
    a = a_q.astype(jnp.float32) * jnp.repeat(a_scale, TILE, axis=1)[:, : a_q.shape[1]]
    b = b_q.astype(jnp.float32) * jnp.repeat(b_scale, TILE, axis=0)[: b_q.shape[0]]
    return jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST).astype(out_dtype)


def _check_operands(a_q: Array, a_scale: Array, b_q: Array, b_scale: Array) -> None:
    m, k = a_q.shape
    k2, n = b_q.shape
    kb = -(-k // TILE)
    if k != k2:
        raise ValueError(f"contraction sizes differ: a_q is {a_q.shape}, b_q is {b_q.shape}")
    if a_q.dtype != FP8_DTYPE or b_q.dtype != FP8_DTYPE:
        raise ValueError(f"operands must be float8_e4m3fn, got {a_q.dtype} and {b_q.dtype}")
    if a_scale.shape != (m, kb) or b_scale.shape != (kb, n):
        raise ValueError(f"scales {a_scale.shape} and {b_scale.shape} do not match a_q {a_q.shape} and b_q "
                         f"{b_q.shape} in 128-long tiles along K (expected {(m, kb)} and {(kb, n)})")


def fp8_linear(gemm: ScaledGemm) -> Callable[[Array, Array, jnp.dtype], Array]:
    """x [M, K] · w [K, N] through FP8 in forward, dgrad and wgrad, with `gemm` doing the three products."""

    def forward(x: Array, w: Array, out_dtype: DTypeLike) -> Array:
        x_q, x_s = quantize_tiles(x, axis=1)
        w_q, w_s = quantize_blocks(w, xp=jnp)
        return gemm(x_q, x_s, w_q, column_scales(w_s, w.shape[1]), out_dtype=out_dtype)

    @partial(jax.custom_vjp, nondiff_argnums=(2,))
    def matmul(x: Array, w: Array, out_dtype: DTypeLike) -> Array:
        return forward(x, w, out_dtype)

    def matmul_fwd(x: Array, w: Array, out_dtype: DTypeLike) -> tuple[Array, tuple[Array, Array]]:
        return forward(x, w, out_dtype), (x, w)

    def matmul_bwd(out_dtype: DTypeLike, res: tuple[Array, Array], dy: Array) -> tuple[Array, Array]:
        x, w = res
        # dgrad contracts over N: dY tiles run along N and the weight blocks are reused transposed.
        dy_q, dy_s = quantize_tiles(dy, axis=1)
        w_q, w_s = quantize_blocks(w, xp=jnp)
        dx = gemm(dy_q, dy_s, w_q.T, column_scales(w_s.T, w.shape[0]), out_dtype=x.dtype)
        # wgrad contracts over tokens: both operands are tiled 128×1 along M.
        xt_q, xt_s = quantize_tiles(x, axis=0)
        dyt_q, dyt_s = quantize_tiles(dy, axis=0)
        dw = gemm(xt_q.T, xt_s.T, dyt_q, dyt_s, out_dtype=w.dtype)
        return dx, dw

    matmul.defvjp(matmul_fwd, matmul_bwd)
    return matmul


_fp8_matmul_ref_2d = fp8_linear(scaled_matmul_ref)


def fp8_matmul_ref(x: Float[Array, "*B K"], w: Float[Array, "K N"], *,
                   out_dtype: DTypeLike | None = None) -> Float[Array, "*B N"]:
    """The FP8 recipe with the reference GEMM: the fallback for `fp8_matmul` and the kernel's test oracle."""
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    y = _fp8_matmul_ref_2d(x.reshape(-1, x.shape[-1]), w, out_dtype)
    return y.reshape(*x.shape[:-1], w.shape[1])
