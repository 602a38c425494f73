"""The decode-time MoE layouts (gathered experts, dense over experts, grouped) against the training MoE."""

import jax
import numpy as np
import pytest

from eva_jax.infer import decode
from eva_jax.nn.moe import MoE


@pytest.mark.parametrize("tokens,layout", [(1, "gather"), (4, "dense"), (64, "grouped")])
def test_every_moe_layout_equals_the_training_moe(main_model, tokens, layout):
    cfg, params = main_model
    mc = cfg.model
    e, k = mc.n_routed_experts, mc.num_experts_per_tok
    expected = {"gather": 2 * tokens * k <= e, "dense": e < 2 * tokens * k <= decode.DENSE_PAIRS * e,
                "grouped": tokens * k > decode.DENSE_PAIRS * e}
    assert expected[layout]
    p = jax.tree.map(lambda a: a[0], params["moe_layers"]["moe"])
    x = np.random.default_rng(tokens).standard_normal((1, tokens, mc.hidden_size)).astype(np.float32)
    ours = jax.jit(lambda p, x: decode.moe(mc, p, x))(p, x)
    theirs, _ = jax.jit(MoE(mc).apply)({"params": p}, x)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=1e-5, atol=1e-5)
