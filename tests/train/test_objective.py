"""The objective against hand computations from the public logits APIs; one step moves the loss down."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eva_jax
from eva_jax.config import OptimConfig
from eva_jax.train import schedules
from eva_jax.train.loss import objective
from eva_jax.train.optim import make_optimizer
from eva_jax.train.state import init_state
from eva_jax.train.step import make_train_step


def log_softmax_nll(logits, targets):
    logp = jax.nn.log_softmax(np.asarray(logits, np.float64), -1)
    return -np.take_along_axis(np.asarray(logp), targets[..., None], -1)[..., 0].mean()


@pytest.fixture(scope="module")
def setup():
    cfg = eva_jax.load_config("v3_tiny", **{"model.num_mtp_layers": 2, "model.num_layers": 2, "train.steps": 5,
                                            "train.micro_batch": 2, "train.batch_start": 2, "train.global_batch": 4})
    # DeepSeek's learning rates, not v3_tiny's 14x larger ones: Adam's step is ~lr per element, and the
    # accumulation check's atol=1e-6 is set against that step.
    cfg = dataclasses.replace(cfg, optim=OptimConfig())
    params = eva_jax.init_params(cfg, seed=4)
    tokens = np.random.default_rng(0).integers(0, 256, (2, 12))
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "target_mask": np.ones((2, 11), bool)}
    return cfg, params, tokens, batch


def test_loss_parts_equal_hand_computation(setup):
    cfg, params, tokens, batch = setup
    lam = 0.3
    total, aux = objective(params, batch, jnp.float32(lam), cfg)
    main = log_softmax_nll(eva_jax.logits(cfg, params, tokens[:, :-1]), tokens[:, 1:])
    mtp_out = eva_jax.mtp_logits(cfg, params, tokens[:, :-1])
    mtp = [log_softmax_nll(m, tokens[:, k + 1:]) for k, m in enumerate(mtp_out, 1)]
    assert float(aux["loss"]) == pytest.approx(main, rel=1e-5)
    assert float(aux["mtp_loss"]) == pytest.approx(np.mean(mtp), rel=1e-5)
    expected = main + lam * np.mean(mtp) + cfg.train.balance_alpha * float(aux["balance_loss"])
    assert float(total) == pytest.approx(expected, rel=1e-5)
    # One MoE layer and two MTP blocks, each contributing Σ f·P ≈ 1 for a near-uniform router.
    assert 2.0 < float(aux["balance_loss"]) < 4.5
    assert int(aux["expert_counts"]["moe_layers"].sum()) == 1 * 2 * 11 * cfg.model.num_experts_per_tok


def test_accumulated_step_equals_one_big_batch_and_learns(setup):
    cfg, params, tokens, _ = setup
    plan = schedules.plan(cfg)
    rng = np.random.default_rng(1)
    toks = rng.integers(0, 256, (4, 13))
    full = {"inputs": toks[:, :-1], "targets": toks[:, 1:], "target_mask": np.ones((4, 12), bool)}
    micro = jax.tree_util.tree_map(lambda x: x.reshape(2, 2, *x.shape[1:]), full)
    whole = jax.tree_util.tree_map(lambda x: x[None], full)
    results = []
    for batch in (micro, whole):
        tx = make_optimizer(cfg, plan.lr, params)
        step = make_train_step(cfg, tx)
        state = init_state(jax.tree_util.tree_map(jnp.copy, params), tx)
        state, m1 = step(state, batch, jnp.float32(0.3), jnp.float32(0.001))
        after_one = jax.device_get(state.params)  # the state is donated to the next call
        _, m2 = step(state, batch, jnp.float32(0.3), jnp.float32(0.001))
        results.append((m1, m2, after_one))
    (a1, a2, pa), (b1, b2, pb) = results
    assert float(a1["loss"]) == pytest.approx(float(b1["loss"]), rel=1e-5)
    assert float(a1["grad_norm"]) == pytest.approx(float(b1["grad_norm"]), rel=1e-4)
    for x, y in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    assert float(a2["loss"]) < float(a1["loss"])  # the same batch again: the step moved downhill
    bias = np.asarray(pa["moe_layers"]["moe"]["router_bias"])
    assert np.isin(np.abs(bias).round(6), np.float32([0.0, 0.001])).all()  # one sign step of γ per expert
    assert np.abs(bias).sum() > 0
