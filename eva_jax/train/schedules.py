"""DeepSeek-V3's schedules (reference §8), laid out per optimizer step on the host.

Phases are fractions of the run's tokens, so a 200-step CPU run has the same shape as the 14.8T-token run:
batch ramp (3072 -> 15360 sequences over the first 469B tokens), learning rate (warm-up, constant, cosine
decay, two constant tails), MTP weight λ (0.3 then 0.1) and the bias-update speed γ (0.001 then 0).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from eva_jax.config import Config


@dataclasses.dataclass(frozen=True)
class Plan:
    batch: np.ndarray  # sequences per step
    tokens_before: np.ndarray  # tokens seen before each step (int64)
    lr: np.ndarray
    mtp_lambda: np.ndarray
    gamma: np.ndarray
    seq_len: int

    @property
    def total_tokens(self) -> int:
        return int(self.tokens_before[-1] + self.batch[-1] * self.seq_len)


def _ramp(cfg: Config, ramp_tokens: float) -> np.ndarray:
    t = cfg.train
    out, seen = np.empty(t.steps, np.int64), 0
    for step in range(t.steps):
        share = 1.0 if ramp_tokens <= 0 else min(1.0, seen / ramp_tokens)
        size = t.batch_start + share * (t.global_batch - t.batch_start)
        out[step] = max(t.micro_batch, int(size) // t.micro_batch * t.micro_batch)
        seen += out[step] * t.seq_len
    return out


def batch_sizes(cfg: Config) -> np.ndarray:
    """Sequences per step: linear in tokens from batch_start to global_batch, in whole micro-batches, over the
    first batch_ramp_frac of the run's tokens (a fixed point: the ramp itself changes the run's tokens)."""
    t = cfg.train
    total = float(t.steps * t.global_batch * t.seq_len)
    for _ in range(4):
        batch = _ramp(cfg, t.batch_ramp_frac * total)
        total = float(batch.sum() * t.seq_len)
    return batch


def learning_rate(tokens: float, total: float, cfg: Config) -> float:
    o = cfg.optim
    warm, flat, decay, tail = (f * total for f in (o.warmup_frac, o.constant_until_frac, o.decay_until_frac,
                                                   o.tail_until_frac))
    if tokens < warm:
        return o.lr_peak * tokens / warm
    if tokens < flat:
        return o.lr_peak
    if tokens < decay:
        progress = (tokens - flat) / (decay - flat)
        return o.lr_decayed + (o.lr_peak - o.lr_decayed) * 0.5 * (1 + math.cos(math.pi * progress))
    return o.lr_decayed if tokens < tail else o.lr_final


def plan(cfg: Config) -> Plan:
    t = cfg.train
    batch = batch_sizes(cfg)
    tokens_after = np.cumsum(batch * t.seq_len)
    tokens_before = tokens_after - batch * t.seq_len
    total = float(tokens_after[-1])
    # The learning rate of a step is taken at the tokens it will have seen, so step 0 already moves.
    lr = np.array([learning_rate(float(x), total, cfg) for x in tokens_after], np.float32)
    mtp = np.where(tokens_before < t.mtp_switch_frac * total, t.mtp_lambda, t.mtp_lambda_late).astype(np.float32)
    gamma = np.where(tokens_before < t.bias_stop_frac * total, t.bias_gamma, 0.0).astype(np.float32)
    if not t.bias_update:
        gamma[:] = 0.0
    return Plan(batch, tokens_before, lr, mtp, gamma, t.seq_len)
