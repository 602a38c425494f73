"""Router invariants: group limits, normalisation, bias steering selection only, softmax/greedy forms."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eva_jax
from eva_jax.nn.router import expert_counts, route, sequence_balance_loss


def routed(cfg_overrides=None, bias_scale=0.3, n=64, seed=0):
    m = eva_jax.load_config("v3_tiny", **(cfg_overrides or {})).model
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    logits = jax.random.normal(k1, (n, m.n_routed_experts))
    bias = bias_scale * jax.random.normal(k2, (m.n_routed_experts,)) if m.uses_routing_bias else None
    return m, logits, bias, route(logits, bias, m)


def test_experts_only_from_selected_groups():
    m, logits, bias, r = routed({"model.n_routed_experts": 16, "model.n_group": 4, "model.topk_group": 2,
                                 "model.num_experts_per_tok": 3})
    groups = np.asarray(r.experts) // (m.n_routed_experts // m.n_group)
    assert max(len(set(row)) for row in groups) <= m.topk_group
    # The kept groups are those with the best top-2 sums of the *biased* scores.
    sb = np.asarray(jax.nn.sigmoid(logits) + bias).reshape(-1, 4, 4)
    best = np.argsort(-np.sort(sb, -1)[..., -2:].sum(-1), -1)[:, :2]
    for row, keep in zip(groups, best):
        assert set(row) <= set(keep)


def test_weights_normalised_to_scaling_factor_and_from_unbiased_scores():
    m, logits, bias, r = routed()
    np.testing.assert_allclose(np.asarray(r.weights).sum(-1), m.routed_scaling_factor, rtol=1e-6)
    s = np.asarray(jax.nn.sigmoid(logits))
    picked = np.take_along_axis(s, np.asarray(r.experts), -1)
    np.testing.assert_allclose(np.asarray(r.weights), picked / picked.sum(-1, keepdims=True) * 2.5, rtol=1e-6)


def test_bias_changes_selection_but_not_the_weight_formula():
    m, logits, _, _ = routed()
    bias = jnp.zeros(m.n_routed_experts).at[3].set(10.0)
    r = route(logits, bias, m)
    assert (np.asarray(r.experts) == 3).any(axis=1).all()  # a huge bias forces expert 3 in
    grads = jax.grad(lambda b: route(logits, b, m).weights.sum())(bias)
    assert not np.asarray(grads).any()  # selection only: no gradient reaches the bias


def test_unnormalised_and_softmax_greedy_forms():
    m, logits, _, r = routed({"model.norm_topk_prob": False})
    picked = np.take_along_axis(np.asarray(jax.nn.sigmoid(logits)), np.asarray(r.experts), -1)
    np.testing.assert_allclose(np.asarray(r.weights), picked * m.routed_scaling_factor, rtol=1e-6)
    m2 = dataclasses.replace(m, scoring_func="softmax", topk_method="greedy", routed_scaling_factor=1.0)
    r2 = route(logits, None, m2)
    top = np.sort(np.asarray(jax.nn.softmax(logits)), -1)[:, -m2.num_experts_per_tok:]
    np.testing.assert_allclose(np.sort(np.asarray(r2.weights), -1), top, rtol=1e-6)


def test_expert_counts_and_balance_loss_by_hand():
    experts = jnp.array([[0, 1], [1, 2], [1, 3]])
    np.testing.assert_array_equal(expert_counts(experts, 4), [1, 3, 1, 1])
    scores = jnp.array([[[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]]])
    # f_i = E/(K·T)·count_i = 4/6·[1,3,1,1]; P_i = mean_t of normalised scores.
    f = np.array([1, 3, 1, 1]) * 4 / 6
    p = np.asarray(scores[0] / scores[0].sum(-1, keepdims=True)).mean(0)
    assert float(sequence_balance_loss(scores, experts[None])) == pytest.approx(float((f * p).sum()), rel=1e-6)
