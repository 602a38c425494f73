"""Supervised fine-tuning as a function (`sft(...)`, callable from a notebook; `python -m eva_jax.sft` wraps
it): the pre-training loop (eva_jax/train/loop.py: the same step, checkpoints, exact resume, non-finite guard,
preemption) over packed conversations, starting from a training workdir or a Hugging Face checkpoint.

DeepSeek-V3's SFT recipe (docs/deepseek_v3_reference.md): 2 epochs, the learning rate a cosine from 5e-6 down to
1e-6 over the run, no batch ramp; samples packed with isolation. The router-bias update is off (the balance it
keeps was reached in pre-training); MTP keeps its late weight.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np

from eva_jax.config import Config, ConfigError
from eva_jax.data.sources import DataError
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.infer.loading import load_checkpoint
from eva_jax.overrides import apply_overrides
from eva_jax.post.sft_data import Sample, pack, read_samples, row_arrays
from eva_jax.train.loop import RunResult, run

SFT_DEFAULTS: dict[str, Any] = {
    "optim.lr_peak": 5e-6, "optim.lr_decayed": 1e-6, "optim.lr_final": 1e-6, "optim.warmup_frac": 0.0,
    "optim.constant_until_frac": 0.0, "optim.decay_until_frac": 1.0, "optim.tail_until_frac": 1.0,
    "train.bias_update": False, "train.mtp_switch_frac": 0.0, "data.isolate_documents": True,
    "data.fim_rate": 0.0,
}
EPOCHS = 2


@dataclasses.dataclass(frozen=True)
class SFTData:
    samples: list[Sample]
    train_rows: list[list[int]]  # sample indices per row, every epoch one after the other
    heldout_rows: list[list[int]]
    row_len: int


def prepare(cfg: Config, tokenizer: Tokenizer, path: str | Path, epochs: int) -> SFTData:
    """Encodes every conversation, keeps data.heldout_fraction of them (seeded) for the held-out loss, and packs
    each epoch of the rest in its own shuffled order."""
    row_len = cfg.train.seq_len + 1
    samples = read_samples(path, tokenizer, row_len)
    order = np.random.default_rng(cfg.data.seed).permutation(len(samples))
    held = int(round(cfg.data.heldout_fraction * len(samples)))
    if held >= len(samples):
        raise DataError(f"{path}: data.heldout_fraction={cfg.data.heldout_fraction} leaves no conversation of "
                        f"{len(samples)} to train on")
    train, heldout = order[held:], np.sort(order[:held])
    lengths = [len(s.ids) for s in samples]
    rows: list[list[int]] = []
    for epoch in range(epochs):
        shuffled = np.random.default_rng([cfg.data.seed, epoch]).permutation(train)
        rows += pack(lengths, shuffled, row_len)
    return SFTData(samples, rows, pack(lengths, heldout, row_len), row_len)


class RowStream:
    """Micro-batches of packed rows, this process's share of each; the position is its checkpointable state.
    Past the last row a training stream gives empty rows (no targets); a held-out stream stops."""

    def __init__(self, data: SFTData, rows: list[list[int]], local_rows: int, index: int, count: int,
                 finite: bool) -> None:
        self.data, self.rows, self.finite = data, rows, finite
        self.local, self.index, self.count = local_rows, index, count  # rows per process, which process, of how many
        self.position = 0

    def __iter__(self) -> RowStream:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        first = self.position * self.local * self.count
        if self.finite and first >= len(self.rows):
            raise StopIteration
        start = first + self.index * self.local
        members = [self.rows[r] if r < len(self.rows) else [] for r in range(start, start + self.local)]
        self.position += 1
        return row_arrays(self.data.samples, members, self.data.row_len)

    def get_state(self) -> dict[str, int]:
        return {"micro_batches": self.position}

    def set_state(self, state: dict[str, int]) -> None:
        self.position = int(state["micro_batches"])


class _HeldOut:
    def __init__(self, data: SFTData, local_rows: int, index: int, count: int) -> None:
        self.args = (data, data.heldout_rows, local_rows, index, count, True)

    def __iter__(self) -> RowStream:
        return RowStream(*self.args)


def steps_for(data: SFTData, cfg: Config) -> int:
    return max(1, math.ceil(len(data.train_rows) / cfg.train.global_batch))


def sft_config(base: Config, sets: dict[str, Any], steps: int | None = None) -> Config:
    """SFT_DEFAULTS, then the caller's settings, over `base`; no batch ramp unless train.batch_start is set,
    and the run ends at the cosine's floor (optim.lr_decayed) unless optim.lr_final is set."""
    no_ramp = {} if "train.batch_start" in sets else {"train.batch_start": sets.get("train.global_batch",
                                                                                   base.train.global_batch)}
    cfg = apply_overrides(base, {**SFT_DEFAULTS, **sets, **no_ramp})
    if "optim.lr_final" not in sets:  # the cosine ends the run: its floor is the last step's rate
        cfg = apply_overrides(cfg, {"optim.lr_final": cfg.optim.lr_decayed})
    if steps is not None and "train.steps" not in sets:
        cfg = apply_overrides(cfg, {"train.steps": steps})
    return cfg


def check_model(cfg: Config, init_cfg: Config, init: Path) -> None:
    if cfg.model != init_cfg.model:
        changed = [f.name for f in dataclasses.fields(cfg.model)
                   if getattr(cfg.model, f.name) != getattr(init_cfg.model, f.name)]
        raise ConfigError(f"{init} holds another model than the config asks for (differs: {', '.join(changed)}); "
                          f"leave out --config to take the model from {init}, or pass the matching one")


def sft(init: str | Path, data: str | Path, config: Config | None = None, sets: dict[str, Any] | None = None,
        workdir: str | Path | None = None, epochs: int = EPOCHS) -> RunResult:
    """Fine-tunes the weights of `init` (a training workdir or a Hugging Face checkpoint directory) on the
    conversations of `data` (JSON Lines) in `workdir`; re-running resumes exactly. `config` (default: the one
    `init` holds) gives everything but the model, which must be `init`'s; `sets` are dotted overrides."""
    if epochs < 1:
        raise ConfigError(f"epochs={epochs} must be at least 1")
    sets, init = dict(sets or {}), Path(init)
    init_cfg, params, tokenizer = load_checkpoint(init)
    base = config or init_cfg
    check_model(base, init_cfg, init)
    if tokenizer is None:
        raise ConfigError(f"{init} has no tokenizer; SFT renders conversations with the model's own")
    cfg = sft_config(base, {**sets, "data.source": str(Path(data).resolve())})
    workdir = Path(workdir) if workdir is not None else Path("workdirs") / f"{cfg.name}_sft"
    prepared = prepare(cfg, tokenizer, data, epochs)
    cfg = sft_config(base, {**sets, "data.source": str(Path(data).resolve())}, steps_for(prepared, cfg))

    def opener(local: Config, run_dir: Path, index: int, count: int):
        if index == 0 and not (run_dir / "tokenizer").exists():
            tokenizer.save(run_dir / "tokenizer")
        rows = local.train.micro_batch
        return tokenizer, RowStream(prepared, prepared.train_rows, rows, index, count, False), \
            _HeldOut(prepared, rows, index, count)

    return run(cfg, workdir, data=opener, init=lambda: jax.tree_util.tree_map(np.asarray, params))
