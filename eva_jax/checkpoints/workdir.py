"""A training workdir as inference wants it: (Config, params, Tokenizer) of its newest complete checkpoint.
Training writes workdirs and inference reads them; both reach them through here.

Only the parameters are read (an Orbax partial restore of the `params` subtree of the saved TrainState): the
optimizer state is two more copies of the model that generation never needs. The arrays land on one device in
the config's param dtype, whatever mesh wrote them. The workdir is opened read-only, so a server may load a run
that is still training.
"""

from __future__ import annotations

import json
import sys
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


class NonFinite(ValueError):
    """A checkpoint whose parameters hold NaN or infinity: generating from it would emit garbage."""


def completed_steps(workdir: Path) -> tuple[ocp.CheckpointManager, list[int]]:
    """The read-only manager of workdir/checkpoints and its finalised steps, newest first (half-written saves
    are Orbax temporaries, which it skips)."""
    root = workdir / "checkpoints"
    steps: list[int] = []
    if root.is_dir():
        options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
        manager = ocp.CheckpointManager(root.resolve(), options=options)
        steps = sorted(manager.all_steps(), reverse=True)
    if not steps:
        raise NoCheckpoint(f"{workdir} holds no completed checkpoint yet (nothing finished in {root}/). Train "
                           f"first: `python -m eva_jax.train --config=NAME --workdir={workdir}` saves one every "
                           f"train.checkpoint_every steps and at the end of the run.")
    return manager, steps


def damage(err: BaseException) -> str:
    """One line for what made a checkpoint unreadable (Orbax and TensorStore errors run to many lines)."""
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _check_complete(step_dir: Path) -> None:
    """The items a training checkpoint always has, so a step missing one is not served as if it were whole
    (a partial restore of the parameters alone would not notice a lost _METADATA or data state)."""
    for part in ("state/_METADATA", "data", "meta"):
        if not (step_dir / part).exists():
            raise FileNotFoundError(f"{step_dir / part} is missing")


def check_finite(params: Any, where: str) -> None:
    bad = [jax.tree_util.keystr(path) for path, leaf in jax.tree_util.tree_leaves_with_path(params)
           if jax.numpy.issubdtype(leaf.dtype, jax.numpy.inexact) and not bool(jax.numpy.isfinite(leaf).all())]
    if bad:
        raise NonFinite(f"{where}: {len(bad)} parameter arrays hold NaN or infinity (first: {bad[0]}); the run "
                        f"that saved it had diverged. Load an earlier step or retrain with a lower learning rate.")


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
    """(Config, params, tokenizer or None) of the newest readable checkpoint in a training workdir. A damaged
    newest step is passed over with one warning line naming it; a checkpoint with non-finite parameters is
    refused (NonFinite) rather than served."""
    workdir = Path(workdir)
    manager, steps = completed_steps(workdir)
    problems = []
    try:
        for step in steps:
            try:
                _check_complete(Path(manager.directory) / str(step))
                items = _json_items(manager, step, ["config", "tokenizer", "data", "meta"])
                cfg = _config(items, workdir)
                params, tokenizer = restore_params(manager, step, cfg), _tokenizer(items, workdir)
            except Exception as err:  # noqa: BLE001 - any damage to one step: try the one before it
                problems.append(f"step {step} ({damage(err)})")
                print(f"warning: {workdir}: checkpoint step {step} is unreadable ({damage(err)}); trying the "
                      f"previous one", file=sys.stderr, flush=True)
                continue
            check_finite(params, f"{workdir} checkpoint step {step}")
            return cfg, params, tokenizer
    finally:
        manager.close()
    raise NoCheckpoint(f"{workdir}: no checkpoint is readable: {'; '.join(problems)}")
