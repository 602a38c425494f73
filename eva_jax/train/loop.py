"""The training loop as a function (`run(cfg)`), callable from a notebook; `python -m eva_jax.train` wraps it.

Re-running with the same config and workdir resumes from the newest complete checkpoint with the exact data
position, so per-step losses match an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from eva_jax.api import init_params
from eva_jax.config import Config, ConfigError
from eva_jax.data.pipeline import model_inputs, open_data
from eva_jax.train import schedules
from eva_jax.train.checkpoint import RunCheckpoints, config_record
from eva_jax.train.metrics import MetricsLog, peak_flops, train_flops_per_token
from eva_jax.train.optim import make_optimizer
from eva_jax.train.step import TrainState, heldout_loss, init_state, make_train_step


@dataclasses.dataclass
class RunResult:
    state: TrainState
    history: list[dict]
    workdir: Path


def default_workdir(cfg: Config) -> Path:
    return Path("workdirs") / cfg.name


def _check_same_run(cfg: Config, workdir: Path) -> None:
    """A workdir belongs to one model and data set; schedule edits are allowed but break exact resume."""
    path = workdir / "config.json"
    record = config_record(cfg)
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2))
        return
    old = json.loads(path.read_text())
    for section in ("model", "data"):
        if old.get(section) != record[section]:
            changed = sorted(k for k in record[section] if old.get(section, {}).get(k) != record[section][k])
            raise ConfigError(f"{workdir} holds a run with a different {section} config (changed: "
                              f"{', '.join(changed)}); use another --workdir or the same settings")
    if old != record:
        warnings.warn(f"{workdir}: train/optim settings differ from the saved run; resuming with the new ones")
        path.write_text(json.dumps(record, indent=2))


def _next_batch(iterator, micro_batches: int, isolate: bool) -> dict:
    parts = [next(iterator) for _ in range(micro_batches)]
    stacked = {k: np.stack([p[k] for p in parts]) for k in parts[0]}
    return model_inputs(stacked, isolate)


def _heldout_batches(heldout, count: int, isolate: bool) -> list[dict]:
    iterator, out = iter(heldout), []
    for _ in range(count):
        try:
            out.append(model_inputs(next(iterator), isolate))
        except StopIteration:
            break
    return out


def run(cfg: Config, workdir: str | Path | None = None) -> RunResult:
    """Trains `cfg` in `workdir` (default workdirs/<config name>), resuming if it holds a checkpoint."""
    workdir = Path(workdir) if workdir is not None else default_workdir(cfg)
    _check_same_run(cfg, workdir)
    tokenizer, train_data, heldout = open_data(cfg, workdir, jax.process_index(), jax.process_count())
    plan = schedules.plan(cfg)
    isolate, micro = cfg.data.isolate_documents, cfg.train.micro_batch
    params = init_params(cfg, seed=cfg.train.seed)
    tx = make_optimizer(cfg, plan.lr, params)
    state = init_state(params, tx)
    checkpoints = RunCheckpoints(workdir / "checkpoints", cfg.train.keep_checkpoints)
    iterator = iter(train_data)
    start = checkpoints.latest_step() or 0
    if start:
        state, data_state, _ = checkpoints.restore(start, state)
        iterator.set_state(data_state)
        print(f"resuming {workdir} from step {start}", flush=True)
    step_fn = make_train_step(cfg, tx)
    eval_batches = _heldout_batches(heldout, cfg.train.eval_batches, isolate)
    log = MetricsLog(workdir, start, cfg.train.steps)
    flops_per_token, peak = train_flops_per_token(cfg), peak_flops(cfg)
    history: list[dict] = []
    try:
        for step in range(start, cfg.train.steps):
            batch = _next_batch(iterator, int(plan.batch[step]) // micro, isolate)
            began = time.perf_counter()
            state, metrics = step_fn(state, batch, plan.mtp_lambda[step], plan.gamma[step])
            metrics = jax.device_get(metrics)
            seconds = time.perf_counter() - began
            tokens = int(plan.batch[step]) * cfg.train.seq_len
            record = {"step": step + 1, "loss": float(metrics["loss"]), "mtp_loss": float(metrics["mtp_loss"]),
                      "balance_loss": float(metrics["balance_loss"]), "grad_norm": float(metrics["grad_norm"]),
                      "lr": float(plan.lr[step]), "batch": int(plan.batch[step]),
                      "tokens": int(plan.tokens_before[step]) + tokens, "tokens_per_s": tokens / seconds,
                      "mfu": flops_per_token * tokens / seconds / peak if peak else 0.0,
                      "max_vio": [float(v) for vs in metrics["max_vio"].values() for v in np.atleast_1d(vs)]}
            done = step + 1
            if done % cfg.train.eval_every == 0 or done == cfg.train.steps:
                losses = [float(heldout_loss(state.params, b, cfg)) for b in eval_batches]
                record["heldout_loss"] = float(np.mean(losses)) if losses else float("nan")
            log.write(record)
            history.append(record)
            if done % cfg.train.checkpoint_every == 0 or done == cfg.train.steps:
                meta = {"step": done, "tokens": record["tokens"]}
                checkpoints.save(done, state, iterator.get_state(), meta, tokenizer, cfg)
    finally:
        log.close()
        checkpoints.close()
    return RunResult(state, history, workdir)
