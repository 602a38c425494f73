"""A training workdir as inference wants it: (Config, params, Tokenizer) of its newest complete checkpoint.
Training writes workdirs and inference reads them; both reach them through here.

Only the parameters are read (an Orbax partial restore of the `params` subtree of the saved TrainState): the
optimizer state is two more copies of the model that generation never needs. The arrays land on one device in
the config's param dtype, whatever mesh wrote them. The workdir is opened read-only, so a server may load a run
that is still training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import orbax.checkpoint as ocp

from eva_jax.api import abstract_params
from eva_jax.config import Config
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.overrides import from_dict, upgrade_record


class NoCheckpoint(FileNotFoundError):
    """A workdir without a finished checkpoint (the serve/generate CLIs turn it into "train first")."""


def newest_step(workdir: Path) -> tuple[ocp.CheckpointManager, int]:
    """The read-only manager of workdir/checkpoints and its newest finalised step (half-written saves are
    Orbax temporaries, which latest_step skips)."""
    root = workdir / "checkpoints"
    step = None
    if root.is_dir():
        options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
        manager = ocp.CheckpointManager(root.resolve(), options=options)
        step = manager.latest_step()
    if step is None:
        raise NoCheckpoint(f"{workdir} holds no completed checkpoint yet (nothing finished in {root}/). Train "
                           f"first: `python -m eva_jax.train --config=NAME --workdir={workdir}` saves one every "
                           f"train.checkpoint_every steps and at the end of the run.")
    return manager, step


def _json_items(manager: ocp.CheckpointManager, step: int, names: list[str]) -> dict[str, Any]:
    """The JSON items among `names` that this step holds (checkpoints without a tokenizer have no item)."""
    present = [n for n in names if (Path(manager.directory) / str(step) / n).exists()]
    if not present:
        return {}
    return dict(manager.restore(step, args=ocp.args.Composite(**{n: ocp.args.JsonRestore() for n in present})))


def _config(items: dict[str, Any], workdir: Path) -> Config:
    record = items.get("config")
    if record is None:  # the step's own record; the workdir's copy holds the latest run's settings
        record = json.loads((workdir / "config.json").read_text())
    return from_dict(Config, upgrade_record(record))


def _tokenizer(items: dict[str, Any], workdir: Path) -> Tokenizer | None:
    record = items.get("tokenizer")
    if record is not None:
        return Tokenizer.from_json(json.dumps(record["tokenizer_json"]), record["chat_template"], record["name"])
    saved = workdir / "tokenizer"
    return Tokenizer.load(saved) if saved.is_dir() else None


def restore_params(manager: ocp.CheckpointManager, step: int, cfg: Config) -> Any:
    """The `params` subtree of the saved TrainState, as single-device jax arrays in cfg's param dtype."""
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = {"params": jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
                                     nn.unbox(abstract_params(cfg)))}
    restore_args = ocp.checkpoint_utils.construct_restore_args(target)
    state = ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True)
    return manager.restore(step, args=ocp.args.Composite(state=state))["state"]["params"]


def load(workdir: str | Path) -> tuple[Config, Any, Tokenizer | None]:
    """(Config, params, tokenizer or None) of the newest complete checkpoint in a training workdir."""
    workdir = Path(workdir)
    manager, step = newest_step(workdir)
    try:
        items = _json_items(manager, step, ["config", "tokenizer"])
        cfg = _config(items, workdir)
        return cfg, restore_params(manager, step, cfg), _tokenizer(items, workdir)
    finally:
        manager.close()
