"""Batches and devices on a mesh: batch specs, process-local rows into global arrays, the devices a run uses.
(The train state's shardings are eva_jax/train/state_sharding.py.)"""

from __future__ import annotations

import math
import warnings

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from eva_jax.config import Config, ConfigError
from eva_jax.parallel.mesh import BATCH_AXES, batch_shards, resolve_shape


def batch_spec(ndim: int) -> P:
    """Micro-batched leaves are [n_micro, micro_batch, ...]: the micro-batch rows lie over the batch axes."""
    return P(None, BATCH_AXES, *([None] * (ndim - 2)))


def check_batch(cfg: Config, mesh) -> None:
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
