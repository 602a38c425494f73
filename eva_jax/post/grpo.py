"""GRPO as a function (`grpo(...)`, callable from a notebook; `python -m eva_jax.grpo` wraps it).

Each of train.steps steps: grpo.prompts prompts (epochs of the training prompts in seeded orders), G completions
each sampled by the engine from the current parameters, rule-based rewards (eva_jax/post/rewards.py),
group-normalised advantages, then grpo.inner_steps (μ) optimizer steps on the clipped objective with a k3 KL
to the frozen reference — the --init weights, saved once in WORKDIR/reference (docs/post_training.md).
Checkpoints, metrics.jsonl/TensorBoard, the non-finite guard and preemption are the pre-training loop's;
re-running resumes exactly: prompts and sampling seeds are pure functions of the step.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from eva_jax.config import Config, ConfigError
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.infer.loading import load_checkpoint
from eva_jax.overrides import apply_overrides, parse_value
from eva_jax.parallel import distributed
from eva_jax.parallel.mesh import make_mesh
from eva_jax.parallel.sharding import check_batch, shard_batch, train_devices
from eva_jax.post import grpo_data
from eva_jax.post.grpo_rollout import Rollout, heldout_scores, rollout
from eva_jax.post.grpo_step import compiled, rows_logprobs, stacked
from eva_jax.post.rewards import Rewards
from eva_jax.post.sft import check_model
from eva_jax.train import schedules
from eva_jax.train.checkpoint import RunCheckpoints
from eva_jax.train.divergence import BadSteps
from eva_jax.train.loop import check_same_run
from eva_jax.train.metrics import MetricsLog
from eva_jax.train.preemption import Preempted, stop_requests
from eva_jax.train.run_dir import check_workdir
from eva_jax.train.state import TrainState
from eva_jax.train.state_sharding import init_sharded_state, place_like

# DeepSeekMath's GRPO: a constant 1e-6; no weight decay (the MTP modules, which get no gradient, stay put).
GRPO_DEFAULTS: dict[str, Any] = {
    "optim.lr_peak": 1e-6, "optim.lr_decayed": 1e-6, "optim.lr_final": 1e-6, "optim.warmup_frac": 0.0,
    "optim.constant_until_frac": 1.0, "optim.decay_until_frac": 1.0, "optim.tail_until_frac": 1.0,
    "optim.weight_decay": 0.0, "train.bias_update": False, "data.fim_rate": 0.0, "train.eval_every": 10,
}
DEFAULT_REWARD = "exact"


@dataclasses.dataclass
class GRPOResult:
    state: TrainState | None  # None for a finished run in a read-only workdir
    history: list[dict]
    workdir: Path
    reference: Any = None


def grpo_config(base: Config, sets: dict[str, Any]) -> Config:
    """GRPO_DEFAULTS, then the caller's settings, over `base`; one optimizer step covers a rollout batch
    (train.global_batch = grpo.prompts × grpo.group_size rows, no ramp)."""
    rows = apply_overrides(base, {k: v for k, v in sets.items() if k.startswith("grpo.")}).grpo.rows
    micro = parse_value("train.micro_batch", sets.get("train.micro_batch", base.train.micro_batch), int)
    if micro < 1 or rows % micro:
        raise ConfigError(f"a rollout batch of grpo.prompts × grpo.group_size = {rows} rows does not split into "
                          f"micro-batches of train.micro_batch={micro}")
    return apply_overrides(base, {**GRPO_DEFAULTS, **sets, "train.global_batch": rows, "train.batch_start": rows})


def _reference(workdir: Path, params: Any, like: Any) -> Any:
    """The frozen reference: written once (the --init weights), read back on every resume."""
    path = (workdir / "reference").resolve()
    with ocp.StandardCheckpointer() as ckpt:
        if not path.exists():
            ckpt.save(path, params)
            ckpt.wait_until_finished()
        target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like)
        return ckpt.restore(path, target)


def _record(step: int, ro: Rollout, trained: list[dict], mismatch: dict, lr: float, seconds: dict,
            elapsed: float) -> dict:
    """The metrics line of one rollout batch: rewards, the objective's parts (mean over the μ steps), sizes."""
    mean = {k: float(np.mean([m[k] for m in trained])) for k in ("loss", "kl", "clip_fraction", "entropy",
                                                                 "grad_norm")}
    tokens = int(ro.lengths.sum())
    return {"step": step + 1, **mean, "applied": all(bool(m["applied"]) for m in trained),
            "reward_mean": float(ro.rewards.mean()), "reward_std": float(ro.rewards.std()),
            **{f"reward_{name}": float(v.mean()) for name, v in ro.components.items()},
            "response_length": float(ro.lengths.mean()), **mismatch, "lr": lr,
            "tokens_per_s": tokens / max(seconds["rollout"] + seconds["train"], 1e-9),
            "rollout_s": seconds["rollout"], "train_s": seconds["train"], "elapsed_s": elapsed}


def _corrections(rows: dict, old: np.ndarray, cap: float) -> tuple[np.ndarray, dict]:
    """Importance weights min(π_old / π_engine, cap) on completion tokens, and how far the two disagree."""
    mask = rows["mask"] > 0
    gap = np.where(mask, old - rows["behaviour_logp"], 0.0)
    weights = np.where(mask, np.minimum(np.exp(gap), cap), 0.0).astype(np.float32)
    rel = np.abs(gap) / np.maximum(np.abs(rows["behaviour_logp"]), 1e-6)
    return weights, {"logprob_mismatch": float(np.abs(gap).max(initial=0.0)),
                     "logprob_mismatch_rel": float(np.where(mask, rel, 0.0).max(initial=0.0)),
                     "importance_weight": float(weights[mask].mean()) if mask.any() else 1.0}


def _train_rows(cfg: Config, ro: Rollout, params: Any, reference: Any, mesh) -> tuple[dict, dict]:
    rows = dict(ro.rows)
    old = rows_logprobs(params, rows, cfg, mesh)
    rows["old_logp"] = old
    rows["ref_logp"] = rows_logprobs(reference, rows, cfg, mesh)
    rows["weights"], mismatch = _corrections(rows, old, cfg.grpo.max_importance_weight)
    del rows["behaviour_logp"]
    return shard_batch(stacked(rows, cfg.train.micro_batch), mesh), mismatch


def run_grpo(cfg: Config, workdir: Path, params: Any, tokenizer: Tokenizer, prompts: list[grpo_data.Prompt],
             rewards: Rewards) -> GRPOResult:
    """Trains from `params` (also the reference) in `workdir`, resuming from its newest checkpoint."""
    began = time.perf_counter()
    if not check_workdir(workdir, cfg.train.steps):
        return GRPOResult(None, [], workdir)
    check_same_run(cfg, workdir)
    if jax.process_index() == 0 and not (workdir / "tokenizer").exists():
        tokenizer.save(workdir / "tokenizer")
    train, held = grpo_data.split(prompts, cfg.grpo.heldout_prompts, cfg.data.seed)
    g, mu = cfg.grpo, cfg.grpo.inner_steps
    mesh = make_mesh(cfg.mesh, train_devices(cfg))
    check_batch(cfg, mesh)
    tx, step_fn = compiled(cfg, mesh)
    lr = schedules.plan(cfg).lr
    state = init_sharded_state(cfg, tx, mesh, cfg.train.seed)
    initial = place_like(jax.tree_util.tree_map(np.asarray, params), state.params)
    reference = _reference(workdir, initial, state.params)
    checkpoints = RunCheckpoints(workdir / "checkpoints", cfg.train.keep_checkpoints)
    newest = checkpoints.restore_newest(state)
    start = 0
    if newest:
        start, state, _, _ = newest
        print(f"resuming {workdir} from step {start}", flush=True)
    else:
        state = state.replace(params=initial)
    log = MetricsLog(workdir, start, cfg.train.steps) if jax.process_index() == 0 else None
    history, bad, last_saved = [], BadSteps(cfg), start or None

    def save(done: int) -> int:
        checkpoints.save(done, state, {"rollouts": done}, {"step": done}, tokenizer, cfg)
        return done

    try:
        with stop_requests() as stops:
            for step in range(start, cfg.train.steps):
                t0 = time.perf_counter()
                ro = rollout(cfg, state.params, tokenizer,
                             grpo_data.batch_of_prompts(train, step, g.prompts, cfg.data.seed), rewards, step)
                t1 = time.perf_counter()
                batch, mismatch = _train_rows(cfg, ro, state.params, reference, mesh)
                trained = []
                for _ in range(mu):
                    state, metrics = step_fn(state, batch)
                    trained.append(jax.device_get(metrics))
                seconds = {"rollout": t1 - t0, "train": time.perf_counter() - t1}
                record = _record(step, ro, trained, mismatch, float(lr[step]), seconds,
                                 time.perf_counter() - began)
                done = step + 1
                if held and (done % cfg.train.eval_every == 0 or done == cfg.train.steps):
                    record.update(heldout_scores(cfg, state.params, tokenizer, held, rewards))
                if log is not None:
                    log.write(record)
                history.append(record)
                warning = bad.observe(record, last_saved)
                if warning:
                    print(f"warning: {warning}", flush=True)
                if done % cfg.train.checkpoint_every == 0 or done == cfg.train.steps:
                    last_saved = save(done)
                signum = stops.agreed(done, checkpoints.manager)
                if signum is not None:
                    if last_saved != done:
                        last_saved = save(done)
                    checkpoints.wait()
                    raise Preempted(f"stopped by {signal.Signals(signum).name} after step {done}; its checkpoint "
                                    f"is saved in {workdir}: run the same command again to resume", signum)
    finally:
        if log is not None:
            log.close()
        checkpoints.close()
    return GRPOResult(state, history, workdir, reference)


def grpo(init: str | Path, data: str | Path, config: Config | None = None, sets: dict[str, Any] | None = None,
         workdir: str | Path | None = None, rewards: str | list[str] = DEFAULT_REWARD) -> GRPOResult:
    """GRPO on the prompts of `data` (JSON Lines) from the weights of `init` (a training workdir or a Hugging
    Face checkpoint directory) in `workdir` (default workdirs/<config>_grpo); re-running resumes exactly.
    `config` (default: `init`'s) gives everything but the model; `sets` are dotted overrides; `rewards` a spec
    such as "exact:1,format:0.1"."""
    distributed.initialize()
    init = Path(init)
    reward = Rewards.parse(rewards)
    init_cfg, params, tokenizer = load_checkpoint(init)
    base = config or init_cfg
    check_model(base, init_cfg, init)
    if tokenizer is None:
        raise ConfigError(f"{init} has no tokenizer; GRPO decodes completions with the model's own")
    cfg = grpo_config(base, {**(sets or {}), "data.source": str(Path(data).resolve())})
    workdir = Path(workdir) if workdir is not None else Path("workdirs") / f"{cfg.name}_grpo"
    prompts = grpo_data.read_prompts(data, tokenizer, cfg)
    return run_grpo(cfg, workdir, params, tokenizer, prompts, reward)
