"""A sparse config.json loads the model transformers would build: every key it leaves out takes
transformers' default (DeepseekV3Config or DeepseekV2Config by model_type), not one of Eva's."""

import inspect

import pytest

from eva_jax.checkpoints.hf_config import HF_DEFAULTS, model_config_from_hf

transformers = pytest.importorskip("transformers")

CLASSES = {"deepseek_v3": "DeepseekV3Config", "deepseek_v2": "DeepseekV2Config"}
# Only the sizes a small model must state; everything else is left to the defaults.
SPARSE = {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
          "kv_lora_rank": 32, "q_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
          "intermediate_size": 128, "moe_intermediate_size": 32, "n_routed_experts": 16, "num_experts_per_tok": 4}


def transformers_dict(model_type: str, keys: dict) -> dict:
    return getattr(transformers, CLASSES[model_type])(**keys).to_dict()


@pytest.mark.parametrize("model_type", CLASSES)
def test_defaults_are_transformers_defaults(model_type):
    signature = inspect.signature(getattr(transformers, CLASSES[model_type]).__init__).parameters
    for key, value in HF_DEFAULTS[model_type].items():
        assert signature[key].default == value, (model_type, key)


@pytest.mark.parametrize("model_type", CLASSES)
def test_a_sparse_config_loads_what_transformers_builds(model_type):
    ours = model_config_from_hf({"model_type": model_type, **SPARSE})
    assert ours == model_config_from_hf(transformers_dict(model_type, SPARSE))


def test_an_empty_v3_config_is_transformers_default_model():
    """Every key at once: a config.json naming only its model_type is DeepseekV3Config()."""
    assert model_config_from_hf({"model_type": "deepseek_v3"}) == model_config_from_hf(
        transformers_dict("deepseek_v3", {}))


def test_the_v3_values_a_sparse_file_used_to_get_wrong():
    m = model_config_from_hf({"model_type": "deepseek_v3", **SPARSE})
    assert (m.n_group, m.topk_group, m.first_k_dense_replace, m.n_shared_experts, m.routed_scaling_factor,
            m.num_mtp_layers, m.initializer_range) == (8, 4, 3, 1, 2.5, 1, 0.02)
