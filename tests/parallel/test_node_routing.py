"""Node-limited routing (reference §4.3): no token uses more than M nodes; M ≥ nodes is plain routing; M = 4 on
V3's 8 nodes is exactly its group-limited routing."""


import jax
import numpy as np

import eva_jax
from eva_jax.nn.router import route


def _cfg(max_route_nodes=0):
    """The model, and the node limit (compute.max_route_nodes) validated against it."""
    cfg = eva_jax.load_config("v3_tiny", **{"model.n_routed_experts": 32, "model.n_group": 8,
                                            "model.topk_group": 8, "model.num_experts_per_tok": 6,
                                            "compute.max_route_nodes": max_route_nodes})
    return cfg.model, max_route_nodes


def _logits(n=512, e=32, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(keys[0], (n, e)) * 2.0, jax.random.normal(keys[1], (e,)) * 0.3


def nodes_used(experts, per_node):
    return np.array([len(set(row // per_node)) for row in np.asarray(experts)])


def test_no_token_uses_more_than_m_nodes():
    logits, bias = _logits()
    plain = route(logits, bias, *_cfg())
    assert nodes_used(plain.experts, 4).max() > 2  # without the limit tokens do spread wider
    for m in (2, 3):
        r = route(logits, bias, *_cfg(max_route_nodes=m))
        assert nodes_used(r.experts, 4).max() <= m
        assert len(np.unique(np.asarray(r.experts))) > 8  # still routes across the experts, not to a fixed few


def test_too_few_nodes_for_k_is_a_config_error():
    import pytest

    with pytest.raises(eva_jax.config.ConfigError, match="max_route_nodes=1 nodes of 4 experts"):
        _cfg(max_route_nodes=1)


def test_limit_at_or_above_node_count_is_plain_routing():
    logits, bias = _logits(seed=1)
    plain = route(logits, bias, *_cfg())
    for m in (8, 12):
        r = route(logits, bias, *_cfg(max_route_nodes=m))
        np.testing.assert_array_equal(np.sort(r.experts, -1), np.sort(plain.experts, -1))
        np.testing.assert_allclose(np.sort(r.weights, -1), np.sort(plain.weights, -1))


def test_nodes_chosen_by_sum_of_top_k_over_m_biased_scores():
    logits, bias = _logits(n=256, seed=2)
    cfg = _cfg(max_route_nodes=2)  # K/M = 3 experts score a node
    r = route(logits, bias, *cfg)
    choice = np.asarray(jax.nn.sigmoid(logits)) + np.asarray(bias)
    node_score = np.sort(choice.reshape(256, 8, 4), -1)[..., -3:].sum(-1)
    best = np.argsort(-node_score, -1)[:, :2]
    for row, experts in enumerate(np.asarray(r.experts)):
        assert set(experts // 4) <= set(best[row])


def test_v3_node_limit_matches_its_group_limit():
    cfg = eva_jax.load_config("v3_671b").model
    assert cfg.n_group == 8 and cfg.topk_group == 4
    logits, bias = _logits(n=64, e=256, seed=3)
    a = route(logits, bias, cfg, max_nodes=4)
    b = route(logits, bias, cfg)
    # Each token then spans at most 4 nodes of 32 experts.
    assert nodes_used(a.experts, 32).max() <= 4
    np.testing.assert_array_equal(a.experts, b.experts)
