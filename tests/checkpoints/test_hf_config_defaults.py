"""A sparse config.json loads the model transformers would build: every key it leaves out takes
transformers' default, not one of Eva's."""

import inspect

import pytest

from eva_jax.checkpoints.hf_config import HF_DEFAULTS, model_config_from_hf

transformers = pytest.importorskip("transformers")

SPARSE = {"vocab_size": 512, "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4,
          "kv_lora_rank": 32, "q_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16,
          "intermediate_size": 128, "moe_intermediate_size": 32, "n_routed_experts": 16, "num_experts_per_tok": 4}


@pytest.mark.parametrize("model_type, cls", [("deepseek_v3", "DeepseekV3Config"), ("deepseek_v2", "DeepseekV2Config")])
def test_defaults_are_transformers_defaults(model_type, cls):
    signature = inspect.signature(getattr(transformers, cls).__init__).parameters
    for key, value in HF_DEFAULTS[model_type].items():
        assert signature[key].default == value, (model_type, key)


def test_a_sparse_v3_config_loads_what_transformers_builds():
    ours = model_config_from_hf({"model_type": "deepseek_v3", **SPARSE})
    theirs = model_config_from_hf(transformers.DeepseekV3Config(**SPARSE).to_dict())
    assert ours == theirs
    # The values a sparse file used to get wrong.
    assert (ours.n_group, ours.topk_group, ours.first_k_dense_replace, ours.n_shared_experts,
            ours.routed_scaling_factor, ours.num_mtp_layers) == (8, 4, 3, 1, 2.5, 1)
