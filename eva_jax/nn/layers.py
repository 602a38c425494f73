"""Parameter declaration helpers shared by every module: logical axis names on every parameter."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from eva_jax.config import ComputeConfig, ModelConfig
from eva_jax.parallel.rules import MeshRules
from pallas_kernels.backend import resolve
from pallas_kernels.fp8_matmul import fp8_matmul
from pallas_kernels.fp8_matmul_ref import fp8_matmul_ref


def compute_dtype(compute: ComputeConfig) -> jnp.dtype:
    return jnp.dtype(compute.dtype)


def kernel_init(cfg: ModelConfig) -> nn.initializers.Initializer:
    # DeepSeek trained from N(0, 0.006²) (reference §8); HF's init uses initializer_range the same way.
    return nn.initializers.normal(stddev=cfg.initializer_range)


def param(module: nn.Module, name: str, shape: Sequence[int], axes: tuple[str, ...],
          init: nn.initializers.Initializer, dtype: DTypeLike) -> jax.Array:
    """Declares a parameter whose dimensions carry logical axis names (used by the sharding rules)."""
    assert len(shape) == len(axes), (name, shape, axes)
    value = module.param(name, nn.with_logical_partitioning(init, axes), tuple(shape), dtype)
    # A module given a mesh (its `sharding` attribute) pins each weight to its spec where it is used.
    sharding: MeshRules | None = getattr(module, "sharding", None)
    return value if sharding is None else sharding.constrain_param(value, axes)


def kernel(module: nn.Module, name: str, shape: Sequence[int], axes: tuple[str, ...]) -> jax.Array:
    """A matmul weight of a module with `cfg` (ModelConfig) and `compute` (ComputeConfig) fields, stored in
    compute.param_dtype and returned in the compute dtype."""
    compute: ComputeConfig = module.compute
    value = param(module, name, shape, axes, kernel_init(module.cfg), jnp.dtype(compute.param_dtype))
    return value.astype(compute_dtype(compute))


def linear(x: jax.Array, w: jax.Array, compute: ComputeConfig) -> jax.Array:
    """x @ w for a 2-D kernel [in, out]; through the FP8 block-scaled kernel when compute.matmul == "fp8"."""
    if compute.matmul != "fp8":
        return x @ w
    choice = resolve("fp8_matmul", "auto", interpret=compute.kernel_interpret)
    if choice.use_pallas:
        return fp8_matmul(x, w, interpret=choice.interpret, flavour=choice.flavour)
    return fp8_matmul_ref(x, w)
