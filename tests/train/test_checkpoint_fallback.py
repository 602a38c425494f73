"""A damaged newest checkpoint never bricks a workdir: for each of four damages (a truncated array file, a
deleted _METADATA, an emptied data-state file, a deleted state/), training resumes from the previous step with
the losses of an uninterrupted run, and inference (the loader behind serve and generate) loads the previous
step — each with one warning line naming the step. Only when no step is readable does it stop, in a sentence."""

import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

import eva_jax
from eva_jax.checkpoints import workdir as workdir_reader
from eva_jax.generate import main as generate_cli
from eva_jax.infer.loading import CheckpointNotFound, load_checkpoint
from eva_jax.train.checkpoint import NoReadableCheckpoint
from eva_jax.train.loop import run

RUN = {"train.steps": 4, "train.checkpoint_every": 2, "train.keep_checkpoints": 3, "train.eval_batches": 0,
       "train.seq_len": 32, "train.micro_batch": 2, "train.batch_start": 2, "train.global_batch": 2,
       "model.num_layers": 2, "model.num_mtp_layers": 0, "data.bpe_train_bytes": 20_000}
pytestmark = [pytest.mark.filterwarnings("ignore:train.micro_batch"),
              # Orbax's async reader of the truncated file reports after its event loop has closed.
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


def truncate_arrays(step: Path) -> None:
    for path in (step / "state").rglob("d/*"):
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGES = {
    "truncated array file": truncate_arrays,
    "deleted _METADATA": lambda step: (step / "state" / "_METADATA").unlink(),
    "emptied data state": lambda step: (step / "data" / "metadata").write_text(""),
    "deleted state/": lambda step: shutil.rmtree(step / "state"),
}


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
    """The resumed runs compile the same train step as the first: a persistent cache serves them."""
    from jax._src import compilation_cache as cc

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = [getattr(jax.config, n) for n in names]
    jax.config.update(names[0], str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update(names[1], 0.0)
    cc.reset_cache()
    yield
    for n, v in zip(names, before):
        jax.config.update(n, v)
    cc.reset_cache()


@pytest.fixture(scope="module")
def uninterrupted(compilation_cache, tmp_path_factory):
    corpus = tmp_path_factory.mktemp("corpus")
    for i in range(40):
        (corpus / f"mod_{i}.py").write_text(f"def f_{i}(x):\n    return x * {i} + {i % 7}\n" * (3 + i % 5))
    cfg = eva_jax.load_config("v3_tiny", **{**RUN, "data.source": str(corpus)})
    workdir = tmp_path_factory.mktemp("run")
    result = run(cfg, workdir)
    manager, steps = workdir_reader.completed_steps(workdir)
    step2 = jax.device_get(workdir_reader.restore_params(manager, 2, cfg))
    manager.close()
    assert steps == [4, 2]
    return cfg, workdir, [r["loss"] for r in result.history], step2


def damaged_copy(workdir: Path, where: Path, damage: str) -> Path:
    copy = where / "run"
    shutil.copytree(workdir, copy)
    DAMAGES[damage](copy / "checkpoints" / "4")
    return copy


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_training_resumes_from_the_previous_step(uninterrupted, tmp_path, damage, capsys):
    cfg, workdir, losses, _ = uninterrupted
    copy = damaged_copy(workdir, tmp_path, damage)
    resumed = run(cfg, copy)
    out = capsys.readouterr().out
    assert out.count("warning: checkpoint step 4") == 1 and "resuming" in out and "from step 2" in out
    assert [r["step"] for r in resumed.history] == [3, 4]
    assert [r["loss"] for r in resumed.history] == losses[2:]  # exactly the uninterrupted run's
    assert (copy / "damaged_checkpoints" / "4").is_dir()  # kept for a post-mortem, out of the way


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_inference_loads_the_previous_step(uninterrupted, tmp_path, damage, capsys):
    cfg, workdir, _, step2 = uninterrupted
    copy = damaged_copy(workdir, tmp_path, damage)
    got_cfg, params, tokenizer = load_checkpoint(copy)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"warning: {copy}: checkpoint step 4 is unreadable (")
    assert got_cfg == cfg and tokenizer is not None
    for want, got in zip(jax.tree.leaves(step2), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(got), want)


def test_generate_uses_the_previous_step_with_one_warning(uninterrupted, tmp_path, capsys):
    copy = damaged_copy(uninterrupted[1], tmp_path, "deleted state/")
    assert generate_cli([f"--checkpoint={copy}", "--prompt=def f_3(x):", "--max-tokens=4"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning:") == 1 and captured.out.strip()


def test_with_no_readable_step_it_stops_in_a_sentence(uninterrupted, tmp_path):
    cfg, workdir, _, _ = uninterrupted
    copy = damaged_copy(workdir, tmp_path, "deleted state/")
    shutil.rmtree(copy / "checkpoints" / "2" / "state")
    with pytest.raises(CheckpointNotFound, match="no checkpoint is readable: step 4 .*; step 2 "):
        load_checkpoint(copy)
    with pytest.raises(NoReadableCheckpoint, match="no checkpoint in .* is readable"):
        run(cfg, copy)
