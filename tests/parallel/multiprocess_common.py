"""Shared by test_multiprocess.py and the worker processes it launches: the config, the batches and the
training of a few steps on a mesh with synthetic, deterministic global batches."""

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

import eva_jax
from eva_jax.api import abstract_params
from eva_jax.parallel.sharding import batch_spec, shard_batch
from eva_jax.train import schedules
from eva_jax.train.optim import make_optimizer
from eva_jax.train.state_sharding import init_sharded_state
from eva_jax.train.step import make_train_step

SETS = {"train.batch_start": 16, "train.global_batch": 16, "train.micro_batch": 8, "train.steps": 3,
        "model.num_layers": 2, "model.n_routed_experts": 16, "model.num_experts_per_tok": 4,
        "optim.warmup_frac": 0.0, "model.remat_policy": "none"}
STEPS = 3


def config(**mesh):
    return eva_jax.load_config("v3_tiny", **SETS, **{f"mesh.{k}": v for k, v in mesh.items()})


def global_batch(step: int) -> dict:
    rng = np.random.default_rng(step)
    toks = rng.integers(0, 256, (16, 11))
    full = {"inputs": toks[:, :-1], "targets": toks[:, 1:], "target_mask": np.ones((16, 10), bool)}
    return {k: v.reshape(2, 8, *v.shape[1:]) for k, v in full.items()}


def local_rows(batch: dict, mesh) -> dict:
    """This process's rows of the micro-batch axis: what its own data pipeline would have read."""
    x = batch["inputs"]
    index_map = NamedSharding(mesh, batch_spec(x.ndim)).addressable_devices_indices_map(x.shape)
    starts = [idx[1].start or 0 for idx in index_map.values()]
    stops = [idx[1].stop if idx[1].stop is not None else x.shape[1] for idx in index_map.values()]
    return {k: v[:, min(starts):max(stops)] for k, v in batch.items()}


def optimizer(cfg):
    return make_optimizer(cfg, schedules.plan(cfg).lr, nn.unbox(abstract_params(cfg)))


def train(cfg, mesh, steps: int = STEPS):
    tx = optimizer(cfg)
    state = init_sharded_state(cfg, tx, mesh, seed=0)
    step_fn = make_train_step(cfg, tx, mesh)
    losses = []
    for i in range(steps):
        batch = shard_batch(local_rows(global_batch(i), mesh), mesh)
        state, metrics = step_fn(state, batch, jnp.float32(0.3), jnp.float32(0.001))
        losses.append(float(metrics["loss"]))
    return losses, state
