"""The training loop as a function (`run(cfg)`), callable from a notebook; `python -m eva_jax.train` wraps it.

Re-running with the same config and workdir resumes from the newest complete checkpoint with the exact data
position, so per-step losses match an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import numpy as np

from eva_jax.api import Params, abstract_params
from eva_jax.config import Config, ConfigError
from eva_jax.data.pipeline import model_inputs, open_data
from eva_jax.parallel import distributed
from eva_jax.parallel.mesh import make_mesh
from eva_jax.parallel.sharding import check_batch, shard_batch, shard_rows, train_devices
from eva_jax.train import schedules
from eva_jax.train.checkpoint import RunCheckpoints, config_record
from eva_jax.train.divergence import BadSteps
from eva_jax.train.metrics import MetricsLog, peak_flops, train_flops_per_token
from eva_jax.train.optim import make_optimizer
from eva_jax.train.preemption import Preempted, stop_requests
from eva_jax.train.run_dir import check_workdir
from eva_jax.train.state_sharding import init_sharded_state, place_like
from eva_jax.train.step import TrainState, heldout_loss, make_train_step

DataOpener = Callable[[Config, Path, int, int], tuple]  # (cfg, workdir, process index, count) -> open_data's


@dataclasses.dataclass
class RunResult:
    state: TrainState | None  # None only for a finished run in a read-only workdir (nothing was loaded)
    history: list[dict]
    workdir: Path


def default_workdir(cfg: Config) -> Path:
    return Path("workdirs") / cfg.name


def check_same_run(cfg: Config, workdir: Path) -> None:
    """A workdir belongs to one model and data set; schedule edits are allowed but break exact resume."""
    if jax.process_index() != 0:
        return
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
    """Up to `count` held-out batches, as many on every process: each reads its own shard of the split, and
    evaluating is a collective, so a process with fewer batches would leave the others waiting forever."""
    iterator, out = iter(heldout), []
    for _ in range(count):
        try:
            out.append(model_inputs(next(iterator), isolate))
        except StopIteration:
            break
    return out[: min(distributed.allgather_json(len(out)))]


class _NoLog:
    """Processes other than the first compute the same metrics and write nothing."""

    def write(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _open_data_per_process(cfg: Config, workdir: Path, opener: DataOpener = open_data):
    """Each process reads its own share of documents in micro-batches of micro_batch / process_count rows;
    the first process builds the tokenizer, the others load it."""
    count, index = jax.process_count(), jax.process_index()
    if cfg.train.micro_batch % count:
        raise ConfigError(f"train.micro_batch={cfg.train.micro_batch} does not split over {count} processes")
    local = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, micro_batch=cfg.train.micro_batch // count))
    if index == 0:
        result = opener(local, workdir, index, count)
    distributed.barrier("tokenizer")
    if index != 0:
        result = opener(local, workdir, index, count)
    return result


def _data_state(iterator) -> dict:
    states = distributed.allgather_json(iterator.get_state())
    return states[0] if len(states) == 1 else {"per_process": states}


def _set_data_state(iterator, saved: dict) -> None:
    if "per_process" in saved:
        states = saved["per_process"]
        if len(states) != jax.process_count():
            raise ConfigError(f"the checkpoint was written by {len(states)} processes; resume it with as many "
                              f"(this job has {jax.process_count()})")
        saved = states[jax.process_index()]
    iterator.set_state(saved)


def _record(cfg: Config, plan, step: int, metrics: dict, seconds: float, elapsed: float, flops_per_token: float,
            peak: float) -> dict:
    """The metrics line of one step (metrics.jsonl, TensorBoard, the progress line)."""
    tokens = int(plan.batch[step]) * cfg.train.seq_len
    return {"step": step + 1, "loss": float(metrics["loss"]), "mtp_loss": float(metrics["mtp_loss"]),
            "balance_loss": float(metrics["balance_loss"]), "grad_norm": float(metrics["grad_norm"]),
            "applied": bool(metrics["applied"]), "lr": float(plan.lr[step]), "batch": int(plan.batch[step]),
            "tokens": int(plan.tokens_before[step]) + tokens, "tokens_per_s": tokens / seconds,
            "mfu": flops_per_token * tokens / seconds / peak if peak else 0.0, "elapsed_s": elapsed,
            "max_vio": [float(v) for vs in metrics["max_vio"].values() for v in np.atleast_1d(vs)]}


def run(cfg: Config, workdir: str | Path | None = None, *, data: DataOpener = open_data,
        init: Callable[[], Params] | None = None) -> RunResult:
    """Trains `cfg` in `workdir` (default workdirs/<config name>), resuming if it holds a checkpoint.

    The state lives on the mesh of `cfg.mesh` (parameters, optimizer state and batches sharded by
    eva_jax.parallel.rules); with several processes each reads its own rows of every batch. Post-training
    passes its own `data` (same contract as eva_jax.data.pipeline.open_data: tokenizer, a checkpointable train
    iterable, a finite held-out iterable) and `init`, the starting parameters, called only when the workdir
    holds no checkpoint to resume."""
    run_began = time.perf_counter()  # "elapsed_s" counts set-up (tokenizer, data, compile) too
    distributed.initialize()
    workdir = Path(workdir) if workdir is not None else default_workdir(cfg)
    if not check_workdir(workdir, cfg.train.steps):  # read-only, and the run is finished
        return RunResult(None, [], workdir)
    check_same_run(cfg, workdir)
    tokenizer, train_data, heldout = _open_data_per_process(cfg, workdir, data)
    plan = schedules.plan(cfg)
    isolate, micro = cfg.data.isolate_documents, cfg.train.micro_batch
    mesh = make_mesh(cfg.mesh, train_devices(cfg))
    check_batch(cfg, mesh)
    tx = make_optimizer(cfg, plan.lr, nn.unbox(abstract_params(cfg)))
    state = init_sharded_state(cfg, tx, mesh, cfg.train.seed)
    checkpoints = RunCheckpoints(workdir / "checkpoints", cfg.train.keep_checkpoints)
    iterator = iter(train_data)
    newest = checkpoints.restore_newest(state)
    start = 0
    if newest:
        start, state, data_state, _ = newest
        _set_data_state(iterator, data_state)
        print(f"resuming {workdir} from step {start}", flush=True)
    elif init is not None:
        state = state.replace(params=place_like(init(), state.params))
    step_fn = make_train_step(cfg, tx, mesh)
    eval_batches = [shard_rows(b, mesh) for b in _heldout_batches(heldout, cfg.train.eval_batches, isolate)]
    log = MetricsLog(workdir, start, cfg.train.steps) if jax.process_index() == 0 else _NoLog()
    if cfg.train.eval_batches and not eval_batches:
        print(f"warning: the held-out split holds less than one micro-batch ({micro} rows of "
              f"{cfg.train.seq_len + 1} tokens); no held-out loss is computed (raise data.heldout_fraction)",
              flush=True)
    flops_per_token, peak = train_flops_per_token(cfg), peak_flops(cfg)
    history: list[dict] = []
    bad_steps, last_saved = BadSteps(cfg), start or None

    def save(done: int, tokens: int) -> int:
        checkpoints.save(done, state, _data_state(iterator), {"step": done, "tokens": tokens}, tokenizer, cfg)
        return done

    try:
        with stop_requests() as stops:
            for step in range(start, cfg.train.steps):
                batch = shard_batch(_next_batch(iterator, int(plan.batch[step]) // micro, isolate), mesh)
                began = time.perf_counter()
                state, metrics = step_fn(state, batch, plan.mtp_lambda[step], plan.gamma[step])
                record = _record(cfg, plan, step, jax.device_get(metrics), time.perf_counter() - began,
                                 time.perf_counter() - run_began, flops_per_token, peak)
                done = step + 1
                if eval_batches and (done % cfg.train.eval_every == 0 or done == cfg.train.steps):
                    record["heldout_loss"] = float(np.mean([heldout_loss(state.params, b, cfg) for b in eval_batches]))
                log.write(record)
                history.append(record)
                warning = bad_steps.observe(record, last_saved)  # raises Diverged after train.max_bad_steps
                if warning:
                    print(f"warning: {warning}", flush=True)
                if done % cfg.train.checkpoint_every == 0 or done == cfg.train.steps:
                    last_saved = save(done, record["tokens"])
                signum = stops.agreed(done, checkpoints.manager)
                if signum is not None:
                    if last_saved != done:
                        last_saved = save(done, record["tokens"])
                    checkpoints.wait()
                    raise Preempted(f"stopped by {signal.Signals(signum).name} after step {done}; its checkpoint "
                                    f"is saved in {workdir}: run the same command again to resume", signum)
    finally:
        log.close()
        checkpoints.close()
    return RunResult(state, history, workdir)
