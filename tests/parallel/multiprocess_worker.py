"""One process of the 2-process job of test_multiprocess.py: trains 3 steps, checkpoints, writes its losses."""

import json
import sys
from pathlib import Path

from eva_jax.parallel import distributed

distributed.initialize()

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

from eva_jax.parallel.mesh import make_mesh  # noqa: E402
from eva_jax.train.checkpoint import RunCheckpoints  # noqa: E402
from tests.parallel.multiprocess_common import config, train  # noqa: E402

out = Path(sys.argv[1])
cfg = config(data=1, expert=8)
mesh = make_mesh(cfg.mesh)
assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
losses, state = train(cfg, mesh)
checkpoints = RunCheckpoints(out / "checkpoints", 2)
checkpoints.save(len(losses), state, {"process": jax.process_index()}, {"step": len(losses)}, None, cfg)
checkpoints.close()
(out / f"losses_{jax.process_index()}.json").write_text(json.dumps(losses))
# The whole trained state as numpy (gathered across the processes), to check the restore bit for bit.
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

gathered = multihost_utils.process_allgather(state, tiled=True)
if jax.process_index() == 0:
    np.savez(out / "state.npz", *jax.tree_util.tree_leaves(gathered))
