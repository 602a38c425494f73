"""Rollouts: G completions per prompt sampled by the batched engine (eva_jax/infer/batching.py) from the policy's
current parameters, scored by the rewards, and laid out as training rows.

A row is prompt + completion (+ padding) in train.seq_len + 1 tokens; position t predicts token t + 1, and the
completion's positions carry the mask, the engine's log-probability of the sampled token and the advantage.
Sampling seeds are a pure function of (train.seed, step, prompt), so a resumed run samples what the
uninterrupted one sampled.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from eva_jax.config import Config
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.infer.batching import Engine
from eva_jax.infer.requests import EngineConfig, Request
from eva_jax.infer.sampling import SamplingParams
from eva_jax.post.grpo_data import Prompt
from eva_jax.post.grpo_loss import group_advantages
from eva_jax.post.rewards import Rewards


@dataclasses.dataclass
class Rollout:
    rows: dict[str, np.ndarray]  # inputs, targets [R, T] int32; mask, behaviour_logp [R, T], advantages [R] fp32
    rewards: np.ndarray  # [P, G] total (weighted) reward
    components: dict[str, np.ndarray]  # each reward's own [P, G] values
    lengths: np.ndarray  # [R] completion tokens
    completions: list[str]  # decoded, P·G in row order


def row_len(cfg: Config) -> int:
    return min(cfg.train.seq_len + 1, cfg.model.max_position_embeddings)


def make_engine(cfg: Config, params: Any, rows: int) -> Engine:
    """An engine over `params` as they are (the policy itself). On a mesh of several devices they are
    gathered to the first one: the engine runs on one device (a sharded engine: docs/post_training.md)."""
    if len({d for leaf in jax.tree_util.tree_leaves(params) for d in getattr(leaf, "devices", lambda: ())()}) > 1:
        params = jax.device_put(params, jax.devices()[0])
    return Engine(cfg, params, EngineConfig(max_batch=rows, max_seq_len=row_len(cfg), min_prefill_len=16))


HELDOUT_STREAM = 2**31  # a "step" no rollout batch has: held-out sampling never repeats a rollout's draws


def seed_of(cfg: Config, step: int, prompt: int) -> int:
    return int(np.random.default_rng([cfg.train.seed, step, prompt]).integers(2**31 - 1))


def sample(engine: Engine, tokenizer: Tokenizer, prompts: list[Prompt], group: int, max_new: int,
           temperature: float, seeds: list[int]) -> list[Request]:
    """`group` completions of each prompt (streams 0..group-1 of the prompt's seed), prompt-major order."""
    requests = [engine.submit(p.ids, max_new, SamplingParams(temperature=temperature, seed=seed), (tokenizer.eos_id,),
                              stream=g)
                for p, seed in zip(prompts, seeds) for g in range(group)]
    engine.run()
    failed = [r for r in requests if r.finish_reason not in ("stop", "length")]
    if failed:
        raise RuntimeError(f"a rollout ended with {failed[0].finish_reason}: {failed[0].error}")
    return requests


def completion_text(tokenizer: Tokenizer, request: Request) -> str:
    ids = request.output[:-1] if request.finish_reason == "stop" else request.output
    return tokenizer.decode(ids, skip_special=True)


def training_rows(requests: list[Request], length: int) -> dict[str, np.ndarray]:
    """inputs/targets of prompt + completion, and per position the completion mask and the engine's log-prob."""
    n, t = len(requests), length - 1
    tokens = np.zeros((n, length), np.int32)
    mask = np.zeros((n, t), np.float32)
    behaviour = np.zeros((n, t), np.float32)
    for i, r in enumerate(requests):
        p, o = len(r.prompt), len(r.output)
        tokens[i, :p + o] = r.prompt + r.output
        mask[i, p - 1:p - 1 + o] = 1.0
        behaviour[i, p - 1:p - 1 + o] = r.logprobs
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "mask": mask, "behaviour_logp": behaviour}


def score(rewards: Rewards, texts: list[str], answers: list[str], shape: tuple[int, int]
          ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    scored = [rewards.score(text, answer) for text, answer in zip(texts, answers)]
    total = np.array([s for s, _ in scored], np.float32).reshape(shape)
    parts = {name: np.array([c[name] for _, c in scored], np.float32).reshape(shape) for name in rewards.names}
    return total, parts


def rollout(cfg: Config, params: Any, tokenizer: Tokenizer, prompts: list[Prompt], rewards: Rewards,
            step: int) -> Rollout:
    g = cfg.grpo
    engine = make_engine(cfg, params, len(prompts) * g.group_size)
    seeds = [seed_of(cfg, step, i) for i in range(len(prompts))]
    requests = sample(engine, tokenizer, prompts, g.group_size, g.max_new_tokens, g.temperature, seeds)
    texts = [completion_text(tokenizer, r) for r in requests]
    answers = [p.answer for p in prompts for _ in range(g.group_size)]
    total, parts = score(rewards, texts, answers, (len(prompts), g.group_size))
    rows = training_rows(requests, row_len(cfg))
    rows["advantages"] = group_advantages(total).reshape(-1)
    return Rollout(rows, total, parts, np.array([len(r.output) for r in requests]), texts)


def heldout_scores(cfg: Config, params: Any, tokenizer: Tokenizer, prompts: list[Prompt], rewards: Rewards,
                   rows: int = 64) -> dict[str, float]:
    """Mean reward on the held-out prompts (and each component's): one greedy completion per prompt, or
    grpo.heldout_samples sampled at grpo.temperature with seeds fixed per prompt (the same at every evaluation),
    run `rows` completions at a time."""
    k = cfg.grpo.heldout_samples
    temperature = 0.0 if k == 1 else cfg.grpo.temperature
    per_batch = max(1, rows // k)
    totals, parts = [], {name: [] for name in rewards.names}
    for start in range(0, len(prompts), per_batch):
        chunk = prompts[start:start + per_batch]
        engine = make_engine(cfg, params, len(chunk) * k)
        seeds = [seed_of(cfg, HELDOUT_STREAM, start + i) for i in range(len(chunk))]
        requests = sample(engine, tokenizer, chunk, k, cfg.grpo.max_new_tokens, temperature, seeds)
        total, comp = score(rewards, [completion_text(tokenizer, r) for r in requests],
                            [p.answer for p in chunk for _ in range(k)], (len(chunk), k))
        totals += total.ravel().tolist()
        for name in rewards.names:
            parts[name] += comp[name].ravel().tolist()
    return {"heldout_reward": float(np.mean(totals)), **{f"heldout_{n}": float(np.mean(v)) for n, v in parts.items()}}
