"""Shardings of the train state and batches on a mesh, from the rules of eva_jax.parallel.rules."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from eva_jax.config import Config
from eva_jax.parallel import rules
from eva_jax.parallel.mesh import BATCH_AXES, batch_shards


def state_specs(cfg: Config, mesh, tx: optax.GradientTransformation, boxed_params: Any | None = None):
    """(TrainState of PartitionSpecs, abstract TrainState) — nothing is allocated."""
    from eva_jax.api import abstract_params
    from eva_jax.train.step import TrainState

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


def batch_spec(ndim: int) -> P:
    """Micro-batched leaves are [n_micro, micro_batch, ...]: the micro-batch rows lie over the batch axes."""
    return P(None, BATCH_AXES, *([None] * (ndim - 2)))


def check_batch(cfg: Config, mesh) -> None:
    from eva_jax.config import ConfigError

    shards = batch_shards(mesh)
    for name in ("micro_batch",):
        rows = getattr(cfg.train, name)
        if rows % shards:
            raise ConfigError(f"train.{name}={rows} sequences cannot split over the {shards} data-parallel "
                              f"devices of the mesh (data×fsdp×expert); use a multiple of {shards}")


def shard_batch(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Global arrays from this process's rows: in a multi-process run each process passes its own slice of
    the micro-batch rows (axis 1), in process order."""
    def one(x):
        x = np.asarray(x)
        return jax.make_array_from_process_local_data(NamedSharding(mesh, batch_spec(x.ndim)), x)

    return {k: one(v) for k, v in batch.items()}


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def init_sharded_state(cfg: Config, tx: optax.GradientTransformation, mesh, seed: int):
    """The initial TrainState created directly in its shardings (no host copy of the full model); the values
    equal eva_jax.init_params(cfg, seed) since JAX's threefry is partitionable."""
    from eva_jax.api import _init
    from eva_jax.train.step import init_state

    state_sh, _ = state_shardings(cfg, mesh, tx)

    def build(key):
        return init_state(nn.unbox(_init.__wrapped__(cfg.model, key)), tx)

    with jax.set_mesh(mesh):
        return jax.jit(build, out_shardings=state_sh)(jax.random.PRNGKey(seed))


def shard_rows(batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
    """Like shard_batch for [rows, ...] leaves without a micro-batch axis (held-out batches)."""
    def one(x):
        x = np.asarray(x)
        spec = P(BATCH_AXES, *([None] * (x.ndim - 1)))
        return jax.make_array_from_process_local_data(NamedSharding(mesh, spec), x)

    return {k: one(v) for k, v in batch.items()}


def train_devices(cfg: Config) -> list:
    """All devices; except that a single process whose micro-batch the devices do not divide uses the largest
    count that does (a CPU host simulating 8 devices still runs micro_batch=2), with a warning."""
    import math
    import warnings

    from eva_jax.parallel.mesh import resolve_shape

    devices = jax.devices()
    if jax.process_count() > 1:
        return devices
    for count in range(len(devices), 0, -1):
        try:
            shape = resolve_shape(cfg.mesh, count)
        except Exception:  # noqa: BLE001 - a count the fixed axes do not fit
            continue
        if cfg.train.micro_batch % math.prod(shape[a] for a in BATCH_AXES) == 0:
            if count < len(devices):
                warnings.warn(f"train.micro_batch={cfg.train.micro_batch} does not split over {len(devices)} "
                              f"devices; training on {count}")
            return devices[:count]
    return devices
