"""The three compiled device steps of the engine: prefill, decode, speculative verify.

Each is jitted once per shape bucket (rows, prompt length or page-table width) and reused.
The cache pool and the per-slot draft state are donated, so XLA updates them in place.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Int

from eva_jax.config import ComputeConfig, ModelConfig
from eva_jax.infer import forward, sampling, speculative
from eva_jax.infer.speculative import DraftState
from eva_jax.nn.kv_cache import Pool, Rows

Params = dict[str, Any]


def empty_draft_state(cfg: ModelConfig, compute: ComputeConfig, rows: int) -> DraftState:
    d, dt = cfg.num_mtp_layers, jnp.dtype(compute.dtype)
    return DraftState(jnp.zeros((rows, d), jnp.int32), jnp.zeros((rows, d, cfg.vocab_size), jnp.float32),
                      jnp.zeros((rows, d, cfg.hidden_size), dt), jnp.zeros((rows, d + 1), jnp.int32))


def _scatter(state: DraftState, slots: Int[Array, " B"], rows: DraftState) -> DraftState:
    return jax.tree.map(lambda s, r: s.at[slots].set(r.astype(s.dtype)), state, rows)


@functools.partial(jax.jit, static_argnames=("cfg", "compute", "speculate"), donate_argnames=("pool", "state"))
def prefill(cfg: ModelConfig, compute: ComputeConfig, params: Params, pool: Pool, state: DraftState | None,
            tokens: Int[Array, "B T"], lengths: Int[Array, " B"], page_table: Int[Array, "B P"],
            samp: sampling.RowSampling, slots: Int[Array, " B"], speculate: bool
            ) -> tuple[Pool, DraftState | None, Array, Array]:
    """Right-padded prompts (positions 0..len-1) into the cache; returns the first new token of each row and
    its log-probability (eva_jax.infer.sampling.sample)."""
    b, t = tokens.shape
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    rows = Rows(positions, positions < lengths[:, None], page_table)
    h, pool = forward.main(cfg, compute, params, pool, tokens, rows, prefill=True)
    last = jnp.take_along_axis(h, (lengths - 1)[:, None, None], axis=1)[:, 0]
    first, logprob = sampling.sample(forward.head(cfg, compute, params, last), samp, lengths)
    if speculate:
        rows_state, pool = speculative.after_prefill(cfg, compute, params, pool, h, tokens, lengths, first, page_table,
                                                     samp)
        state = _scatter(state, slots, rows_state)
    return pool, state, first, logprob


@functools.partial(jax.jit, static_argnames=("cfg", "compute"), donate_argnames=("pool",))
def decode_step(cfg: ModelConfig, compute: ComputeConfig, params: Params, pool: Pool, tokens: Int[Array, " B"],
                positions: Int[Array, " B"], page_table: Int[Array, "B P"], samp: sampling.RowSampling
                ) -> tuple[Pool, Array, Array]:
    """Each row's newest token (at `positions`) through the model with the cache; returns the next tokens and
    their log-probabilities."""
    rows = Rows(positions[:, None], jnp.ones((positions.shape[0], 1), bool), page_table)
    h, pool = forward.main(cfg, compute, params, pool, tokens[:, None], rows, prefill=False)
    return pool, *sampling.sample(forward.head(cfg, compute, params, h[:, 0]), samp, positions + 1)


@functools.partial(jax.jit, static_argnames=("cfg", "compute"), donate_argnames=("pool", "state"))
def verify_step(cfg: ModelConfig, compute: ComputeConfig, params: Params, pool: Pool, state: DraftState,
                slots: Int[Array, " B"], n: Int[Array, " B"], page_table: Int[Array, "B P"], samp: sampling.RowSampling
                ) -> tuple[Pool, DraftState, Array, Array]:
    """One speculative step for the rows at `slots`: (pool, state, tokens [B, D+1], accepted [B])."""
    rows_state = jax.tree.map(lambda s: s[slots], state)
    tokens, accepted, rows_state, pool = speculative.verify_step(cfg, compute, params, pool, rows_state, n, page_table,
                                                                 samp)
    return pool, _scatter(state, slots, rows_state), tokens, accepted
