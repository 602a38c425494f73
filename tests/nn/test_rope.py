"""YaRN frequencies and scales against the reference's check values; rotation conventions."""

import math

import jax.numpy as jnp
import numpy as np

import eva_jax
from eva_jax.nn.rope import apply_rope, cos_sin_amplitude, inverse_frequencies, yarn_ramp_bounds


def test_v3_yarn_frequencies_match_reference_check_values():
    m = eva_jax.load_config("v3_671b").model
    assert yarn_ramp_bounds(64, m.rope_theta, m.rope_scaling) == (10, 23)
    w = inverse_frequencies(64, m.rope_theta, m.rope_scaling)
    expected = {0: 1.0, 9: 0.0749894, 10: 0.0562341, 11: 0.0390069, 16: 0.0055000, 22: 1.77828e-4,
                23: 3.33380e-5, 31: 3.33380e-6}
    for j, value in expected.items():
        assert math.isclose(w[j], value, rel_tol=2e-5), (j, w[j], value)
    assert math.isclose(w.sum(), 3.948936, rel_tol=1e-6)


def test_v3_softmax_scale_and_amplitude():
    m = eva_jax.load_config("v3_671b").model
    assert math.isclose(m.softmax_scale, 0.13523378, rel_tol=1e-7)
    assert cos_sin_amplitude(m.rope_scaling) == 1.0


def test_interleaved_rotation_is_adjacent_pair_complex_multiply():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 8)).astype(np.float32)
    theta = rng.normal(size=(3, 4)).astype(np.float32)
    ours = np.asarray(apply_rope(jnp.asarray(x), jnp.cos(theta), jnp.sin(theta), interleave=True))
    z = (x[:, 0::2] + 1j * x[:, 1::2]) * np.exp(1j * theta)
    np.testing.assert_allclose(ours, np.concatenate([z.real, z.imag], -1), atol=1e-6)  # de-interleaved layout


def test_rotation_preserves_relative_position_dot_products():
    rng = np.random.default_rng(1)
    q, k = (jnp.asarray(rng.normal(size=(8,)).astype(np.float32)) for _ in range(2))
    w = jnp.asarray(inverse_frequencies(8, 10000.0, None))
    for interleave in (True, False):
        def dot(pq, pk):
            rq = apply_rope(q, jnp.cos(pq * w), jnp.sin(pq * w), interleave)
            rk = apply_rope(k, jnp.cos(pk * w), jnp.sin(pk * w), interleave)
            return float(rq @ rk)
        assert math.isclose(dot(5.0, 2.0), dot(13.0, 10.0), rel_tol=1e-4)
