"""Parameter accounting from abstract shapes (reference §1.3): nothing is allocated."""

from __future__ import annotations

import math

import flax.linen as nn
import jax

from eva_jax.api import abstract_params, model_config
from eva_jax.config import Config, ModelConfig

# Buffers, not trained parameters: the reference's totals leave them out.
BUFFERS = ("router_bias",)


def _leaves(cfg: ModelConfig):
    boxed = abstract_params(cfg)
    flat = jax.tree_util.tree_flatten_with_path(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
    for path, leaf in flat:
        keys = [getattr(p, "key", str(p)) for p in path]
        yield keys, leaf.value.shape, tuple(leaf.names)


def param_counts(cfg: Config | ModelConfig) -> dict[str, int]:
    """{"total", "activated", "mtp", "mtp_activated"}: main-model parameters, those used per token
    (K of the E routed experts), the MTP modules' own parameters, and those an MTP token uses
    including the shared embedding and head."""
    mc = model_config(cfg)
    share = mc.num_experts_per_tok / mc.n_routed_experts
    counts = {"total": 0, "activated": 0, "mtp": 0, "mtp_activated": 0}
    shared_io = 0
    for keys, shape, names in _leaves(mc):
        if keys[-1] in BUFFERS:
            continue
        size = math.prod(shape)
        used = round(size * share) if "expert" in names else size
        if keys[0] in ("embed", "lm_head"):
            shared_io += size
        prefix = "mtp" if keys[0].startswith("mtp_") else None
        counts[f"{prefix}" if prefix else "total"] += size
        counts[f"{prefix}_activated" if prefix else "activated"] += used
    counts["mtp_activated"] += shared_io if mc.num_mtp_layers else 0
    return counts
