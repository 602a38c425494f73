"""Config switches that bring the Pallas kernels into the model (interpret mode on CPU)."""


import jax
import numpy as np
import pytest

import eva_jax
from eva_jax.overrides import apply_overrides


@pytest.fixture(scope="module")
def setup():
    cfg = eva_jax.load_config("v3_tiny", **{"model.num_layers": 2})
    return cfg, eva_jax.init_params(cfg, seed=5), np.random.default_rng(0).integers(0, 256, (2, 11))


def test_pallas_attention_logits_equal_xla(setup):
    cfg, params, tokens = setup
    pallas = apply_overrides(cfg, {"compute.attention_impl": "pallas", "compute.kernel_interpret": True})
    want = np.asarray(eva_jax.logits(cfg, params, tokens))
    got = np.asarray(eva_jax.logits(pallas, params, tokens))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    mtp_want, mtp_got = eva_jax.mtp_logits(cfg, params, tokens), eva_jax.mtp_logits(pallas, params, tokens)
    np.testing.assert_allclose(mtp_got[0], mtp_want[0], rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_requesting_pallas_on_cpu_without_interpret_is_a_clear_error(setup):
    cfg, params, tokens = setup
    pallas = apply_overrides(cfg, {"compute.attention_impl": "pallas"})
    with pytest.raises(ValueError, match="compute.attention_impl='pallas' needs a GPU or TPU, or interpret mode"):
        eva_jax.logits(pallas, params, tokens)


def test_fp8_matmul_switch_stays_close_and_trains(setup):
    cfg, params, tokens = setup
    fp8 = apply_overrides(cfg, {"model.matmul": "fp8"})  # the alias of compute.matmul
    want, got = np.asarray(eva_jax.logits(cfg, params, tokens)), np.asarray(eva_jax.logits(fp8, params, tokens))
    assert not np.array_equal(got, want)  # the quantised path really ran
    assert np.abs(got - want).max() < 0.1 * np.abs(want).max()
    grads = jax.grad(lambda p: eva_jax.logits(fp8, p, tokens).std())(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))
