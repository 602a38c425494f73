"""FP8 block-scaled GEMM in interpret mode: parity with the reference GEMM, the documented error bound against the
unquantised product, and the FP8 dgrad/wgrad layouts of the custom_vjp (checked against independent formulas)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pallas_kernels.fp8_matmul import fp8_matmul, fp8_scaled_matmul
from pallas_kernels.fp8_matmul_ref import column_scales, fp8_matmul_ref, scaled_matmul_ref
from pallas_kernels.quant import dequantize_blocks, dequantize_tiles, quantize_blocks, quantize_tiles
from tests.pallas_kernels.helpers import jit

M, K, N = 70, 300, 200  # none a multiple of the 128 block: partial tiles on every axis
U = 2.0 ** -4  # E4M3 unit roundoff


def _operands(check, m=M, k=K, n=N):
    # Rows and 128-column groups at very different magnitudes, so a scale applied to the wrong tile shows.
    x = check.normal(m, k) * np.exp(check.rng.uniform(-4, 4, (m, 1))).astype(np.float32)
    w = check.normal(k, n) * np.exp(check.rng.uniform(-4, 4, (1, -(-n // 128)))).repeat(128, 1)[:, :n]
    return x, w.astype(np.float32)


@pytest.mark.parametrize("flavour,out_dtype,block_k", [("triton", jnp.float32, None), ("mosaic", jnp.float32, 128),
                                                       ("triton", jnp.bfloat16, None)])
def test_kernel_matches_the_block_scaled_reference(check, flavour, out_dtype, block_k):
    x, w = _operands(check)
    a_q, a_s = quantize_tiles(jnp.asarray(x), axis=1)
    w_q, w_s = quantize_blocks(jnp.asarray(w), xp=jnp)
    b_s = column_scales(w_s, N)
    y = jit(lambda *ops: fp8_scaled_matmul(*ops, out_dtype=out_dtype, interpret=True, flavour=flavour,
                                                block_k=block_k))(a_q, a_s, w_q, b_s)
    assert y.dtype == out_dtype and y.shape == (M, N)
    want = np.asarray(scaled_matmul_ref(a_q, a_s, w_q, b_s), np.float64)
    a = np.asarray(dequantize_tiles(a_q, a_s), np.float64)
    b = np.asarray(dequantize_blocks(w_q, w_s, xp=jnp), np.float64)
    # Only fp32 summation order separates kernel and reference (plus the final cast for bf16 outputs).
    slack = 1e-5 * (np.abs(a) @ np.abs(b)) + (2.0 ** -8 * np.abs(want) if out_dtype == jnp.bfloat16 else 0)
    got = np.asarray(y, np.float64)
    assert np.all(np.isfinite(got)), check.msg("unwritten (NaN-poisoned) output elements")
    worst = np.max(np.abs(got - want) - slack)
    assert worst <= 0, check.msg(f"{flavour}/{jnp.dtype(out_dtype).name}: exceeds fp32-order slack by {worst:.3g}")


def _bound(x, w, x_axis_scales, w_scales):
    """The elementwise |Ŷ − Y| bound of fp8_matmul_ref's docstring."""
    ex = U * np.abs(x) + 2.0 ** -10 * x_axis_scales
    ew = U * np.abs(w) + 2.0 ** -10 * w_scales
    return ex @ (np.abs(w) + ew) + np.abs(x) @ ew


def test_error_against_the_unquantised_product_is_within_the_documented_bound(check):
    x, w = _operands(check)
    y = jit(lambda a, b: fp8_matmul(a, b, out_dtype=jnp.float32, interpret=True))(jnp.asarray(x), jnp.asarray(w))
    y = np.asarray(y, np.float64)
    exact = x.astype(np.float64) @ w.astype(np.float64)
    _, sx = quantize_tiles(jnp.asarray(x), axis=1)
    _, sw = quantize_blocks(jnp.asarray(w), xp=jnp)
    sx_full = np.repeat(np.asarray(sx, np.float64), 128, 1)[:, :K]
    sw_full = np.repeat(np.repeat(np.asarray(sw, np.float64), 128, 0), 128, 1)[:K, :N]
    bound = _bound(x.astype(np.float64), w.astype(np.float64), sx_full, sw_full)
    excess = np.abs(y - exact) - bound * (1 + 1e-4) - 1e-6 * (np.abs(x) @ np.abs(w))
    assert np.max(excess) <= 0, check.msg(f"error exceeds the documented bound by {np.max(excess):.3g}")
    rel = np.linalg.norm(y - exact) / np.linalg.norm(exact)
    # The product really went through E4M3 (a high-precision path would be ~1e-7 off), and no worse than expected.
    assert 3e-3 < rel < 0.08, check.msg(f"relative Frobenius error {rel:.3g} outside the FP8 band")


def test_gradients_run_through_fp8_with_the_papers_layouts(check):
    x, w = _operands(check)
    dy = check.normal(M, N)

    @jit  # one compile for the forward and both backward GEMMs (eager interpret mode is much slower)
    def grads(a, b, g):
        return jax.vjp(lambda a, b: fp8_matmul(a, b, out_dtype=jnp.float32, interpret=True), a, b)[1](g)

    dx, dw = grads(jnp.asarray(x), jnp.asarray(w), jnp.asarray(dy))

    @jit
    def dequantised(x, w, dy):
        def deq(t, axis):
            return dequantize_tiles(*quantize_tiles(t, axis=axis), axis=axis)

        return dequantize_blocks(*quantize_blocks(w, xp=jnp), xp=jnp), deq(dy, 1), deq(x, 0), deq(dy, 0)

    w_hat, dy_rows, x_cols, dy_cols = (np.asarray(t, np.float64) for t in dequantised(x, w, dy))
    # dgrad: dY in 1×128 tiles along N (its contraction), W's 128×128 blocks transposed.
    want_dx = dy_rows @ w_hat.T
    # wgrad: X and dY both in 128×1 tiles along the token axis (the contraction).
    want_dw = x_cols.T @ dy_cols
    for got, want, mag, name in [(dx, want_dx, np.abs(dy_rows) @ np.abs(w_hat).T, "dgrad"),
                                 (dw, want_dw, np.abs(x_cols).T @ np.abs(dy_cols), "wgrad")]:
        got = np.asarray(got, np.float64)
        assert np.all(np.isfinite(got)), check.msg(f"{name}: non-finite")
        worst = np.max(np.abs(got - want) - 1e-5 * mag)
        assert worst <= 0, check.msg(f"{name}: differs from its FP8 formula by {worst:.3g} beyond fp32 order")
    # ...and they are not the high-precision gradients: the FP8 rounding is visible.
    exact_dw = x.astype(np.float64).T @ dy
    assert np.linalg.norm(np.asarray(dw) - exact_dw) / np.linalg.norm(exact_dw) > 3e-3, check.msg("wgrad not FP8")
    # The reference recipe agrees (the model's fallback trains the same way).
    ref_grads = jit(lambda a, b, g: jax.vjp(lambda a, b: fp8_matmul_ref(a, b, out_dtype=jnp.float32), a, b)[1](g))
    for got, ref, name in zip((dx, dw), ref_grads(jnp.asarray(x), jnp.asarray(w), jnp.asarray(dy)),
                              ("dgrad", "wgrad")):
        check.close(got, ref, 1e-5, f"{name} vs reference recipe")


def test_leading_dims_and_bf16_activations(check):
    x = jnp.asarray(check.normal(2, 3, 130)).astype(jnp.bfloat16)
    w = jnp.asarray(check.normal(130, 256, scale=0.1))
    y = jit(lambda a, b: fp8_matmul(a, b, interpret=True, flavour="mosaic"))(x, w)
    assert y.shape == (2, 3, 256) and y.dtype == jnp.bfloat16
    want = jit(fp8_matmul_ref)(x, w)
    check.close(y.astype(jnp.float32), want.astype(jnp.float32), 2e-2, "bf16 fp8_matmul")


def test_native_mode_on_cpu_is_refused_with_a_way_out():
    with pytest.raises(ValueError, match="interpret=True"):
        fp8_matmul(jnp.ones((4, 128)), jnp.ones((128, 128)))
