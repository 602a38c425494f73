"""Two processes × 4 CPU devices (gloo) train 3 steps with expert parallelism across the processes, with the
losses of one process × 8 devices; their checkpoint restores in this single process on a different mesh."""

import json
import os
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest

from eva_jax.parallel.launch import launch
from eva_jax.parallel.mesh import make_mesh
from eva_jax.train.checkpoint import RunCheckpoints
from eva_jax.train.state_sharding import state_shardings
from tests.parallel.multiprocess_common import STEPS, config, optimizer, train

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_processes_equal_one_and_checkpoint_moves_mesh(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    procs = launch(["-m", "tests.parallel.multiprocess_worker", str(tmp_path)], processes=2, devices=4, env=env,
                   cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The single-process reference trains meanwhile, on this process's 8 devices and the same mesh shape.
    cfg = config(data=1, expert=8)
    ref_losses, ref_state = train(cfg, make_mesh(cfg.mesh))
    for p in procs:
        output, _ = p.communicate(timeout=600)
        assert p.returncode == 0, output[-3000:]
    for i in range(2):
        losses = json.loads((tmp_path / f"losses_{i}.json").read_text())
        np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    assert len(ref_losses) == STEPS and ref_losses[-1] < ref_losses[0]

    # Restore on another mesh and rules: FSDP over all 8 devices of this one process.
    other = config(data=1, fsdp=8, rules="fsdp")
    mesh = make_mesh(other.mesh)
    shardings, abstract = state_shardings(other, mesh, optimizer(other))
    checkpoints = RunCheckpoints(tmp_path / "checkpoints", 2)
    restored, data_state, meta = checkpoints.restore(STEPS, abstract, shardings)
    checkpoints.close()
    assert meta == {"step": STEPS} and data_state == {"process": 0}
    gate = restored.params["moe_layers"]["moe"]["experts_gate"]
    assert gate.sharding.spec == shardings.params["moe_layers"]["moe"]["experts_gate"].spec
    assert "fsdp" in str(gate.sharding.spec)
    saved = np.load(tmp_path / "state.npz")
    leaves = jax.tree_util.tree_leaves(jax.device_get(restored))
    assert len(leaves) == len(saved.files) == len(jax.tree_util.tree_leaves(ref_state))
    for i, leaf in enumerate(leaves):
        np.testing.assert_array_equal(leaf, saved[f"arr_{i}"])  # exactly what the two processes held
