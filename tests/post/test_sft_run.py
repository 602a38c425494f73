"""SFT end to end from a Hugging Face checkpoint directory: `python -m eva_jax.sft` trains 2 epochs with
DeepSeek's schedule shape (cosine from the peak to the floor), lowers the answer loss, saves a workdir that
generate loads, resumes exactly after losing its newest checkpoint, and answers bad input with one sentence."""

import json
import shutil

import numpy as np
import pytest

from eva_jax.post.sft import prepare, sft, sft_config, steps_for
from eva_jax.sft import main
from tests.post.conftest import sums, write_jsonl

SETS = ["train.seq_len=63", "train.global_batch=4", "train.micro_batch=2", "train.checkpoint_every=2",
        "train.eval_every=100", "optim.lr_peak=3e-3", "optim.lr_decayed=3e-4", "data.heldout_fraction=0.1"]


def records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(hf_init, tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    data = write_jsonl(root / "sums.jsonl", sums(100))
    workdir = root / "run"
    code = main(["--init", str(hf_init), "--data", data, "--workdir", str(workdir),
                 *(f"--set={s}" for s in SETS)])
    return code, data, workdir


def test_two_epochs_with_the_cosine_schedule_and_a_falling_loss(finished, hf_init, sft_tokenizer, capsys):
    code, data, workdir = finished
    assert code == 0
    rows = records(workdir)
    from eva_jax.infer.loading import load_checkpoint
    cfg = sft_config(load_checkpoint(hf_init)[0], dict(s.split("=") for s in SETS))
    expected_steps = steps_for(prepare(cfg, sft_tokenizer, data, 2), cfg)
    assert [r["step"] for r in rows] == list(range(1, expected_steps + 1))
    n = len(rows)  # a cosine from the peak to the floor, each step's rate taken after its tokens
    cosine = [3e-4 + (3e-3 - 3e-4) * 0.5 * (1 + np.cos(np.pi * k / n)) for k in range(1, n + 1)]
    np.testing.assert_allclose([r["lr"] for r in rows], cosine, rtol=1e-5)
    assert all(r["batch"] == 4 for r in rows)  # no ramp
    assert np.mean([r["loss"] for r in rows[-3:]]) < 0.8 * np.mean([r["loss"] for r in rows[:3]])
    assert "heldout_loss" in rows[-1]


def test_the_workdir_generates_and_holds_the_tokenizer(finished, sft_tokenizer):
    from eva_jax.infer.loading import load_checkpoint
    _, _, workdir = finished
    cfg, params, tokenizer = load_checkpoint(workdir)
    assert tokenizer is not None and tokenizer.encode("What is 1 + 2?") == sft_tokenizer.encode("What is 1 + 2?")


def test_losing_the_newest_checkpoint_resumes_exactly(finished, hf_init, tmp_path):
    _, data, workdir = finished
    copy = shutil.copytree(workdir, tmp_path / "run")
    steps = sorted(int(p.name) for p in (copy / "checkpoints").iterdir() if p.name.isdigit())
    shutil.rmtree(copy / "checkpoints" / str(steps[-1]))
    result = sft(hf_init, data, sets=dict(s.split("=") for s in SETS), workdir=copy)
    again = {r["step"]: r["loss"] for r in result.history}
    original = {r["step"]: r["loss"] for r in records(workdir)}
    assert min(again) == steps[-2] + 1 and again == {k: original[k] for k in again}


def test_bad_input_is_one_sentence(hf_init, tmp_path, capsys):
    assert main(["--init", str(tmp_path / "nothing"), "--data", "x.jsonl"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'nothing'} is not a directory")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "completion": ""}) + "\n")
    assert main(["--init", str(hf_init), "--data", str(bad), "--workdir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {bad}:1: there is no assistant answer to learn (empty or missing)"]
    assert not (tmp_path / "w" / "checkpoints").exists()  # nothing half-trained
