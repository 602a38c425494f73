"""Orbax checkpoints of a run: train state (params with router biases, optimizer state, step), the grain
iterator state, the config and the tokenizer. Saves are async; a half-written checkpoint is never restored
(Orbax finalises by an atomic rename and `latest_step` ignores temporaries).

Multi-process: every process calls save/restore with its shards (Orbax writes each array once, from the
processes that hold it). A restore lays the arrays out as the target's shardings say, so a checkpoint written
on one mesh restores onto another (or onto one device)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

from eva_jax.config import Config
from eva_jax.data.tokenizer import Tokenizer


def tokenizer_record(tokenizer: Tokenizer) -> dict:
    return {"name": tokenizer.name, "chat_template": tokenizer.chat_template,
            "tokenizer_json": json.loads(tokenizer.backend.to_str())}


def config_record(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


class RunCheckpoints:
    def __init__(self, directory: Path, keep: int) -> None:
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True, create=True)
        self.manager = ocp.CheckpointManager(directory.resolve(), options=options)

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

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
