"""Shardings of the train state on a mesh, from the rules of eva_jax.parallel.rules: parameters by their
logical axes, optimizer state like its parameter (split further by ZeRO-1), counters replicated."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from eva_jax.api import abstract_params, init_boxed
from eva_jax.config import Config
from eva_jax.parallel import rules
from eva_jax.train.state import TrainState, init_state


def state_specs(cfg: Config, mesh, tx: optax.GradientTransformation, boxed_params: Any | None = None):
    """(TrainState of PartitionSpecs, abstract TrainState) — nothing is allocated."""
    boxed = boxed_params if boxed_params is not None else abstract_params(cfg)
    params = nn.unbox(boxed)
    p_specs = rules.param_specs(cfg, mesh, boxed)
    opt = jax.eval_shape(tx.init, params)
    o_specs = rules.opt_state_specs(opt, params, p_specs, mesh, cfg.mesh.zero1)
    abstract = TrainState(jax.ShapeDtypeStruct((), np.int32), params, opt)
    return TrainState(P(), p_specs, o_specs), abstract


def state_shardings(cfg: Config, mesh, tx: optax.GradientTransformation, boxed_params: Any | None = None):
    specs, abstract = state_specs(cfg, mesh, tx, boxed_params)
    return rules.named(mesh, specs), abstract


def init_sharded_state(cfg: Config, tx: optax.GradientTransformation, mesh, seed: int) -> TrainState:
    """The initial TrainState created directly in its shardings (no host copy of the full model); the values
    equal eva_jax.init_params(cfg, seed) since JAX's threefry is partitionable."""
    state_sh, _ = state_shardings(cfg, mesh, tx)

    def build(key):
        return init_state(nn.unbox(init_boxed(cfg.model, cfg.compute, key)), tx)

    return jax.jit(build, out_shardings=state_sh)(jax.random.PRNGKey(seed))


def place_like(values: Any, like: Any) -> Any:
    """`values` (host or device arrays of `like`'s structure) put into `like`'s shardings and dtypes; a
    structure or shape that differs is a ValueError naming the first leaf that does."""
    flat, tree = jax.tree_util.tree_flatten_with_path(like)
    given = jax.tree_util.tree_leaves(values)
    if jax.tree_util.tree_structure(values) != tree:
        raise ValueError(f"the initial parameters have another structure than the model's "
                         f"({len(given)} leaves, the model has {len(flat)})")
    out = []
    for (path, target), value in zip(flat, given):
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"initial parameter {jax.tree_util.keystr(path)} has shape {tuple(value.shape)}, "
                             f"the model's is {tuple(target.shape)}")
        out.append(jax.device_put(np.asarray(value, target.dtype), target.sharding))
    return jax.tree_util.tree_unflatten(tree, out)
