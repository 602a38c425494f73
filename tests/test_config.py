"""Configs: named resolution, dotted overrides, validation sentences, HF config.json round trips."""

import dataclasses

import pytest

import eva_jax
from eva_jax.checkpoints.hf_config import model_config_from_hf, model_config_to_hf
from eva_jax.config import ConfigError


@pytest.mark.parametrize("name", ["v3_671b", "v2_lite", "v3_small", "v3_tiny"])
def test_named_configs_resolve(name):
    cfg = eva_jax.load_config(name)
    assert cfg.name == name
    assert dataclasses.is_dataclass(cfg.model)


def test_configs_are_frozen():
    cfg = eva_jax.load_config("v3_tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.num_layers = 5


def test_dotted_overrides_parse_strings_and_values():
    cfg = eva_jax.load_config("v3_tiny", **{"model.num_layers": 4, "model.q_lora_rank": "null",
                                            "model.routed_scaling_factor": "1.5", "model.rope_interleave": "false"})
    assert (cfg.model.num_layers, cfg.model.q_lora_rank) == (4, None)
    assert cfg.model.routed_scaling_factor == 1.5 and cfg.model.rope_interleave is False
    nested = eva_jax.load_config("v3_671b", **{"model.rope_scaling.factor": "20"})
    assert nested.model.rope_scaling.factor == 20.0


def test_v3_small_is_cpu_sized():
    counts = eva_jax.param_counts(eva_jax.load_config("v3_small"))
    assert 50e6 <= counts["total"] + counts["mtp"] <= 150e6


@pytest.mark.parametrize("overrides, sentence", [
    ({"model.n_routed_experts": 100, "model.n_group": 8}, "n_routed_experts=100 is not divisible by n_group=8"),
    ({"model.num_experts_per_tok": 5}, "num_experts_per_tok=5 is larger than the 4 experts"),
    ({"model.topk_group": 5}, "topk_group=5 is larger than n_group=4"),
    ({"model.first_k_dense_replace": 9}, "first_k_dense_replace=9 must lie in [0, num_layers=3]"),
    ({"model.qk_rope_head_dim": 7}, "qk_rope_head_dim=7 must be even"),
    ({"model.dtype": "float8"}, "compute.dtype='float8': expected one of"),
    ({"model.num_layers": "four"}, "model.num_layers='four': expected an integer"),
    ({"model.nonsense": 1}, "unknown config key 'model.nonsense'"),
    ({"model.rope_scaling.factor": 2}, "rope_scaling is None"),
])
def test_impossible_configs_are_explained(overrides, sentence):
    with pytest.raises(ConfigError) as err:
        eva_jax.load_config("v3_tiny", **overrides)
    assert sentence in str(err.value)


def test_unknown_config_name_lists_known_ones():
    with pytest.raises(ConfigError, match="known configs: v2_lite, v3_671b, v3_small, v3_tiny"):
        eva_jax.load_config("v4")


@pytest.mark.parametrize("name", ["v3_671b", "v2_lite", "v3_tiny"])
def test_hf_config_round_trip(name):
    model = eva_jax.load_config(name).model
    back = model_config_from_hf(model_config_to_hf(model))
    assert back == dataclasses.replace(model, initializer_range=back.initializer_range)


def test_published_v3_config_json_reads_as_v3_671b():
    published = {  # the fields of DeepSeek-V3's config.json (reference §1.1)
        "model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
        "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_nextn_predict_layers": 1,
        "num_attention_heads": 128, "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
        "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64,
        "v_head_dim": 128, "qk_nope_head_dim": 128, "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4,
        "num_experts_per_tok": 8, "moe_layer_freq": 1, "first_k_dense_replace": 3, "norm_topk_prob": True,
        "scoring_func": "sigmoid", "hidden_act": "silu", "max_position_embeddings": 163840, "rms_norm_eps": 1e-06,
        "rope_theta": 10000, "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                                              "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                                              "type": "yarn"},
        "tie_word_embeddings": False, "bos_token_id": 0, "eos_token_id": 1, "initializer_range": 0.02,
        "attention_bias": False,
    }
    ours = eva_jax.load_config("v3_671b").model
    assert model_config_from_hf(published) == dataclasses.replace(ours, initializer_range=0.02)


@pytest.mark.parametrize("change, sentence", [
    ({"model_type": "llama"}, "unsupported model_type 'llama'"),
    ({"tie_word_embeddings": True}, "tie_word_embeddings=true is not supported"),
    ({"hidden_size": None}, "model.hidden_size=None must be a positive integer"),
])
def test_bad_hf_configs_are_explained(change, sentence):
    d = {**model_config_to_hf(eva_jax.load_config("v3_tiny").model), **change}
    with pytest.raises(ConfigError) as err:
        model_config_from_hf(d)
    assert sentence in str(err.value)
