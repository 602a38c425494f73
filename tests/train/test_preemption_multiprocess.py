"""Preemption of a two-process run (2 processes × 1 CPU device, gloo): SIGTERM reaches only process 1, as when
one host of a slice gets the notice first. Both processes stop after the same step, the checkpoint of that step
is complete, both exit 143 with the sentence, and the relaunched job resumes with the per-step losses of an
uninterrupted two-process run."""

import signal
import subprocess
from pathlib import Path

import pytest

from eva_jax.parallel.launch import launch
from tests.train.test_resume import (
    ROOT,
    corpus,  # noqa: F401 - the fixture
    env,
    finalized,
    losses,
    wait_for_step,
)

STEPS = 5
SETS = {"train.steps": STEPS, "train.checkpoint_every": 100, "train.eval_every": 100, "train.seq_len": 32,
        "train.micro_batch": 2, "train.batch_start": 4, "train.global_batch": 4, "model.vocab_size": 384,
        "model.remat_policy": "none", "model.num_layers": 2}  # one dense and one MoE layer: less to compile


def start(data: Path, workdir: Path, cache: Path) -> list[subprocess.Popen]:
    argv = ["-m", "eva_jax.train", "--config=v3_tiny", f"--workdir={workdir}", f"--set=data.source={data}",
            *(f"--set={k}={v}" for k, v in SETS.items())]
    # Process 0 compiles each program and hands it to process 1 (on 2 cores, two compiles of one program would
    # halve the speed); the persistent cache is off, since only process 0 would write it and a cache hit there
    # would leave process 1 waiting for a program nobody shares.
    shared = {**env(cache), "JAX_SHARE_BINARY_BETWEEN_HOSTS": "true", "JAX_ENABLE_COMPILATION_CACHE": "false"}
    return launch(argv, processes=2, devices=1, env=shared, cwd=ROOT, stdout=subprocess.PIPE,
                  stderr=subprocess.STDOUT, text=True)


def finish(procs: list[subprocess.Popen]) -> list[tuple[str, int]]:
    """(output, exit status) of each process."""
    return [(p.communicate(timeout=300)[0], p.returncode) for p in procs]


@pytest.mark.slow  # three two-process jobs (~3 min on 2 cores)
def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes_exactly(corpus, tmp_path):  # noqa: F811
    cache = tmp_path / "xla_cache"
    reference = tmp_path / "reference"
    for out, code in finish(start(corpus, reference, cache)):
        assert code == 0, out[-3000:]
    expected = losses(reference)
    assert sorted(expected) == list(range(1, STEPS + 1))

    stopped = tmp_path / "stopped"
    procs = start(corpus, stopped, cache)
    wait_for_step(stopped, 2, procs)
    procs[1].send_signal(signal.SIGTERM)
    results = finish(procs)
    last = max(losses(stopped))
    for out, code in results:
        assert code == 128 + signal.SIGTERM, out[-3000:]
        assert f"stopped by SIGTERM after step {last}; its checkpoint is saved" in out, out[-3000:]
    assert finalized(stopped) == [last] and 2 <= last < STEPS

    for out, code in finish(start(corpus, stopped, cache)):
        assert code == 0 and f"from step {last}" in out, out[-3000:]
    assert losses(stopped) == expected
