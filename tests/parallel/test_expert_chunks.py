"""compute.moe_chunk_tokens: expert-parallel dispatch in blocks of tokens equals the single-device routed
experts, values and gradients, for every grouped-matmul layout (8 simulated devices, data=2 × expert=4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eva_jax
from eva_jax.nn.moe import local_experts, routed_experts
from eva_jax.nn.router import Routing
from eva_jax.parallel.experts import routed_experts_ep
from eva_jax.parallel.mesh import make_mesh

E, D, F, K = 16, 16, 8, 4


# 6 tokens per device: blocks of 3 and 2 divide them, 4 leaves a padded partial block.
@pytest.mark.parametrize("impl, chunk", [("tiled", 0), ("tiled", 3), ("padded", 2), ("ragged", 3), ("tiled", 4)])
def test_chunked_expert_parallel_equals_one_device(impl, chunk):
    cfg = eva_jax.load_config("v3_tiny", **{"mesh.data": 2, "mesh.expert": 4, "model.n_routed_experts": E})
    mesh = make_mesh(cfg.mesh)
    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    x = jax.random.normal(keys[0], (8, 6, D))
    experts = jnp.argsort(jax.random.normal(keys[1], (8, 6, E)), -1)[..., :K].astype(jnp.int32)
    weights = jax.random.uniform(keys[2], (8, 6, K))
    ws = tuple(jax.random.normal(k, s) / 4 for k, s in zip(keys[3:], [(E, D, F), (E, D, F), (E, F, D)]))

    def sharded(x, ws):
        return (routed_experts_ep(x, experts, weights, *ws, local_experts(impl), mesh, chunk) ** 2).sum()

    def single(x, ws):
        routing = Routing(weights.reshape(-1, K), experts.reshape(-1, K), None)
        return (routed_experts(x.reshape(-1, D), routing, *ws, "padded", layout="grouped") ** 2).sum()

    got = jax.jit(jax.value_and_grad(sharded, argnums=(0, 1)))(x, ws)
    want = jax.value_and_grad(single, argnums=(0, 1))(x, ws)
    assert float(got[0]) == pytest.approx(float(want[0]), rel=1e-5)
    for a, w in zip(jax.tree_util.tree_leaves(got[1]), jax.tree_util.tree_leaves(want[1])):
        np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-5)
