"""AdamW with global-norm clipping; no weight decay on norms and biases; the router bias is not trained by
the optimizer (it moves by the auxiliary-loss-free update instead)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from eva_jax.config import Config

NO_DECAY = ("scale", "router_bias")
NOT_TRAINED = ("router_bias",)


def _leaf_name(path) -> str:
    return getattr(path[-1], "key", str(path[-1]))


def labels(params) -> dict:
    return jax.tree_util.tree_map_with_path(
        lambda p, _: "frozen" if _leaf_name(p) in NOT_TRAINED else "trained", params)


def decay_mask(params) -> dict:
    return jax.tree_util.tree_map_with_path(lambda p, _: _leaf_name(p) not in NO_DECAY, params)


def make_optimizer(cfg: Config, lr_per_step: np.ndarray, params) -> optax.GradientTransformation:
    """The learning rate is a table indexed by the optimizer's own step count (the schedule lives in tokens
    and is laid out per step by `schedules.plan`)."""
    o = cfg.optim
    table = jnp.asarray(lr_per_step)
    schedule = lambda count: table[jnp.minimum(count, table.shape[0] - 1)]  # noqa: E731
    adamw = optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                        mask=decay_mask(params), mu_dtype=jnp.dtype(o.moment_dtype))
    trained = optax.chain(optax.clip_by_global_norm(o.clip_norm), adamw)
    return optax.multi_transform({"trained": trained, "frozen": optax.set_to_zero()}, labels(params))
