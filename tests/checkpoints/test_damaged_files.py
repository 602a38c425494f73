"""Damaged Hugging Face checkpoint files are named with what is wrong: invalid JSON in config.json or the
index (with line and column), a truncated .safetensors file, an index listing a shard that is not there —
through from_hf, and through the CLIs as one `error:` line."""

import shutil

import pytest

import eva_jax
from eva_jax.checkpoints.safetensors_io import CheckpointError
from eva_jax.generate import main as generate_main


@pytest.fixture(scope="module")
def sharded(tiny_cfg, tiny_params, tmp_path_factory):
    return eva_jax.to_hf(tiny_cfg, tiny_params, tmp_path_factory.mktemp("sharded"), dtype="float32",
                         max_shard_bytes=100_000)


@pytest.fixture
def copy(sharded, tmp_path):
    return shutil.copytree(sharded, tmp_path / "ckpt")


def test_invalid_config_json_names_the_file_and_the_place(copy):
    text = (copy / "config.json").read_text()
    (copy / "config.json").write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match=rf"{copy / 'config.json'} is not valid JSON: .*at line \d+, column"):
        eva_jax.from_hf(copy)


def test_truncated_safetensors_names_the_file_and_the_sizes(copy):
    shard = sorted(copy.glob("*.safetensors"))[-1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=rf"{shard} is truncated: its header describes [\d,]+ bytes of "
                                              rf"tensor data, the file holds [\d,]+"):
        eva_jax.from_hf(copy)


def test_index_naming_a_missing_shard_and_invalid_index(copy):
    shard = sorted(copy.glob("*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(CheckpointError, match=rf"lists 1 file\(s\) that are not in {copy}, e.g. {shard.name}"):
        eva_jax.from_hf(copy)
    (copy / "model.safetensors.index.json").write_text("{\"weight_map\": ")
    with pytest.raises(CheckpointError, match="model.safetensors.index.json is not valid JSON"):
        eva_jax.from_hf(copy)


def test_generate_cli_says_it_in_one_line(copy, capsys):
    (copy / "config.json").write_text("{")
    assert generate_main(["--checkpoint", str(copy), "--prompt", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {copy / 'config.json'} is not valid JSON"), err
