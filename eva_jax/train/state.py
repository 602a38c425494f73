"""The train state: step counter, parameters, optimizer state."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax.numpy as jnp
import optax

from eva_jax.api import Params


@flax.struct.dataclass
class TrainState:
    """step is an int32 [] array. The same pytree also carries the state's PartitionSpecs, shardings and
    ShapeDtypeStructs (eva_jax/train/state_sharding.py), hence the loose annotations: the run-time type checks
    (tests/conftest.py) would otherwise reject those trees."""

    step: Any
    params: Any
    opt_state: Any


def init_state(params: Params, tx: optax.GradientTransformation) -> TrainState:
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))
