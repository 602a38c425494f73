"""One train step on 8 simulated devices under five meshes equals the single-device step: loss, every gradient
(≤ 1e-5 relative, float32) and the router-bias update, on a 16-expert model with 2 MTP depths and packed
segments. The optimizer here keeps the raw gradients as its state (exact, unlike reading them back through
AdamW); that state lies like real optimizer state, ZeRO-1 split included."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import eva_jax
from eva_jax.parallel.mesh import make_mesh
from eva_jax.parallel.sharding import shard_batch
from eva_jax.train.state import init_state
from eva_jax.train.state_sharding import state_shardings
from eva_jax.train.step import make_train_step

SETS = {"train.batch_start": 16, "train.global_batch": 16, "train.micro_batch": 8, "model.num_layers": 2,
        "model.n_routed_experts": 16, "model.num_experts_per_tok": 4, "model.num_mtp_layers": 2,
        "model.remat_policy": "none"}  # remat is checked elsewhere (tests/nn); without it each mesh compiles faster
MESHES = {
    "data=8": {"mesh.data": 8},
    "fsdp=8": {"mesh.data": 1, "mesh.fsdp": 8, "mesh.rules": "fsdp"},
    "expert=8": {"mesh.data": 1, "mesh.expert": 8},
    "data=2xexpert=4": {"mesh.data": 2, "mesh.expert": 4},
    "data=2xfsdp=2xexpert=2": {"mesh.data": 2, "mesh.fsdp": 2, "mesh.expert": 2, "mesh.rules": "fsdp"},
}
# Compiling for 8 devices takes about a CPU-minute per mesh: the default run keeps the mesh that uses all three
# batch axes at once (expert all-to-all, FSDP gathers, data parallel); the others are marked slow.
DEFAULT = ("data=2xfsdp=2xexpert=2",)


def packed_batch() -> dict:
    """16 rows of 3 packed documents each, as data.isolate_documents=true produces, in 2 micro-batches."""
    rng = np.random.default_rng(0)
    t = 10
    toks = rng.integers(0, 256, (16, t + 1))
    lengths = [4, 3, 4]
    seg = np.repeat(np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)])[None], 16, 0)
    pos = np.repeat(np.concatenate([np.arange(n) for n in lengths])[None], 16, 0)
    full = {"inputs": toks[:, :-1], "targets": toks[:, 1:], "target_mask": np.ones((16, t), bool),
            "segment_ids": seg[:, :-1], "target_segment_ids": seg[:, 1:], "positions": pos[:, :-1]}
    return jax.tree_util.tree_map(lambda x: x.reshape(2, 8, *x.shape[1:]), full)


def keep_gradients() -> optax.GradientTransformation:
    return optax.GradientTransformation(lambda p: jax.tree_util.tree_map(jnp.zeros_like, p),
                                        lambda g, s, p=None: (jax.tree_util.tree_map(jnp.zeros_like, g), g))


def one_step(cfg, params, mesh):
    tx = keep_gradients()
    state, batch = init_state(jax.tree_util.tree_map(jnp.copy, params), tx), packed_batch()
    if mesh is not None:
        state = jax.device_put(state, state_shardings(cfg, mesh, tx)[0])
        batch = shard_batch(batch, mesh)
    state, metrics = make_train_step(cfg, tx, mesh)(state, batch, jnp.float32(0.3), jnp.float32(0.001))
    return jax.device_get((metrics, state.params, state.opt_state))


@pytest.fixture(scope="module")
def reference():
    cfg = eva_jax.load_config("v3_tiny", **SETS)
    params = eva_jax.init_params(cfg, seed=3)
    return cfg, params, one_step(cfg, params, None)


@pytest.mark.parametrize("name", [n if n in DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in MESHES])
def test_sharded_step_equals_single_device(reference, name):
    base, params, (ref_metrics, ref_params, ref_grads) = reference
    cfg = eva_jax.load_config("v3_tiny", **SETS, **MESHES[name])
    mesh = make_mesh(cfg.mesh)
    metrics, new_params, grads = one_step(cfg, params, mesh)
    for key in ("loss", "mtp_loss", "balance_loss", "grad_norm"):
        assert float(metrics[key]) == pytest.approx(float(ref_metrics[key]), rel=1e-5), key
    ref_flat = jax.tree_util.tree_flatten_with_path(ref_grads)[0]
    flat = jax.tree_util.tree_leaves(grads)
    assert len(flat) == len(ref_flat) > 20
    for (path, want), got in zip(ref_flat, flat):
        scale = float(np.abs(want).max())
        if "router_bias" in jax.tree_util.keystr(path):  # selection only: no gradient by design
            assert scale == 0 and float(np.abs(got).max()) == 0
            continue
        assert scale > 0, jax.tree_util.keystr(path)  # every gradient is live, so the comparison means something
        assert float(np.abs(np.asarray(got) - want).max()) <= 1e-5 * scale, jax.tree_util.keystr(path)
    # The bias update (sign of the global load) is exactly the single-device one, and it moved.
    for a, b in zip(jax.tree_util.tree_leaves(ref_params), jax.tree_util.tree_leaves(new_params)):
        np.testing.assert_array_equal(a, b)
    bias = np.asarray(new_params["moe_layers"]["moe"]["router_bias"])
    assert np.abs(bias).sum() > 0
