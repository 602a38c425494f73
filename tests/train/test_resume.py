"""Exact resume: a run killed with SIGKILL (between saves, and right as a save starts) and restarted produces
the same per-step losses as an uninterrupted run, restarts from its last complete checkpoint, and never picks
up a half-written one. Preemption loses nothing: Ctrl-C (SIGINT) at a step with no save due finishes the step,
saves it, exits 130 with a sentence, and the re-run resumes from it with the same losses (SIGTERM, on two
processes: test_preemption_multiprocess.py). One uninterrupted reference run serves both."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STEPS = 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for i in range(40):
        (root / f"mod_{i}.py").write_text(f"def f_{i}(x):\n    return x * {i} + {i % 7}\n" * (3 + i % 5))
    return root


def command(corpus: Path, workdir: Path) -> list[str]:
    sets = {"train.steps": STEPS, "train.checkpoint_every": 2, "train.eval_every": 4, "train.seq_len": 32,
            "train.micro_batch": 2, "train.batch_start": 2, "train.global_batch": 4, "model.vocab_size": 384,
            "data.source": str(corpus), "model.remat_policy": "none"}
    args = [sys.executable, "-m", "eva_jax.train", "--config=v3_tiny", f"--workdir={workdir}"]
    return args + [f"--set={k}={v}" for k, v in sets.items()]


def env(cache: Path) -> dict:
    # A shared persistent compilation cache: the restarted processes reuse the first one's executables. One
    # device (not the test session's 8 simulated ones): resume is about the loop, not the mesh.
    return {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def saves_in_flight(workdir: Path) -> list[str]:
    root = workdir / "checkpoints"
    return [p.name for p in root.glob("*.orbax-checkpoint-tmp*")] if root.exists() else []


def finalized(workdir: Path) -> list[int]:
    root = workdir / "checkpoints"
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.exists() else []


def run(cmd, cache: Path, kill_when=None, timeout: float = 300.0) -> tuple[str, object]:
    """Runs the CLI; SIGKILLs it as soon as `kill_when(workdir)` returns something truthy, which is returned."""
    workdir = Path(cmd[4].split("=", 1)[1])
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env(cache))
    deadline, seen = time.monotonic() + timeout, None
    while kill_when is not None and proc.poll() is None and time.monotonic() < deadline:
        seen = kill_when(workdir)
        if seen:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    if kill_when is None:
        assert proc.returncode == 0, out
    return out, seen


def losses(workdir: Path) -> dict[int, float]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip().endswith("}")]
    return {r["step"]: r["loss"] for r in records}


def wait_for_step(workdir: Path, step: int, procs: list, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if max(losses(workdir), default=0) >= step:
            return
        if any(p.poll() is not None for p in procs):
            raise AssertionError("the run ended before the signal: " + procs[0].communicate()[0])
        time.sleep(0.01)
    raise AssertionError(f"step {step} not reached in {timeout} s")


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """(compilation cache, per-step losses) of the uninterrupted run."""
    cache = tmp_path_factory.mktemp("xla_cache")
    workdir = tmp_path_factory.mktemp("reference")
    run(command(corpus, workdir), cache)
    expected = losses(workdir)
    assert sorted(expected) == list(range(1, STEPS + 1))
    return cache, expected


@pytest.mark.slow  # two training processes after the reference
def test_killed_and_resumed_run_matches_uninterrupted(corpus, reference, tmp_path):
    cache, expected = reference

    killed = tmp_path / "killed"
    # Kill while the save of step 4 or later is being written (a temporary directory exists).
    _, in_flight = run(command(corpus, killed), cache,
                       kill_when=lambda w: [n for n in saves_in_flight(w) if int(n.split(".")[0]) >= 4])
    assert in_flight, "the run finished before a save could be interrupted"
    complete = finalized(killed)
    assert complete and max(complete) >= 2
    # What a killed save leaves behind must never be restored; plant one more for good measure.
    planted = killed / "checkpoints" / f"{STEPS}.orbax-checkpoint-tmp-1"
    planted.mkdir(parents=True, exist_ok=True)
    (planted / "state").write_text("garbage")
    out, _ = run(command(corpus, killed), cache)
    # It resumes from the newest complete save: only the steps after it are lost (and recomputed).
    assert f"from step {max(complete)}" in out, out
    got = losses(killed)
    assert sorted(got) == list(range(1, STEPS + 1))  # one line per step: the replayed steps were rewritten
    assert got == expected  # bit-identical per-step losses


@pytest.mark.slow  # two training processes after the reference
def test_ctrl_c_saves_the_last_step_and_the_rerun_resumes_exactly(corpus, reference, tmp_path):
    cache, expected = reference
    stopped, no_save_due = tmp_path / "stopped", "--set=train.checkpoint_every=100"
    proc = subprocess.Popen([*command(corpus, stopped), no_save_due], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env(cache))
    wait_for_step(stopped, 3, [proc])
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGINT, out
    last = max(losses(stopped))
    assert f"stopped by SIGINT after step {last}; its checkpoint is saved" in out
    assert finalized(stopped) == [last] and 3 <= last < STEPS
    out, _ = run([*command(corpus, stopped), no_save_due], cache)
    assert f"from step {last}" in out
    assert losses(stopped) == expected
