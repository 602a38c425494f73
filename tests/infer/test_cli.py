"""Checkpoint loading, `python -m eva_jax.generate`, `python -m eva_jax.serve` without a checkpoint, and the
module/function pair behind the name `eva_jax.generate`."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import eva_jax
from eva_jax.infer.api import generate
from eva_jax.infer.loading import CheckpointNotFound, default_checkpoint, load_checkpoint
from tests.infer.conftest import ENGINE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoint(main_model, tokenizer, tmp_path_factory):
    cfg, params = main_model
    directory = tmp_path_factory.mktemp("ckpt")
    eva_jax.to_hf(cfg, params, directory, dtype="float32")
    tokenizer.save(directory)
    return directory


def test_load_checkpoint_reads_weights_and_tokenizer(checkpoint, main_model, tokenizer):
    cfg, params, tok = load_checkpoint(checkpoint)
    assert cfg.model.vocab_size == main_model[0].model.vocab_size and tok.vocab_size == tokenizer.vocab_size
    np.testing.assert_array_equal(np.asarray(params["embed"]), np.asarray(main_model[1]["embed"]))
    assert tok.encode("hello world") == tokenizer.encode("hello world")


def test_loader_errors_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(CheckpointNotFound, match="not a directory"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointNotFound, match="neither a Hugging Face checkpoint"):
        load_checkpoint(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointNotFound, match="no completed checkpoint yet.*Train first"):
        load_checkpoint(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFound, match="python -m eva_jax.train"):
        default_checkpoint()


def test_the_generate_module_forwards_to_the_function(main_model):
    import eva_jax.generate as module  # binds `generate` on the package to the module: it must stay callable

    cfg, params = main_model
    prompts = [[5, 6, 7], [9]]
    assert module(cfg, params, prompts, 5, engine_config=ENGINE) == generate(cfg, params, prompts, 5,
                                                                             engine_config=ENGINE)
    assert callable(eva_jax.generate)


def _run(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_serve_without_a_checkpoint_says_how_to_make_one(tmp_path):
    out = _run("eva_jax.serve", cwd=tmp_path)
    assert out.returncode == 2 and "python -m eva_jax.train" in out.stderr and "--checkpoint" in out.stderr


@pytest.mark.slow  # a fresh process compiles its own steps (~20 s)
def test_generate_cli_prints_what_the_api_gives(checkpoint, main_model, tokenizer):
    out = _run("eva_jax.generate", "--checkpoint", str(checkpoint), "--prompt", "hello world", "--max-tokens", "8")
    assert out.returncode == 0, out.stderr
    cfg, params = main_model
    ids = generate(cfg, params, [tokenizer.encode("hello world")], 8, stop_tokens=(tokenizer.eos_id,))[0]
    assert out.stdout.rstrip("\n") == tokenizer.decode([t for t in ids if t != tokenizer.eos_id])
