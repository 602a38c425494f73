"""The train state: step counter, parameters, optimizer state."""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import optax

from eva_jax.api import Params


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Params
    opt_state: optax.OptState


def init_state(params: Params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
