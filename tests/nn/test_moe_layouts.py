"""The MoE's size-chosen layouts (gathered experts, dense over experts, grouped) are the same function, and
the module picks each at the sizes it is meant for."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eva_jax
from eva_jax.nn import moe
from eva_jax.nn.router import route


@pytest.mark.parametrize("tokens,layout", [(1, "gather"), (4, "dense"), (64, "grouped")])
def test_every_moe_layout_equals_the_grouped_one(tokens, layout):
    mc = eva_jax.load_config("v3_tiny").model
    e, k, d, f = mc.n_routed_experts, mc.num_experts_per_tok, mc.hidden_size, mc.moe_intermediate_size
    assert moe.choose_layout(tokens, k, e, "auto") == layout
    rng = np.random.default_rng(tokens)
    x = rng.standard_normal((tokens, d)).astype(np.float32)
    routing = route(jnp.asarray(rng.standard_normal((tokens, e)), jnp.float32), None, mc)
    ws = [0.1 * rng.standard_normal(s).astype(np.float32) for s in ((e, d, f), (e, d, f), (e, f, d))]
    run = jax.jit(moe.routed_experts, static_argnames=("impl", "layout"))
    ours = run(x, routing, *ws, impl="auto", layout=layout)
    grouped = run(x, routing, *ws, impl="auto", layout="grouped")
    np.testing.assert_allclose(np.asarray(ours), np.asarray(grouped), rtol=1e-5, atol=1e-5)
