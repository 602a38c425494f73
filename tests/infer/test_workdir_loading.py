"""A training workdir serves as a checkpoint: a real two-step run (parameters sharded over two devices) loads
back through eva_jax.infer.loading with the run's exact final parameters, config and tokenizer; generation from
it (API and CLI) equals generation from the run's own parameters; a run with nothing saved yet gets a sentence
that names the directory and says to train first."""

import shutil

import jax
import numpy as np
import pytest

import eva_jax
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.infer.api import generate
from eva_jax.infer.loading import CheckpointNotFound, default_checkpoint, load_checkpoint

# The fastest honest run: one MoE and one dense layer, no MTP, no held-out batches (no eval compile), a small
# BPE; FSDP over two of the eight simulated devices, so the checkpoint holds genuinely sharded parameters.
RUN = {"train.steps": 2, "train.checkpoint_every": 2, "train.eval_batches": 0, "train.seq_len": 32,
       "train.micro_batch": 2, "train.batch_start": 2, "train.global_batch": 2, "model.vocab_size": 320,
       "model.num_layers": 2, "model.num_mtp_layers": 0, "data.bpe_train_bytes": 20_000,
       "mesh.rules": "fsdp", "mesh.fsdp": 2}
PROMPT, NEW = "def f_3(x):", 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from eva_jax.train.loop import run

    corpus = tmp_path_factory.mktemp("corpus")
    for i in range(40):
        (corpus / f"mod_{i}.py").write_text(f"def f_{i}(x):\n    return x * {i} + {i % 7}\n" * (3 + i % 5))
    cfg = eva_jax.load_config("v3_tiny", **{**RUN, "data.source": str(corpus)})
    workdir = tmp_path_factory.mktemp("run")
    with pytest.warns(UserWarning, match="training on 2"):
        result = run(cfg, workdir)
    assert any(len(leaf.sharding.device_set) == 2 for leaf in jax.tree.leaves(result.state.params))
    return cfg, jax.device_get(result.state.params), workdir


@pytest.fixture(scope="module")
def loaded(trained):
    return load_checkpoint(trained[2])


def test_workdir_loads_the_final_state_on_one_device(trained, loaded):
    cfg, params, workdir = trained
    got_cfg, got, tokenizer = loaded
    assert got_cfg == cfg
    assert jax.tree.structure(got) == jax.tree.structure(params)
    for want, leaf in zip(jax.tree.leaves(params), jax.tree.leaves(got)):
        assert isinstance(leaf, jax.Array) and leaf.dtype == np.dtype(cfg.compute.param_dtype)
        assert leaf.sharding.device_set == {jax.devices()[0]}
        np.testing.assert_array_equal(np.asarray(leaf), want)
    used = Tokenizer.load(workdir / "tokenizer")  # the tokenizer the run trained and used
    assert (tokenizer.name, tokenizer.chat_template, tokenizer.vocab_size) == (used.name, used.chat_template,
                                                                              used.vocab_size)
    text = "def f_12(x):\n    return x * 12 + 5\n"
    assert tokenizer.encode(text) == used.encode(text) and tokenizer.decode(used.encode(text, bos=False)) == text


def test_generation_from_the_workdir_equals_the_runs(trained, loaded, capsys):
    from eva_jax.generate import main

    cfg, params, workdir = trained
    got_cfg, got, tokenizer = loaded
    prompt = tokenizer.encode(PROMPT)
    stop = (tokenizer.eos_id,)
    want = generate(cfg, params, [prompt], NEW, stop_tokens=stop)
    assert generate(got_cfg, got, [prompt], NEW, stop_tokens=stop) == want and want[0]
    # The CLI in this process (same shapes as above, so no new compile).
    assert main(["--checkpoint", str(workdir), "--prompt", PROMPT, "--max-tokens", str(NEW)]) == 0
    assert capsys.readouterr().out.rstrip("\n") == tokenizer.decode([t for t in want[0] if t not in stop])


def test_the_default_workdir_is_what_serve_loads(trained, tmp_path, monkeypatch):
    (tmp_path / "workdirs").mkdir()
    (tmp_path / "workdirs" / "v3_small").symlink_to(trained[2], target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    cfg, params, _ = load_checkpoint(default_checkpoint())
    assert cfg == trained[0]
    np.testing.assert_array_equal(np.asarray(params["embed"]), trained[1]["embed"])


def test_a_run_without_a_completed_checkpoint_says_to_train_first(trained, tmp_path, capsys):
    from eva_jax.generate import main

    started = tmp_path / "started"  # a run that wrote its config and is mid-way through its first save
    started.mkdir()
    shutil.copy(trained[2] / "config.json", started / "config.json")
    (started / "checkpoints" / "2.orbax-checkpoint-tmp-1").mkdir(parents=True)
    with pytest.raises(CheckpointNotFound, match="no completed checkpoint.*Train first"):
        load_checkpoint(started)
    shutil.rmtree(started / "checkpoints")  # killed before it made its checkpoint directory
    with pytest.raises(CheckpointNotFound, match=f"{started}.*python -m eva_jax.train"):
        load_checkpoint(started)
    assert main(["--checkpoint", str(started), "--prompt", PROMPT]) == 2
    assert f"{started} holds no completed checkpoint" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFound, match="neither a Hugging Face checkpoint"):
        load_checkpoint(tmp_path / "empty")
