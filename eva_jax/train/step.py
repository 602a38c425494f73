"""The jitted train step: gradient accumulation over micro-batches, AdamW, then the auxiliary-loss-free
router-bias update from the step's expert loads (outside the optimizer)."""

from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp
import optax

from eva_jax.api import Params
from eva_jax.config import Config
from eva_jax.train.head_loss import head_cross_entropy
from eva_jax.train.loss import objective, target_mask
from eva_jax.nn.model import Transformer
from eva_jax.parallel.rules import constrain_like_params


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Params
    opt_state: optax.OptState


def init_state(params: Params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))


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


def max_violation(load: jax.Array) -> jax.Array:
    """MaxVio = (max load − mean load) / mean load, per layer."""
    load = load.astype(jnp.float32)
    mean = load.mean(-1)
    return (load.max(-1) - mean) / jnp.maximum(mean, 1e-9)


def train_step(state: TrainState, batch: dict, mtp_lambda: jax.Array, gamma: jax.Array, *, cfg: Config,
               tx: optax.GradientTransformation) -> tuple[TrainState, dict]:
    """`batch` leaves are [n_micro, micro_batch, T]; the gradient is the mean over micro-batches."""
    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def accumulate(carry, micro):
        grads, sums = carry
        (_, aux), g = grad_fn(state.params, micro, mtp_lambda, cfg)
        grads = constrain_like_params(jax.tree_util.tree_map(jnp.add, grads, constrain_like_params(g, cfg)), cfg)
        sums = jax.tree_util.tree_map(jnp.add, sums, aux)
        return (grads, sums), None

    zeros = constrain_like_params(jax.tree_util.tree_map(jnp.zeros_like, state.params), cfg)
    first = jax.tree_util.tree_map(lambda x: x[0], batch)
    aux_shape = jax.eval_shape(lambda: grad_fn(state.params, first, mtp_lambda, cfg)[0][1])
    aux_zero = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), aux_shape)
    (grads, sums), _ = jax.lax.scan(accumulate, (zeros, aux_zero), batch)
    n_micro = jax.tree_util.tree_leaves(batch)[0].shape[0]
    grads = jax.tree_util.tree_map(lambda g: g / n_micro, grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params = update_router_bias(params, sums["expert_counts"], gamma)
    metrics = {name: sums[name] / n_micro for name in ("loss", "mtp_loss", "balance_loss")}
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["max_vio"] = {name: max_violation(load) for name, load in sums["expert_counts"].items()}
    return TrainState(state.step + 1, params, opt_state), metrics


def make_train_step(cfg: Config, tx: optax.GradientTransformation, mesh=None):
    """The jitted step. With a mesh: the state lies as eva_jax.parallel.rules says (in and out), batches over
    the batch axes, and tracing runs under jax.set_mesh so the MoE takes its expert-parallel path."""
    fn = functools.partial(train_step, cfg=cfg, tx=tx)
    if mesh is None:
        return jax.jit(fn, donate_argnums=0)
    from jax.sharding import NamedSharding, PartitionSpec as P

    from eva_jax.parallel.rules import use
    from eva_jax.parallel.sharding import state_shardings

    state_sh, _ = state_shardings(cfg, mesh, tx)
    jitted = jax.jit(fn, donate_argnums=0, in_shardings=(state_sh, None, None, None),
                     out_shardings=(state_sh, NamedSharding(mesh, P())))

    def step(state, batch, mtp_lambda, gamma):
        with use(cfg, mesh):
            return jitted(state, batch, mtp_lambda, gamma)

    step.jitted = jitted
    return step


@functools.partial(jax.jit, static_argnums=2)
def heldout_loss(params: Params, batch: dict, cfg: Config) -> jax.Array:
    """Main next-token loss of one held-out micro-batch."""
    out = Transformer(cfg.model).apply({"params": params}, batch["inputs"], positions=batch.get("positions"),
                                       segment_ids=batch.get("segment_ids"), with_mtp=False)
    return head_cross_entropy(out["hidden"], params["lm_head"], batch["targets"], target_mask(batch))
