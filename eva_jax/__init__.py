"""Eva: DeepSeek-V3 in JAX/Flax. The public API (keep these names and signatures stable):

    cfg = eva_jax.load_config("v3_tiny", **{"model.num_layers": 4})
    params = eva_jax.init_params(cfg, seed=0)
    eva_jax.param_counts(cfg)            # {"total", "activated", "mtp", "mtp_activated"}, nothing allocated
    cfg, params = eva_jax.from_hf("path/to/hf_dir")
    eva_jax.to_hf(cfg, params, "out_dir")
    logits = eva_jax.logits(cfg, params, tokens)
    mtp = eva_jax.mtp_logits(cfg, params, tokens)
    new_tokens = eva_jax.generate(cfg, params, prompts, max_new_tokens, temperature=0.0, speculative=False)
"""

from eva_jax.api import abstract_params, init_params, load_config, logits, mtp_logits, param_logical_axes
from eva_jax.checkpoints.hf import from_hf, to_hf
from eva_jax.config import Config, ConfigError, ModelConfig, YarnConfig
from eva_jax.counts import param_counts
from eva_jax.infer.api import generate

__all__ = [
    "Config", "ConfigError", "ModelConfig", "YarnConfig", "abstract_params", "from_hf", "generate", "init_params",
    "load_config", "logits", "mtp_logits", "param_counts", "param_logical_axes", "to_hf",
]
