"""Sharding rules: the golden v3_671b layout, ZeRO-1 and FSDP specs, mesh sizing and the indivisible error."""

import os
from pathlib import Path

import jax
import pytest
from jax.sharding import PartitionSpec as P

import eva_jax
from eva_jax.config import ConfigError
from eva_jax.parallel import rules
from eva_jax.parallel.mesh import abstract_mesh, ici_shape, make_mesh, resolve_shape
from eva_jax.train.layout_report import sharding_listing

GOLDEN = Path(__file__).parent / "golden" / "v3_671b_sharding.txt"


def test_golden_v3_671b_sharding():
    """The reference layout (data=4 × expert=64, ZeRO-1). Regenerate deliberately with UPDATE_GOLDEN=1."""
    text = sharding_listing(eva_jax.load_config("v3_671b"), 256)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "sharding layout changed; rerun with UPDATE_GOLDEN=1 if intended"
    lines = {line.split()[1] + ":" + line.split()[0]: line.split(None, 4)[4] for line in text.splitlines()
             if not line.startswith("#")}
    # DeepSeek's deployment: experts over `expert`, dense weights replicated, optimizer state ZeRO-1.
    assert lines["moe_layers/moe/experts_gate:param"] == "(-, expert, -, -)"
    assert lines["moe_layers/attn/wq_b:param"] == "(-, -, -, -)"
    opt = [v for k, v in lines.items() if k.endswith("moe_layers/moe/experts_gate:opt")]
    assert opt and all(v == "(-, expert, data, -)" for v in opt)  # mu and nu
    opt_dense = [v for k, v in lines.items() if k.endswith("dense_layers/mlp/gate:opt")]
    assert opt_dense and all("data+expert" in v for v in opt_dense)


def test_fsdp_rules_shard_every_large_parameter():
    cfg = eva_jax.load_config("v3_671b", **{"mesh.rules": "fsdp", "mesh.fsdp": 4})
    specs = dict(rules.flat_specs(rules.param_specs(cfg, abstract_mesh(cfg.mesh, 256), eva_jax.abstract_params(cfg))))
    assert specs["moe_layers/moe/experts_gate"] == P(None, "expert", "fsdp", None)
    assert specs["embed"] == P(None, ("fsdp", "expert"))
    assert specs["moe_layers/attn/wq_b"] == P(None, ("fsdp", "expert"), None, None)


def test_indivisible_dimension_names_parameter_dimension_and_axes():
    cfg = eva_jax.load_config("v3_tiny", **{"model.n_routed_experts": 12, "model.n_group": 4,
                                            "mesh.data": 1, "mesh.expert": 8})
    with pytest.raises(rules.ShardingError) as err:
        rules.param_specs(cfg, make_mesh(cfg.mesh), eva_jax.abstract_params(cfg))
    message = str(err.value)
    assert "moe_layers/moe/experts_down: dimension 1 ('expert', size 12)" in message
    assert "mesh axes (expert=8) of total size 8" in message


def test_zero1_splits_over_free_data_axes():
    mesh = abstract_mesh(eva_jax.load_config("v3_671b").mesh, 256)
    assert rules.zero1_spec(P(None, "expert", None, None), (58, 256, 7168, 2048), mesh) == \
        P(None, "expert", "data", None)
    assert rules.zero1_spec(P(), (7, 5), mesh) == P(None, None)  # nothing divisible: stays replicated


def test_mesh_sizes_fill_and_errors():
    cfg = eva_jax.load_config("v3_tiny", **{"mesh.expert": 4})
    assert resolve_shape(cfg.mesh, 8) == {"data": 2, "fsdp": 1, "expert": 4, "tensor": 1, "pipeline": 1}
    with pytest.raises(ConfigError, match="cannot fill 6 devices"):
        resolve_shape(cfg.mesh, 6)
    with pytest.raises(ConfigError, match="only one mesh axis may be -1"):
        eva_jax.load_config("v3_tiny", **{"mesh.fsdp": -1})
    mesh = make_mesh(cfg.mesh)
    assert mesh.axis_names == ("data", "fsdp", "expert", "tensor", "pipeline") and mesh.devices.size == 8
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    # Multi-slice: 2 slices across the outer data axis, 4 chips each.
    sliced = eva_jax.load_config("v3_tiny", **{"mesh.dcn_data": 2, "mesh.expert": 4}).mesh
    assert ici_shape(resolve_shape(sliced, 8), sliced.dcn_shape) == \
        {"data": 1, "fsdp": 1, "expert": 4, "tensor": 1, "pipeline": 1}
