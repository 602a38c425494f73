"""The two layer forms of the one model are the same function: the scanned stacks (training) and one Block
per layer (generation), with parameters converted by unstack_layers / stack_layers."""

import chex
import jax
import numpy as np
import pytest

from eva_jax.nn.model import Transformer, stack_layers, unstack_layers


def test_scanned_and_per_layer_forms_agree(tiny_cfg, tiny_params):
    mc = tiny_cfg.model
    toks = np.random.default_rng(0).integers(0, mc.vocab_size, (2, 9)).astype(np.int32)
    compute = tiny_cfg.compute
    scanned = jax.jit(lambda p: Transformer(mc, compute).apply({"params": p}, toks))(tiny_params)
    per_layer = jax.jit(lambda p: Transformer(mc, compute, scan_layers=False).apply({"params": p}, toks))(
        unstack_layers(mc, tiny_params))
    chex.assert_trees_all_close(scanned["logits"], per_layer["logits"], rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(scanned["mtp_logits"], per_layer["mtp_logits"], rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(scanned["moe"], per_layer["moe"], rtol=1e-5, atol=1e-6)


def test_stack_undoes_unstack(tiny_cfg, tiny_params):
    mc = tiny_cfg.model
    chex.assert_trees_all_equal(stack_layers(mc, unstack_layers(mc, tiny_params)), tiny_params)
    assert "dense_layers_0" in unstack_layers(mc, tiny_params)


def test_generation_needs_the_per_layer_form(tiny_cfg, tiny_params):
    with pytest.raises(ValueError, match="scan_layers=False"):
        model = Transformer(tiny_cfg.model, tiny_cfg.compute)
        model.apply({"params": tiny_params}, np.zeros((1, 2), np.int32), cache=[], rows=None)
