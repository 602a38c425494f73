"""Pallas FP8 block-scaled GEMM (DeepGEMM's scheme) and the trainable `fp8_matmul` built on it.

Per 128-long K tile the kernel takes an E4M3×E4M3 product with fp32 accumulation, multiplies it by one scale per
row of A and one per column of B, and adds it to an fp32 accumulator: the promotion every N_C = 128 elements of
reference §7, so tensor-core accumulation never runs over more than 128 products.

Two lowering styles share the tile loop (`_accumulate_tiles`):
- "triton" (GPU): grid over output tiles; each program walks all of K in a loop (Triton programs are independent,
  so the K reduction cannot ride on the grid). FP8 operands go to the tensor cores as they are (sm_89+).
- "mosaic" (TPU): grid (M, N, K) with K innermost and the accumulator in VMEM scratch, so only one K slab of A and
  B is resident at a time. E4M3 is widened to bf16 in-kernel (exact: 3 mantissa bits fit in bf16's 7), since
  only the newest TPUs multiply FP8 natively; HBM traffic stays at one byte per element.
Shapes use the GEMM convention Y[M, N] = A[M, K]·B[K, N] (here K is the contraction, not the model legend's
experts per token; Kb = ceil(K/128) tiles). Edge blocks are zero-padded in the wrapper (zeros add nothing to any
tile's product) and outputs sliced back. Both styles run on CPU in interpret mode, which is how the tests run them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton
from jax.typing import DTypeLike
from jaxtyping import Array, Float

from pallas_kernels.backend import Flavour, kernel_mode
from pallas_kernels.fp8_matmul_ref import TILE, _check_operands, fp8_linear
from pallas_kernels.quant import FP8_DTYPE


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


def _pad_to(x: Array, shape: tuple[int, ...], value: float = 0) -> Array:
    if tuple(x.shape) == shape:
        return x
    return jnp.pad(x, [(0, s - n) for n, s in zip(x.shape, shape)], constant_values=value)


def _accumulate_tiles(a_ref, sa_ref, b_ref, sb_ref, acc: Array, n_tiles: int, *, widen: bool, static: bool) -> Array:
    """acc + Σ_j sa[:, j]·sb[j, :]·(a[:, tile j] · b[tile j, :]) over the K tiles resident in the refs."""

    def tile(j, acc):
        cols = pl.ds(pl.multiple_of(j * TILE, TILE), TILE)
        a, b = a_ref[:, cols], b_ref[cols, :]
        if widen:
            a, b = a.astype(jnp.bfloat16), b.astype(jnp.bfloat16)
        part = jnp.dot(a, b, preferred_element_type=jnp.float32)
        return acc + part * sa_ref[:, pl.ds(j, 1)] * sb_ref[pl.ds(j, 1), :]

    if static:
        for j in range(n_tiles):
            acc = tile(j, acc)
        return acc
    return lax.fori_loop(0, n_tiles, tile, acc)


def _triton_kernel(a_ref, sa_ref, b_ref, sb_ref, o_ref, *, n_tiles: int):
    acc = jnp.zeros(o_ref.shape, jnp.float32)
    acc = _accumulate_tiles(a_ref, sa_ref, b_ref, sb_ref, acc, n_tiles, widen=False, static=False)
    o_ref[...] = acc.astype(o_ref.dtype)


def _mosaic_kernel(a_ref, sa_ref, b_ref, sb_ref, o_ref, acc_ref, *, n_tiles: int):
    k = pl.program_id(2)

    @pl.when(k == 0)
    def _():
        acc_ref[...] = jnp.zeros(acc_ref.shape, jnp.float32)

    acc_ref[...] = _accumulate_tiles(a_ref, sa_ref, b_ref, sb_ref, acc_ref[...], n_tiles, widen=True, static=True)

    @pl.when(k == pl.num_programs(2) - 1)
    def _():
        o_ref[...] = acc_ref[...].astype(o_ref.dtype)


def _blocks(m: int, n: int, flavour: Flavour, block_m: int | None, block_n: int | None,
            block_k: int | None) -> tuple[int, int, int]:
    if flavour == "triton":
        # Triton tiles must be powers of two; 16 is the smallest M a tensor-core dot takes.
        bm = block_m or min(128, max(16, pl.next_power_of_2(m)))
        bn = block_n or 128
        return bm, bn, 0
    # Mosaic: FP8 arrays tile as (32, 128) in VMEM, so M blocks are multiples of 32.
    bm = block_m or min(256, _round_up(m, 32))
    bn = block_n or (256 if n >= 256 else 128)
    return bm, bn, block_k or 512


def fp8_scaled_matmul(a_q: Array, a_scale: Float[Array, "M Kb"], b_q: Array, b_scale: Float[Array, "Kb N"], *,
                      out_dtype: DTypeLike = jnp.bfloat16, interpret: bool | None = None,
                      flavour: Flavour | None = None, block_m: int | None = None, block_n: int | None = None,
                      block_k: int | None = None, num_warps: int = 8, num_stages: int = 3) -> Array:
    """Y [M, N] = Σ_kb a_scale[:, kb]·b_scale[kb, :]·(a_q · b_q over K tile kb), from pre-quantised operands.

    a_q [M, K] and b_q [K, N] are float8_e4m3fn; a_scale [M, ceil(K/128)] holds one fp32 scale per row per K tile
    and b_scale [ceil(K/128), N] one per K tile per column (see `column_scales` for 128×128 weight blocks).
    flavour "triton" (GPU) or "mosaic" (TPU); block_k (Mosaic only) must be a multiple of 128.
    """
    _check_operands(a_q, a_scale, b_q, b_scale)
    interpret, flavour = kernel_mode("fp8_matmul", interpret, flavour)
    (m, k), n = a_q.shape, b_q.shape[1]
    bm, bn, bk = _blocks(m, n, flavour, block_m, block_n, block_k)
    if flavour == "mosaic" and bk % TILE:
        raise ValueError(f"block_k={bk} must be a multiple of {TILE}")
    mp, np_ = _round_up(m, bm), _round_up(n, bn)
    kp = _round_up(k, bk if flavour == "mosaic" else TILE)
    kb = kp // TILE
    a_q = _pad_to(a_q, (mp, kp))
    b_q = _pad_to(b_q, (kp, np_))
    # Padded scales are 1 so no inf·0 can appear; their tiles are all zeros anyway.
    a_scale = _pad_to(a_scale.astype(jnp.float32), (mp, kb), 1.0)
    b_scale = _pad_to(b_scale.astype(jnp.float32), (kb, np_), 1.0)
    out_shape = jax.ShapeDtypeStruct((mp, np_), out_dtype)

    if flavour == "triton":
        y = pl.pallas_call(
            functools.partial(_triton_kernel, n_tiles=kb),
            grid=(mp // bm, np_ // bn),
            in_specs=[pl.BlockSpec((bm, kp), lambda i, j: (i, 0)),
                      pl.BlockSpec((bm, kb), lambda i, j: (i, 0)),
                      pl.BlockSpec((kp, bn), lambda i, j: (0, j)),
                      pl.BlockSpec((kb, bn), lambda i, j: (0, j))],
            out_specs=pl.BlockSpec((bm, bn), lambda i, j: (i, j)),
            out_shape=out_shape, interpret=interpret, name="fp8_scaled_matmul",
            compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
        )(a_q, a_scale, b_q, b_scale)
    else:
        kt = bk // TILE  # K tiles per grid step
        # Scales regrouped so each grid step's block is a full trailing dim (Mosaic's (8, 128) block rule).
        sa3 = a_scale.reshape(mp, kp // bk, kt).transpose(1, 0, 2)  # [K steps, M, kt]
        sb3 = b_scale.reshape(kp // bk, kt, np_)  # [K steps, kt, N]
        y = pl.pallas_call(
            functools.partial(_mosaic_kernel, n_tiles=kt),
            grid=(mp // bm, np_ // bn, kp // bk),
            in_specs=[pl.BlockSpec((bm, bk), lambda i, j, s: (i, s)),
                      pl.BlockSpec((None, bm, kt), lambda i, j, s: (s, i, 0)),
                      pl.BlockSpec((bk, bn), lambda i, j, s: (s, j)),
                      pl.BlockSpec((None, kt, bn), lambda i, j, s: (s, 0, j))],
            out_specs=pl.BlockSpec((bm, bn), lambda i, j, s: (i, j)),
            scratch_shapes=[pltpu.VMEM((bm, bn), jnp.float32)],
            out_shape=out_shape, interpret=interpret, name="fp8_scaled_matmul",
            compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary")),
        )(a_q, sa3, b_q, sb3)
    return y[:m, :n]


@functools.lru_cache(maxsize=None)
def _trainable(interpret: bool, flavour: Flavour):
    return fp8_linear(functools.partial(fp8_scaled_matmul, interpret=interpret, flavour=flavour))


def fp8_matmul(x: Float[Array, "*B K"], w: Float[Array, "K N"], *, out_dtype: DTypeLike | None = None,
               interpret: bool | None = None, flavour: Flavour | None = None) -> Float[Array, "*B N"]:
    """x · w through the FP8 recipe (1×128 activation tiles, 128×128 weight blocks, E4M3, fp32 promotion).

    Differentiable: dgrad and wgrad also run through this kernel in FP8 (layouts in `fp8_matmul_ref`).
    x is high precision [..., K], w is [K, N] (Eva's [in, out]); quantisation happens inside. out_dtype defaults
    to x's dtype. interpret=None compiles natively and fails clearly where that is impossible (CPU).
    """
    if w.ndim != 2 or x.shape[-1] != w.shape[0]:
        raise ValueError(f"fp8_matmul needs x [..., K] and w [K, N]; got {x.shape} and {w.shape}")
    interpret, flavour = kernel_mode("fp8_matmul", interpret, flavour)
    out_dtype = jnp.dtype(out_dtype or x.dtype)
    y = _trainable(interpret, flavour)(x.reshape(-1, x.shape[-1]), w, out_dtype)
    return y.reshape(*x.shape[:-1], w.shape[1])


__all__ = ["fp8_matmul", "fp8_scaled_matmul", "FP8_DTYPE"]
