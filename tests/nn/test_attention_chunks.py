"""compute.attention_chunk: the XLA attention over query blocks equals the whole-sequence form, values and
gradients, with and without packed segments (the memory bound of the 671B dry run relies on it)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eva_jax
from eva_jax.nn.attention import causal_attention


@pytest.mark.parametrize("packed", [False, True])
def test_query_blocks_equal_whole_sequence(packed):
    tiny = eva_jax.load_config("v3_tiny")
    cfg, compute = tiny.model, tiny.compute
    b, t, h, n, r, v = 2, 16, 3, 8, 4, 8
    keys = jax.random.split(jax.random.PRNGKey(1), 5)
    args = [jax.random.normal(keys[0], (b, t, h, n)), jax.random.normal(keys[1], (b, t, h, r)),
            jax.random.normal(keys[2], (b, t, h, n)), jax.random.normal(keys[3], (b, t, r)),
            jax.random.normal(keys[4], (b, t, h, v))]
    segments = jnp.asarray(np.repeat([[1] * 5 + [2] * 7 + [3] * 4], b, 0)) if packed else None

    def loss(c, *a):
        return (causal_attention(cfg, c, *a, segments) ** 2).sum()

    grad = jax.value_and_grad(loss, argnums=(1, 2, 3, 4, 5))
    want_loss, want = grad(compute, *args)
    got_loss, got = grad(dataclasses.replace(compute, attention_chunk=4), *args)
    assert float(got_loss) == pytest.approx(float(want_loss), rel=1e-6)
    for a, w in zip(got, want):
        np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-5)
    # A chunk that does not divide the sequence (the MTP modules see T − k tokens): a padded last block.
    odd_loss, odd = grad(dataclasses.replace(compute, attention_chunk=5), *args)
    assert float(odd_loss) == pytest.approx(float(want_loss), rel=1e-6)
    for a, w in zip(odd, want):
        np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-5)
