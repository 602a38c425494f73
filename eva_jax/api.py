"""The public entry points: configs, parameters, forward passes. Keep these signatures stable."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import configs  # the registry of named configs, at the top level of the project
from eva_jax.config import ComputeConfig, Config, ModelConfig
from eva_jax.nn.model import Transformer
from eva_jax.overrides import apply_overrides

Params = dict[str, Any]


def load_config(name: str, **overrides: Any) -> Config:
    """A named config from `configs/` with dotted overrides, e.g. load_config("v3_tiny", **{"model.num_layers": 4})."""
    return apply_overrides(configs.resolve(name), overrides)


def split_config(cfg: Config | ModelConfig) -> tuple[ModelConfig, ComputeConfig]:
    """The architecture and how it is computed: a Config's own sections, or a bare ModelConfig with the
    default ComputeConfig (bfloat16 compute, fp32 parameters)."""
    if isinstance(cfg, Config):
        return cfg.model, cfg.compute
    if isinstance(cfg, ModelConfig):
        return cfg, ComputeConfig()
    raise TypeError(f"expected an eva_jax Config or ModelConfig, got {type(cfg).__name__}")


def model_config(cfg: Config | ModelConfig) -> ModelConfig:
    return split_config(cfg)[0]


def _example_tokens(cfg: ModelConfig) -> jax.Array:
    # Long enough for every MTP depth to keep at least one position.
    return jnp.zeros((1, cfg.num_mtp_layers + 2), jnp.int32)


def init_boxed(cfg: ModelConfig, compute: ComputeConfig, key: jax.Array) -> Params:
    """The parameters `init_params` returns, still boxed with their logical axis names (unjitted, so a caller
    can jit it with its own out_shardings)."""
    return Transformer(cfg, compute).init(key, _example_tokens(cfg), with_mtp=True)["params"]


_init = jax.jit(init_boxed, static_argnums=(0, 1))


def init_params(cfg: Config | ModelConfig, seed: int = 0) -> Params:
    """Random parameters the way training starts (N(0, initializer_range²) weights, unit norms, zero bias)."""
    return nn.unbox(_init(*split_config(cfg), jax.random.PRNGKey(seed)))


def abstract_params(cfg: Config | ModelConfig) -> Params:
    """Parameter shapes and dtypes (boxed with logical axes) without allocating anything."""
    return jax.eval_shape(lambda: init_boxed(*split_config(cfg), jax.random.PRNGKey(0)))


def param_logical_axes(cfg: Config | ModelConfig) -> Params:
    """The logical axis names of every parameter, as a tree of PartitionSpecs."""
    return nn.get_partition_spec(abstract_params(cfg))


def check_tokens(tokens: Any, vocab_size: int) -> jax.Array:
    """Validates token ids (int, [B, T], inside the vocabulary) when they are concrete."""
    if isinstance(tokens, jax.core.Tracer):
        return tokens
    arr = np.asarray(tokens)
    if arr.ndim != 2:
        raise ValueError(f"tokens must be a 2-D [batch, time] array of ids, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"tokens must be integer ids, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        bad = arr[(arr < 0) | (arr >= vocab_size)].ravel()[0]
        raise ValueError(f"token id {int(bad)} is outside the vocabulary [0, {vocab_size})")
    return jnp.asarray(arr, jnp.int32)


@functools.partial(jax.jit, static_argnums=(0, 1, 4))
def forward(cfg: ModelConfig, compute: ComputeConfig, params: Params, tokens: jax.Array, with_mtp: bool) -> dict:
    """The full model output dict of `Transformer.__call__` (logits, hidden, MoE stats, MTP logits)."""
    return Transformer(cfg, compute).apply({"params": params}, tokens, with_mtp=with_mtp)


def logits(cfg: Config | ModelConfig, params: Params, tokens: Any) -> jax.Array:
    """int32 [B, T] -> float32 [B, T, vocab_size] next-token logits of the main model."""
    mc, compute = split_config(cfg)
    return forward(mc, compute, params, check_tokens(tokens, mc.vocab_size), False)["logits"]


def mtp_logits(cfg: Config | ModelConfig, params: Params, tokens: Any) -> list[jax.Array]:
    """D arrays; element k-1 is float32 [B, T-k, V]: at position i, depth k predicts token i+k+1."""
    mc, compute = split_config(cfg)
    if mc.num_mtp_layers == 0:
        raise ValueError("this config has no MTP modules (model.num_mtp_layers=0)")
    toks = check_tokens(tokens, mc.vocab_size)
    if toks.shape[1] <= mc.num_mtp_layers:
        raise ValueError(f"MTP depth {mc.num_mtp_layers} needs more than {mc.num_mtp_layers} tokens per row, "
                         f"got {toks.shape[1]}")
    return forward(mc, compute, params, toks, True)["mtp_logits"]
