"""Activation tile quantisation (1×128 and 128×1) against an independent numpy computation."""

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from pallas_kernels import quant
from pallas_kernels.quant import E4M3_MAX, dequantize_blocks, quantize_blocks, tile_scale_shape
from tests.pallas_kernels.helpers import jit

# Jitted once per shape: eager mode would compile each of their dozen ops separately.
quantize_tiles = jit(quant.quantize_tiles, static_argnames=("axis", "tile", "power_of_two"))
dequantize_tiles = jit(quant.dequantize_tiles, static_argnames=("axis", "tile"))


@pytest.mark.parametrize("shape,axis", [((5, 300), -1), ((300, 7), 0), ((2, 3, 130), -1), ((4, 128), 1)])
def test_tile_scales_are_amax_over_448_and_values_round_to_nearest_e4m3(check, shape, axis):
    x = check.normal(*shape, scale=3.0)
    x[..., :1] = 0.0  # zeros must stay zeros
    q, s = quantize_tiles(jnp.asarray(x), axis=axis)
    ax = axis % x.ndim
    assert q.dtype == ml_dtypes.float8_e4m3fn and s.dtype == np.float32
    assert s.shape == tile_scale_shape(shape, ax)
    n = shape[ax]
    moved = np.moveaxis(x, ax, -1)
    want_s = np.stack([np.abs(moved[..., i:i + 128]).max(-1) / E4M3_MAX for i in range(0, n, 128)], -1)
    want_s = np.where(want_s > 0, want_s, 1.0)  # an all-zero tile (axis=0 here) gets S = 1
    np.testing.assert_allclose(np.moveaxis(np.asarray(s), ax, -1), want_s, rtol=1e-6, err_msg=check.msg("scales"))
    full = np.moveaxis(np.repeat(np.moveaxis(want_s, -1, 0), 128, axis=0)[:n], 0, -1)
    want_q = (moved / full).astype(ml_dtypes.float8_e4m3fn)
    np.testing.assert_array_equal(np.moveaxis(np.asarray(q), ax, -1).astype(np.float32), want_q.astype(np.float32),
                                  err_msg=check.msg("E4M3 values"))
    back = np.asarray(dequantize_tiles(q, s, axis=axis))
    # Round-to-nearest E4M3: |error| ≤ 2⁻⁴·|x| for normals, ≤ 2⁻¹⁰·S in the subnormal range.
    s_full = np.moveaxis(full, -1, ax)
    assert np.all(np.abs(back - x) <= 2.0 ** -4 * np.abs(x) + 2.0 ** -10 * s_full * 1.0001), check.msg("round trip")


def test_zero_tiles_get_unit_scale_and_power_of_two_scales_round_up(check):
    x = check.normal(3, 256)
    x[1, 128:] = 0.0
    q, s = quantize_tiles(jnp.asarray(x))
    assert float(s[1, 1]) == 1.0 and not np.any(np.asarray(q[1, 128:], np.float32))
    q2, s2 = quantize_tiles(jnp.asarray(x), power_of_two=True)
    s2 = np.asarray(s2)
    assert np.all(np.log2(s2) == np.round(np.log2(s2))), check.msg("ue8m0 scales are powers of two")
    assert np.all(s2 >= np.asarray(s)) and np.all(s2 < 2 * np.asarray(s)), check.msg("rounded up by < 2×")
    assert np.all(np.abs(np.asarray(q2, np.float32)) <= E4M3_MAX)


def test_block_helpers_still_work_on_kernel_layout_weights(check):
    w = check.normal(300, 200)  # Eva's [in, out]; block quantisation is layout-agnostic
    wq, sw = quantize_blocks(jnp.asarray(w), xp=jnp)
    assert sw.shape == (3, 2)
    np.testing.assert_allclose(np.asarray(dequantize_blocks(wq, sw, xp=jnp)), w, rtol=2 ** -4, atol=1e-2,
                               err_msg=check.msg("block round trip"))


def test_mismatched_scales_are_refused():
    q, s = quantize_tiles(jnp.ones((4, 300)))
    with pytest.raises(ValueError, match="do not match"):
        quant.dequantize_tiles(q, s[:, :2])
