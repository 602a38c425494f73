"""Orbax checkpoints of a run: train state (params with router biases, optimizer state, step), the grain
iterator state, the config and the tokenizer. Saves are async; a half-written checkpoint is never restored
(Orbax finalises by an atomic rename and `latest_step` ignores temporaries)."""

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

    def save(self, step: int, state: Any, data_state: dict, meta: dict, tokenizer: Tokenizer, cfg: Config) -> None:
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(meta),
            config=ocp.args.JsonSave(config_record(cfg)),
            tokenizer=ocp.args.JsonSave(tokenizer_record(tokenizer)),
        )
        self.manager.save(step, args=args, force=True)

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
        target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
        return restored["state"], restored["data"], restored["meta"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
