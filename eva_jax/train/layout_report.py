"""A text listing of where every parameter and optimizer-state leaf lies on a mesh: the golden sharding file
(tests/parallel/golden/) and `--dry-run` are built from it. Abstract only: nothing is allocated."""

from __future__ import annotations

import flax.linen as nn
import jax
import numpy as np

from eva_jax.api import abstract_params
from eva_jax.config import Config
from eva_jax.parallel import rules
from eva_jax.parallel.mesh import abstract_mesh, describe_shape
from eva_jax.train.optim import make_optimizer
from eva_jax.train.state_sharding import state_specs


def _spec_text(spec) -> str:
    parts = []
    for entry in spec:
        if entry is None:
            parts.append("-")
        elif isinstance(entry, str):
            parts.append(entry)
        else:
            parts.append("+".join(entry))
    return "(" + ", ".join(parts) + ")"


def sharding_listing(cfg: Config, device_count: int) -> str:
    """One line per leaf: kind, path, shape, dtype, PartitionSpec, on the config's mesh of device_count."""
    mesh = abstract_mesh(cfg.mesh, device_count)
    boxed = abstract_params(cfg)

    # The optimizer's learning-rate table does not affect shapes; one entry keeps this cheap.
    tx = make_optimizer(cfg, np.zeros((1,), np.float32), nn.unbox(boxed))
    specs, abstract = state_specs(cfg, mesh, tx, boxed)
    lines = [f"# {cfg.name} on {describe_shape(mesh)} ({device_count} devices), mesh.rules={cfg.mesh.rules}, "
             f"mesh.zero1={cfg.mesh.zero1}",
             "# kind path shape dtype spec"]
    for kind, tree, shapes in (("param", specs.params, abstract.params), ("opt", specs.opt_state, abstract.opt_state)):
        leaves = jax.tree_util.tree_leaves(shapes)
        for (path, spec), leaf in zip(rules.flat_specs(tree), leaves):
            shape = "x".join(map(str, leaf.shape)) or "scalar"
            lines.append(f"{kind} {path} {shape} {leaf.dtype} {_spec_text(spec)}")
    return "\n".join(lines) + "\n"
