"""Hugging Face `config.json` (model_type deepseek_v3 / deepseek_v2) <-> ModelConfig."""

from __future__ import annotations

from typing import Any

from eva_jax.config import ConfigError, ModelConfig, YarnConfig

SUPPORTED = ("deepseek_v3", "deepseek_v2")

# What transformers' DeepseekV3Config / DeepseekV2Config (5.x) assume for a key that config.json leaves out,
# so a sparse file loads the model transformers would build (tests/checkpoints/test_hf_config_defaults.py
# compares them with the installed transformers).
HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "deepseek_v3": {
        "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
        "num_hidden_layers": 61, "num_attention_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
        "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "qk_nope_head_dim": 128, "n_group": 8, "topk_group": 4, "num_experts_per_tok": 8,
        "first_k_dense_replace": 3, "norm_topk_prob": True, "max_position_embeddings": 4096,
        "initializer_range": 0.02, "rms_norm_eps": 1e-6, "bos_token_id": 0, "eos_token_id": 1,
        "rope_interleave": True, "num_mtp_layers": 1,
    },
    "deepseek_v2": {
        "vocab_size": 102400, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
        "num_attention_heads": 32, "max_position_embeddings": 2048, "initializer_range": 0.02,
        "rms_norm_eps": 1e-6, "bos_token_id": 1, "eos_token_id": 2, "first_k_dense_replace": 0,
        "kv_lora_rank": 512, "q_lora_rank": 1536, "n_group": None, "n_routed_experts": 64, "n_shared_experts": 2,
        "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "routed_scaling_factor": 1.0, "topk_group": None,
        "topk_method": "greedy", "norm_topk_prob": False, "v_head_dim": 128, "num_experts_per_tok": None,
        "moe_intermediate_size": 1407,
    },
}


def _rope_block(d: dict[str, Any]) -> dict[str, Any] | None:
    """HF5 writes `rope_parameters` (with rope_theta inside); older files write `rope_scaling` with "type"."""
    block = d.get("rope_parameters") or d.get("rope_scaling")
    return dict(block) if block else None


def _yarn(block: dict[str, Any] | None, max_positions: int) -> YarnConfig | None:
    if not block:
        return None
    kind = block.get("rope_type", block.get("type", "default"))
    if kind == "default":
        return None
    if kind != "yarn":
        raise ConfigError(f"rope scaling type {kind!r} is not supported; DeepSeek models use 'yarn' or none")
    original = int(block["original_max_position_embeddings"])
    factor = block.get("factor")
    return YarnConfig(
        factor=float(factor if factor is not None else max_positions / original),
        original_max_position_embeddings=original,
        beta_fast=float(block.get("beta_fast") or 32.0),
        beta_slow=float(block.get("beta_slow") or 1.0),
        mscale=float(block.get("mscale") or 0.0),
        mscale_all_dim=float(block.get("mscale_all_dim") or 0.0),
        attention_factor=None if block.get("attention_factor") is None else float(block["attention_factor"]),
        truncate=bool(block.get("truncate", True)),
    )


def _check_supported(d: dict[str, Any]) -> None:
    model_type = d.get("model_type")
    if model_type not in SUPPORTED:
        raise ConfigError(f"unsupported model_type {model_type!r} in config.json; expected one of {SUPPORTED}")
    if d.get("tie_word_embeddings", False):
        raise ConfigError("tie_word_embeddings=true is not supported: DeepSeek models have an untied lm_head")
    if d.get("hidden_act", "silu") != "silu":
        raise ConfigError(f"hidden_act={d['hidden_act']!r} is not supported; DeepSeek models use 'silu'")
    if d.get("attention_bias", False) or d.get("mlp_bias", False):
        raise ConfigError("attention_bias / mlp_bias = true is not supported; DeepSeek models have no biases")


def model_config_from_hf(d: dict[str, Any]) -> ModelConfig:
    """A ModelConfig equivalent to what `transformers` builds from this config.json dict (the architecture
    only: how it is computed is the ComputeConfig's)."""
    _check_supported(d)
    v3 = d["model_type"] == "deepseek_v3"
    if v3 and "num_nextn_predict_layers" in d:  # DeepSeek's name for transformers' num_mtp_layers
        d = {**d, "num_mtp_layers": d["num_nextn_predict_layers"]}
    d = {**HF_DEFAULTS[d["model_type"]], **d}
    rope = _rope_block(d) or {}
    eos = d.get("eos_token_id", 1)
    try:
        return ModelConfig(
            vocab_size=d["vocab_size"], hidden_size=d["hidden_size"], num_layers=d["num_hidden_layers"],
            num_heads=d["num_attention_heads"], q_lora_rank=d.get("q_lora_rank"), kv_lora_rank=d["kv_lora_rank"],
            qk_nope_head_dim=d["qk_nope_head_dim"], qk_rope_head_dim=d["qk_rope_head_dim"],
            v_head_dim=d["v_head_dim"], intermediate_size=d["intermediate_size"],
            moe_intermediate_size=d["moe_intermediate_size"], n_routed_experts=d["n_routed_experts"],
            n_shared_experts=d.get("n_shared_experts") or 0, num_experts_per_tok=d["num_experts_per_tok"],
            n_group=d.get("n_group") or 1, topk_group=d.get("topk_group") or 1,
            first_k_dense_replace=d.get("first_k_dense_replace") or 0,
            routed_scaling_factor=float(d["routed_scaling_factor"]),
            # HF's V2 router never renormalises, whatever the flag says.
            norm_topk_prob=bool(d.get("norm_topk_prob", True)) if v3 else False,
            scoring_func="sigmoid" if v3 else "softmax",
            topk_method="noaux_tc" if v3 else (d.get("topk_method") or "greedy"),
            num_mtp_layers=(d.get("num_mtp_layers") or 0) if v3 else 0,
            max_position_embeddings=d.get("max_position_embeddings", 4096),
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope.get("rope_theta", d.get("rope_theta", 10000.0))),
            rope_scaling=_yarn(rope, d.get("max_position_embeddings", 4096)),
            # V2 rotates adjacent pairs (complex form); V3 follows its rope_interleave flag.
            rope_interleave=bool(d.get("rope_interleave", True)) if v3 else True,
            initializer_range=float(d.get("initializer_range", 0.02)),
            bos_token_id=d.get("bos_token_id", 0) or 0,
            eos_token_id=eos[0] if isinstance(eos, list) else (eos if eos is not None else 1),
        )
    except KeyError as err:
        raise ConfigError(f"config.json lacks the required key {err.args[0]!r}") from None


def _rope_dict(m: ModelConfig) -> dict[str, Any]:
    if m.rope_scaling is None:
        return {"rope_type": "default", "rope_theta": m.rope_theta}
    y = m.rope_scaling
    out = {"rope_type": "yarn", "rope_theta": m.rope_theta, "factor": y.factor,
           "original_max_position_embeddings": y.original_max_position_embeddings,
           "beta_fast": y.beta_fast, "beta_slow": y.beta_slow, "truncate": y.truncate}
    if y.mscale:
        out["mscale"] = y.mscale
    if y.mscale_all_dim:
        out["mscale_all_dim"] = y.mscale_all_dim
    if y.attention_factor is not None:
        out["attention_factor"] = y.attention_factor
    return out


def model_config_to_hf(m: ModelConfig, torch_dtype: str = "bfloat16") -> dict[str, Any]:
    """The config.json dict `transformers` needs to rebuild this model."""
    v3 = m.scoring_func == "sigmoid" and m.topk_method == "noaux_tc"
    if not v3 and not (m.scoring_func == "softmax" and m.topk_method != "noaux_tc" and not m.norm_topk_prob
                       and m.num_mtp_layers == 0):
        raise ConfigError("this routing (scoring_func, topk_method, norm_topk_prob, MTP) has no transformers "
                          "equivalent: deepseek_v3 needs sigmoid+noaux_tc, deepseek_v2 softmax+greedy without MTP")
    if not v3 and not m.rope_interleave:
        raise ConfigError("deepseek_v2 in transformers always uses interleaved rope; set model.rope_interleave=true")
    d: dict[str, Any] = {
        "architectures": ["DeepseekV3ForCausalLM" if v3 else "DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v3" if v3 else "deepseek_v2",
        "vocab_size": m.vocab_size, "hidden_size": m.hidden_size, "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_heads, "num_key_value_heads": m.num_heads, "q_lora_rank": m.q_lora_rank,
        "kv_lora_rank": m.kv_lora_rank, "qk_nope_head_dim": m.qk_nope_head_dim,
        "qk_rope_head_dim": m.qk_rope_head_dim, "v_head_dim": m.v_head_dim,
        "intermediate_size": m.intermediate_size, "moe_intermediate_size": m.moe_intermediate_size,
        "n_routed_experts": m.n_routed_experts, "n_shared_experts": m.n_shared_experts,
        "num_experts_per_tok": m.num_experts_per_tok, "n_group": m.n_group, "topk_group": m.topk_group,
        "first_k_dense_replace": m.first_k_dense_replace, "routed_scaling_factor": m.routed_scaling_factor,
        "norm_topk_prob": m.norm_topk_prob, "max_position_embeddings": m.max_position_embeddings,
        "rms_norm_eps": m.rms_norm_eps, "rope_parameters": _rope_dict(m), "rope_theta": m.rope_theta,
        "hidden_act": "silu", "attention_bias": False, "tie_word_embeddings": False,
        "initializer_range": m.initializer_range, "bos_token_id": m.bos_token_id, "eos_token_id": m.eos_token_id,
        "torch_dtype": torch_dtype,
    }
    if v3:
        d.update(scoring_func="sigmoid", topk_method="noaux_tc", rope_interleave=m.rope_interleave,
                 num_nextn_predict_layers=m.num_mtp_layers)
    else:
        d.update(topk_method=m.topk_method)
    return d
