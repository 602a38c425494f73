"""Whole-model invariants: shapes and dtypes, causality by gradients (main and every MTP depth), jit == no-jit,
layouts agree, bad token ids are named."""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eva_jax
from eva_jax.nn.model import Transformer
from eva_jax.overrides import apply_overrides

T = 9
V = eva_jax.load_config("v3_tiny").model.vocab_size


@pytest.fixture(scope="module")
def mtp2():
    cfg = eva_jax.load_config("v3_tiny", **{"model.num_mtp_layers": 2})
    return cfg, eva_jax.init_params(cfg, seed=1)


def tokens(vocab, b=2, t=T, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (b, t))


def test_shapes_and_dtypes(mtp2):
    cfg, params = mtp2
    toks = tokens(cfg.model.vocab_size)
    out = eva_jax.logits(cfg, params, toks)
    assert out.shape == (2, T, cfg.model.vocab_size) and out.dtype == jnp.float32
    mtp = eva_jax.mtp_logits(cfg, params, toks)
    assert [m.shape for m in mtp] == [(2, T - 1, V), (2, T - 2, V)]
    assert all(m.dtype == jnp.float32 for m in mtp)
    assert all(np.isfinite(np.asarray(m)).all() for m in [out, *mtp])


def test_bfloat16_compute_returns_float32_logits_close_to_float32(mtp2):
    cfg, params = mtp2
    bf16 = apply_overrides(cfg, {"compute.dtype": "bfloat16"})
    toks = tokens(V)
    hi, lo = eva_jax.logits(cfg, params, toks), eva_jax.logits(bf16, params, toks)
    assert lo.dtype == jnp.float32
    assert np.abs(np.asarray(hi - lo)).max() < 0.05 * np.abs(np.asarray(hi)).max()


@pytest.fixture(scope="module")
def embedding_grads(mtp2):
    """grad of Σ output[:, position] w.r.t. every embedded input, for a traced (output, position): one compile."""
    cfg, params = mtp2
    toks = jnp.asarray(tokens(V))
    model = Transformer(cfg.model, cfg.compute)
    _, zeros = model.apply({"params": params}, toks, mutable=["perturbations"])

    @jax.jit
    def grads(which, position):
        def f(perturbations):
            out = model.apply({"params": params, **perturbations}, toks)
            picked = [out["logits"], *out["mtp_logits"]]
            return jax.lax.switch(which, [lambda p=p: p[:, position].sum() for p in picked])
        return jax.grad(f)(zeros)["perturbations"]

    def absolute(which, position):
        return {k: np.abs(np.asarray(v)).sum(-1) for k, v in grads(which, position).items()}

    return absolute


@pytest.mark.parametrize("position", [0, 4, T - 1])
def test_main_model_is_causal(embedding_grads, position):
    g = embedding_grads(0, position)["embed_main"]
    assert not g[:, position + 1:].any()
    assert g[:, : position + 1].all()


@pytest.mark.parametrize("depth", [1, 2])
def test_every_mtp_depth_is_causal(embedding_grads, depth):
    """Depth k at position i may use tokens ≤ i+k only, and does use token i+k."""
    i = 3
    grads = embedding_grads(depth, i)
    main = grads["embed_main"]
    assert not main[:, i + 1:].any() and main[:, : i + 1].all()
    for j in range(1, depth + 1):  # depth j embeds token p + j at its position p
        g = grads[f"embed_mtp_{j}"]
        assert not g[:, i + 1:].any() and g[:, i].all()


def test_jit_and_no_jit_agree(tiny_cfg, tiny_params):
    toks = jnp.asarray(tokens(V, b=1, t=5))
    model = Transformer(tiny_cfg.model, tiny_cfg.compute)
    with jax.disable_jit():
        eager = model.apply({"params": tiny_params}, toks)["logits"]
    jitted = eva_jax.logits(tiny_cfg, tiny_params, toks)
    np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-5)


def test_moe_layouts_give_the_same_model(tiny_cfg, tiny_params):
    toks = tokens(V, seed=3)
    outs = [eva_jax.logits(apply_overrides(tiny_cfg, {"compute.moe_impl": impl}), tiny_params, toks)
            for impl in ("ragged", "padded")]
    np.testing.assert_allclose(*outs, rtol=1e-5, atol=1e-5)


def test_remat_policies_do_not_change_values_or_grads(tiny_cfg, tiny_params):
    toks = jnp.asarray(tokens(V, b=1, t=6, seed=4))

    def loss(params, policy):
        return eva_jax.logits(apply_overrides(tiny_cfg, {"compute.remat_policy": policy}), params, toks).std()

    base = jax.grad(loss)(tiny_params, "none")
    for policy in ("full",):
        other = jax.grad(loss)(tiny_params, policy)
        for a, b in zip(jax.tree_util.tree_leaves(base), jax.tree_util.tree_leaves(other)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("bad, message", [
    (np.array([[1, 2, V]]), f"token id {V} is outside the vocabulary [0, {V})"),
    (np.array([[-1, 2]]), "token id -1 is outside the vocabulary"),
    (np.array([1, 2, 3]), "2-D [batch, time]"),
    (np.array([[0.5, 1.0]]), "integer ids"),
])
def test_bad_tokens_are_named(tiny_cfg, tiny_params, bad, message):
    with pytest.raises(ValueError) as err:
        eva_jax.logits(tiny_cfg, tiny_params, bad)
    assert message in str(err.value)


def test_params_carry_logical_axes_on_every_leaf(tiny_cfg):
    specs = jax.tree_util.tree_leaves(eva_jax.param_logical_axes(tiny_cfg),
                                      is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert specs and all(all(isinstance(n, str) for n in spec) for spec in specs)
    scanned = eva_jax.param_logical_axes(tiny_cfg)["moe_layers"]["moe"]["experts_gate"]
    assert tuple(scanned) == ("layers", "expert", "embed", "expert_mlp")


def test_v3_671b_parameter_counts_are_exact():
    counts = eva_jax.param_counts(eva_jax.load_config("v3_671b"))
    assert counts["total"] == 671_026_404_352
    assert counts["activated"] == 37_552_282_624
    assert round(counts["mtp"] / 1e9, 2) == 11.61
    assert round(counts["mtp_activated"] / 1e9, 2) == 2.54


def test_program_size_does_not_grow_with_depth():
    """The stacks are scanned: 3 and 12 layers lower to the same number of jaxpr equations."""
    def size(layers):
        cfg = eva_jax.load_config("v3_tiny", **{"model.num_layers": layers})
        params = eva_jax.abstract_params(cfg)
        import flax.linen as nn

        jaxpr = jax.make_jaxpr(lambda p, t: Transformer(cfg.model, cfg.compute).apply({"params": p}, t))(
            nn.unbox(params), jnp.zeros((1, 4), jnp.int32))
        return len(jaxpr.eqns)

    assert size(3) == size(12)
