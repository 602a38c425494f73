"""The jitted GRPO optimizer step and the trainer's log-probabilities of rollout rows, on one device or a mesh
(the state lies as eva_jax.parallel.rules says, rows over the batch axes), with the pre-training step's
gradient accumulation and non-finite guard (eva_jax/train/step.py)."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from eva_jax.api import abstract_params
from eva_jax.config import Config
from eva_jax.parallel.rules import MeshRules, constrain_tree
from eva_jax.parallel.sharding import shard_rows
from eva_jax.post.grpo_loss import grpo_loss, token_logprobs
from eva_jax.train import schedules
from eva_jax.train.optim import make_optimizer
from eva_jax.train.state import TrainState
from eva_jax.train.step import apply_if_finite, jit_step, mean_gradient

METRICS = ("loss", "kl", "clip_fraction", "entropy")


def grpo_step(state: TrainState, batch: dict, *, cfg: Config, tx: optax.GradientTransformation,
              sharding: MeshRules | None = None, specs=None) -> tuple[TrainState, dict]:
    """One optimizer step over a rollout batch whose leaves are [n_micro, micro_batch, ...]."""
    def like_params(tree):
        return tree if sharding is None else constrain_tree(tree, specs, sharding.mesh)

    zeros = {name: jnp.zeros((), jnp.float32) for name in METRICS}
    grads, sums, n_micro = mean_gradient(lambda p, micro: grpo_loss(p, micro, cfg, sharding), state.params, batch,
                                         zeros, like_params)
    metrics = {name: sums[name] / n_micro for name in METRICS}
    state, metrics["applied"], metrics["grad_norm"] = apply_if_finite(state, grads, tx, metrics["loss"])
    return state, metrics


@functools.lru_cache(maxsize=4)
def compiled(cfg: Config, mesh) -> tuple[optax.GradientTransformation, Any]:
    """(optimizer, jitted step) for a config and mesh, made once per process: a resumed or repeated run in the
    same process (a notebook, the tests) reuses the compiled step. GRPO's learning-rate table is the run's
    per-rollout schedule with each entry repeated for the μ optimizer steps."""
    lr = np.repeat(schedules.plan(cfg).lr, cfg.grpo.inner_steps)
    tx = make_optimizer(cfg, lr, nn.unbox(abstract_params(cfg)))
    return tx, make_grpo_step(cfg, tx, mesh)


def make_grpo_step(cfg: Config, tx: optax.GradientTransformation, mesh=None):
    return jit_step(grpo_step, cfg, tx, mesh)


@functools.partial(jax.jit, static_argnames=("cfg",))
def _logprobs(params, inputs, targets, cfg: Config):
    return token_logprobs(params, inputs, targets, cfg)[0]


def rows_logprobs(params, rows: dict[str, np.ndarray], cfg: Config, mesh) -> np.ndarray:
    """[R, T] log π(target) of every position of the rollout rows, a micro-batch at a time."""
    micro, out = cfg.train.micro_batch, []
    for start in range(0, len(rows["inputs"]), micro):
        part = shard_rows({k: rows[k][start:start + micro] for k in ("inputs", "targets")}, mesh)
        out.append(np.asarray(_logprobs(params, part["inputs"], part["targets"], cfg)))
    return np.concatenate(out)


def stacked(rows: dict[str, np.ndarray], micro: int) -> dict[str, np.ndarray]:
    """[R, ...] -> [R / micro, micro, ...]: the micro-batch axis the step scans over."""
    return {k: v.reshape(-1, micro, *v.shape[1:]) for k, v in rows.items()}
