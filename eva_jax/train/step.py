"""The jitted train step: gradient accumulation over micro-batches, AdamW, then the auxiliary-loss-free
router-bias update from the step's expert loads (outside the optimizer)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from eva_jax.api import Params, abstract_params
from eva_jax.config import Config
from eva_jax.nn.model import Transformer
from eva_jax.parallel.rules import MeshRules, constrain_tree, param_specs
from eva_jax.train.head_loss import head_cross_entropy
from eva_jax.train.loss import aux_zeros, objective, target_mask
from eva_jax.train.state import TrainState
from eva_jax.train.state_sharding import state_shardings


def _bias_slot(params: Params, name: str) -> tuple[str, ...]:
    return ("moe_layers", "moe", "router_bias") if name == "moe_layers" else (name, "block", "moe", "router_bias")


def update_router_bias(params: Params, counts: dict[str, jax.Array], gamma: jax.Array) -> Params:
    """b ← b + γ·sign(mean load − load), per MoE layer (reference §4.3): overloaded experts get less likely."""
    params = jax.tree_util.tree_map(lambda x: x, params)  # fresh dicts at every level, same arrays
    for name, load in counts.items():
        *outer, leaf = _bias_slot(params, name)
        node = params
        for key in outer:
            node = node[key]
        load = load.astype(jnp.float32)
        node[leaf] = node[leaf] + gamma * jnp.sign(load.mean(-1, keepdims=True) - load)
    return params


def all_finite(tree: Any) -> jax.Array:
    """True when every floating-point leaf of `tree` holds only finite values."""
    leaves = [jnp.isfinite(x).all() for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


def max_violation(load: jax.Array) -> jax.Array:
    """MaxVio = (max load − mean load) / mean load, per layer."""
    load = load.astype(jnp.float32)
    mean = load.mean(-1)
    return (load.max(-1) - mean) / jnp.maximum(mean, 1e-9)


def mean_gradient(loss_fn, params: Params, batch: dict, aux_zero: Any, like_params=lambda tree: tree
                  ) -> tuple[Params, Any, int]:
    """(mean gradient, summed aux, micro-batch count) of `loss_fn(params, micro) -> (loss, aux)` over the
    leading axis of `batch` (the micro-batches), accumulated in a scan. `like_params` pins the accumulator to
    the parameters' layout on a mesh."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulate(carry, micro):
        grads, sums = carry
        (_, aux), g = grad_fn(params, micro)
        grads = like_params(jax.tree_util.tree_map(jnp.add, grads, like_params(g)))
        return (grads, jax.tree_util.tree_map(jnp.add, sums, aux)), None

    zeros = like_params(jax.tree_util.tree_map(jnp.zeros_like, params))
    (grads, sums), _ = jax.lax.scan(accumulate, (zeros, aux_zero), batch)
    n_micro = jax.tree_util.tree_leaves(batch)[0].shape[0]
    return jax.tree_util.tree_map(lambda g: g / n_micro, grads), sums, n_micro


def apply_if_finite(state: TrainState, grads: Params, tx: optax.GradientTransformation, loss: jax.Array,
                    adjust=lambda params: params) -> tuple[TrainState, jax.Array, jax.Array]:
    """(next state, applied, gradient norm): the optimizer update, then `adjust` (e.g. the router-bias update).
    A step whose loss, gradient or result is not finite is not applied: the state stays the last finite one
    (so it is never saved non-finite) and the loop counts the skips (train.max_bad_steps)."""
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = adjust(optax.apply_updates(state.params, updates))
    grad_norm = optax.tree.norm(grads)
    applied = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & all_finite(params)
    params, opt_state = jax.tree_util.tree_map(lambda new, old: jnp.where(applied, new, old),
                                               (params, opt_state), (state.params, state.opt_state))
    return TrainState(state.step + 1, params, opt_state), applied, grad_norm


def train_step(state: TrainState, batch: dict, mtp_lambda: jax.Array, gamma: jax.Array, *, cfg: Config,
               tx: optax.GradientTransformation, sharding: MeshRules | None = None,
               specs: Any = None) -> tuple[TrainState, dict]:
    """`batch` leaves are [n_micro, micro_batch, T]; the gradient is the mean over micro-batches. With a
    mesh, `sharding` reaches the model and `specs` (the parameters' PartitionSpecs) pin the gradient
    accumulator to the parameters' layout."""
    def like_params(tree):
        return tree if sharding is None else constrain_tree(tree, specs, sharding.mesh)

    grads, sums, n_micro = mean_gradient(lambda p, micro: objective(p, micro, mtp_lambda, cfg, sharding),
                                         state.params, batch, aux_zeros(cfg), like_params)
    metrics = {name: sums[name] / n_micro for name in ("loss", "mtp_loss", "balance_loss")}

    def adjust(params):
        if cfg.model.uses_routing_bias:  # V2's softmax gate has no bias to balance with
            params = update_router_bias(params, sums["expert_counts"], gamma)
        return params

    state, metrics["applied"], metrics["grad_norm"] = apply_if_finite(state, grads, tx, metrics["loss"], adjust)
    metrics["max_vio"] = {name: max_violation(load) for name, load in sums["expert_counts"].items()}
    return state, metrics


def jit_step(step, cfg: Config, tx: optax.GradientTransformation, mesh=None, batch_args: int = 1):
    """`step(state, *batch_args, cfg=, tx=[, sharding=, specs=])` jitted with the state donated. With a mesh:
    the state lies as eva_jax.parallel.rules says (in and out), batches over the batch axes, and the model is
    given the mesh (MeshRules), so the MoE dispatches over `expert` and every weight is constrained to its
    spec. The parameter specs are computed here, once."""
    fn = functools.partial(step, cfg=cfg, tx=tx)
    if mesh is None:
        return jax.jit(fn, donate_argnums=0)
    boxed = abstract_params(cfg)
    state_sh, _ = state_shardings(cfg, mesh, tx, boxed)
    fn = functools.partial(fn, sharding=MeshRules.of(cfg, mesh), specs=param_specs(cfg, mesh, boxed))
    return jax.jit(fn, donate_argnums=0, in_shardings=(state_sh, *([None] * batch_args)),
                   out_shardings=(state_sh, NamedSharding(mesh, P())))


def make_train_step(cfg: Config, tx: optax.GradientTransformation, mesh=None):
    """The jitted pre-training step (batch, mtp_lambda, gamma), on one device or `mesh` (jit_step)."""
    return jit_step(train_step, cfg, tx, mesh, batch_args=3)


@functools.partial(jax.jit, static_argnums=2)
def heldout_loss(params: Params, batch: dict, cfg: Config) -> jax.Array:
    """Main next-token loss of one held-out micro-batch."""
    model = Transformer(cfg.model, cfg.compute)
    out = model.apply({"params": params}, batch["inputs"], positions=batch.get("positions"),
                      segment_ids=batch.get("segment_ids"), with_mtp=False)
    return head_cross_entropy(out["hidden"], params["lm_head"], batch["targets"], target_mask(batch))
