"""The config's sections: ModelConfig is the architecture, ComputeConfig the execution choices; overrides of one
section are validated together; the `model.<execution field>` names of older configs keep working."""

import dataclasses
import json

import pytest

import eva_jax
from eva_jax.checkpoints.hf_config import model_config_from_hf, model_config_to_hf
from eva_jax.config import ComputeConfig, Config, ConfigError, ModelConfig
from eva_jax.overrides import ALIASES, from_dict, upgrade_record


def test_architecture_and_execution_are_disjoint_sections():
    model = {f.name for f in dataclasses.fields(ModelConfig)}
    compute = {f.name for f in dataclasses.fields(ComputeConfig)}
    assert not model & compute
    assert {"dtype", "param_dtype", "remat_policy", "moe_impl", "attention_impl", "matmul", "kernel_interpret",
            "attention_chunk", "scan_unroll"} <= compute


@pytest.mark.parametrize("name", ["v3_671b", "v2_lite", "v3_small", "v3_tiny"])
def test_model_section_is_exactly_what_config_json_holds(name):
    model = eva_jax.load_config(name).model
    assert model_config_from_hf(json.loads(json.dumps(model_config_to_hf(model)))) == model


def test_fields_validated_together_may_be_changed_together():
    base = eva_jax.load_config("v3_tiny")
    big = base.train.global_batch * 2
    with pytest.raises(ConfigError, match="train.batch_start=.* exceeds train.global_batch"):
        eva_jax.load_config("v3_tiny", **{"train.batch_start": big})
    for order in ({"train.batch_start": big, "train.global_batch": big},
                  {"train.global_batch": big, "train.batch_start": big}):
        cfg = eva_jax.load_config("v3_tiny", **order)
        assert (cfg.train.batch_start, cfg.train.global_batch) == (big, big)


def test_model_names_of_execution_fields_are_aliases_of_compute():
    cfg = eva_jax.load_config("v3_tiny", **{"model.matmul": "fp8", "model.attention_chunk": "64",
                                            "compute.remat_policy": "full"})
    assert (cfg.compute.matmul, cfg.compute.attention_chunk, cfg.compute.remat_policy) == ("fp8", 64, "full")
    assert cfg.model == eva_jax.load_config("v3_tiny").model
    assert ALIASES["model.moe_impl"] == "compute.moe_impl"
    with pytest.raises(ConfigError, match="compute.matmul"):
        eva_jax.load_config("v3_tiny", **{"model.matmul": "int4"})


def test_a_record_from_before_the_split_loads_with_the_same_settings():
    cfg = eva_jax.load_config("v3_tiny", **{"compute.dtype": "bfloat16", "compute.attention_chunk": 32})
    record = json.loads(json.dumps(dataclasses.asdict(cfg)))
    compute = record.pop("compute")
    old = {**record, "model": {**record["model"], **compute}}
    assert "compute" not in old and old["model"]["attention_chunk"] == 32
    assert from_dict(Config, upgrade_record(old)) == cfg
    current = {**record, "compute": compute}
    assert upgrade_record(current) is current  # a current record is left alone
