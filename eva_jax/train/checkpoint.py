"""Orbax checkpoints of a run: train state (params with router biases, optimizer state, step), the grain
iterator state, the config and the tokenizer. Saves are async; a half-written checkpoint is never restored
(Orbax finalises by an atomic rename and `latest_step` ignores temporaries).

Multi-process: every process calls save/restore with its shards (Orbax writes each array once, from the
processes that hold it). A restore lays the arrays out as the target's shardings say, so a checkpoint written
on one mesh restores onto another (or onto one device)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from eva_jax.checkpoints.workdir import damage
from eva_jax.config import Config
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.parallel import distributed
from eva_jax.train.step import all_finite


def tokenizer_record(tokenizer: Tokenizer) -> dict:
    return {"name": tokenizer.name, "chat_template": tokenizer.chat_template,
            "tokenizer_json": json.loads(tokenizer.backend.to_str())}


def config_record(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


DAMAGED = "damaged_checkpoints"


class NoReadableCheckpoint(RuntimeError):
    """Every checkpoint of a workdir is damaged."""


class RunCheckpoints:
    def __init__(self, directory: Path, keep: int) -> None:
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True, create=True)
        self.directory = directory.resolve()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any, data_state: dict, meta: dict, tokenizer: Tokenizer | None,
             cfg: Config) -> None:
        items = dict(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
                     meta=ocp.args.JsonSave(meta), config=ocp.args.JsonSave(config_record(cfg)))
        if tokenizer is not None:
            items["tokenizer"] = ocp.args.JsonSave(tokenizer_record(tokenizer))
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, abstract_state: Any, shardings: Any = None) -> tuple[Any, dict, dict]:
        """`shardings` (a tree like the state, of jax.sharding.Sharding) places the restored arrays, e.g. on a
        mesh other than the one that saved them; without it they follow `abstract_state`'s own arrays."""
        target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
        if shardings is not None:
            target = jax.tree_util.tree_map(lambda t, s: jax.ShapeDtypeStruct(t.shape, t.dtype, sharding=s),
                                            target, shardings)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
        return restored["state"], restored["data"], restored["meta"]

    def restore_newest(self, abstract_state: Any) -> tuple[int, Any, dict, dict] | None:
        """(step, state, data state, meta) of the newest checkpoint every process can read and whose state is
        finite; None when there is none. A damaged step gets one warning line and is moved to
        `<workdir>/damaged_checkpoints/` (kept for a post-mortem, out of the way of the steps the resumed run
        saves again). Only when steps exist but none is readable does it stop (NoReadableCheckpoint)."""
        steps = sorted(self.manager.all_steps(), reverse=True)
        problems = []
        for step in steps:
            try:
                state, data, meta = self.restore(step, abstract_state)
                problem = None if bool(all_finite(state)) else "its parameters or optimizer state are not finite"
            except Exception as err:  # noqa: BLE001 - any damage to one step: fall back to the one before
                problem = damage(err)
            problems_everywhere = [p for p in distributed.allgather_json(problem) if p]
            if not problems_everywhere:
                return step, state, data, meta
            problems.append(f"step {step}: {problems_everywhere[0]}")
            print(f"warning: checkpoint step {step} in {self.directory} is unreadable ({problems_everywhere[0]}); "
                  f"moved to {self.directory.parent / DAMAGED}/ and falling back to the previous one", flush=True)
            self._set_aside(step)
        if problems:
            raise NoReadableCheckpoint(f"no checkpoint in {self.directory} is readable ({'; '.join(problems)}); "
                                       f"they are kept in {self.directory.parent / DAMAGED}/. Start over in a new "
                                       f"--workdir.")
        return None

    def _set_aside(self, step: int) -> None:
        if jax.process_index() == 0:
            target = self.directory.parent / DAMAGED / str(step)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(self.directory / str(step)), str(target))
        distributed.barrier(f"set-aside-{step}")
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
