"""MTP speculative decoding (reference §5): the MTP modules draft D tokens, one main-model forward verifies them.

Bookkeeping, for a row whose newest token x_n is not yet in the main cache and whose drafts d_1..d_D are
queued for positions n+1..n+D:
  * verify: the main model runs on [x_n, d_1..d_D] at positions n..n+D; a drafts accepted, one more token
    comes from the main model, so the row advances to n' = n + a + 1.
  * MTP depth k at slot j reads (h^{k-1}_j, x_{j+k}); its cache entry is final once x_{j+k} is accepted. Every
    step re-runs each depth over the window j ∈ [n-D, n+D] (main hiddens of n-D..n-1 are carried from the
    previous step), which rewrites every entry a rejected draft touched and stores only slots j < n'.
  * depth k drafts x_{n'+k} from slot n'-1, feeding the draft of depth k-1 as its token: D drafts per step.
Acceptance is standard speculative sampling: accept d with probability min(1, p(d)/q(d)), else draw from
max(p - q, 0); greedy rows use one-hot p and q, which makes this "accept while equal to the argmax".
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from eva_jax.config import ComputeConfig, ModelConfig
from eva_jax.infer import forward, sampling
from eva_jax.nn.kv_cache import Pool, Rows

Params = dict[str, Any]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class DraftState:
    """What a row carries between steps: D = num_mtp_layers."""

    drafts: Int[Array, "B D"]  # tokens for positions n+1..n+D
    draft_probs: Float[Array, "B D V"]  # the distribution each draft was drawn from
    hidden: Float[Array, "B D Dm"]  # main-model hiddens of positions n-D..n-1
    tokens: Int[Array, "B D1"]  # x_{n-D}..x_n (D + 1 tokens)


def _set_at(z: Int[Array, "B W"], index: Int[Array, " B"], value: Int[Array, " B"]) -> Int[Array, "B W"]:
    return jnp.where(jnp.arange(z.shape[1])[None] == index[:, None], value[:, None], z)


def _row_slice(x: Array, start: Int[Array, " B"], length: int) -> Array:
    """x[b, start[b] : start[b] + length] for every row b."""
    idx = start[:, None] + jnp.arange(length)[None]
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


def draft_chain(cfg: ModelConfig, compute: ComputeConfig, params: Params, pool: Pool, hidden: Float[Array, "B W Dm"],
                z: Int[Array, "B Z"], base: Int[Array, " B"], frontier: Int[Array, " B"], page_table: Array,
                samp: sampling.RowSampling, prefill: bool) -> tuple[Array, Array, Array, Pool]:
    """Runs MTP depths 1..D over slots base..base+W-1 (hidden holds the main hiddens there; z[i] is the token
    at position base+i, filled in with drafts as they are made). Returns (drafts [B, D], their
    distributions [B, D, V], z with the drafts written, pool)."""
    w = hidden.shape[1]
    slots = base[:, None] + jnp.arange(w)[None]
    rows = Rows(slots, (slots >= 0) & (slots < frontier[:, None]), page_table)
    last = frontier - 1 - base
    drafts, probs = [], []
    h = hidden
    for depth in range(1, cfg.num_mtp_layers + 1):
        h, pool = forward.mtp(cfg, compute, params, depth, pool, h, z[:, depth: depth + w], rows, prefill)
        logits = forward.head(cfg, compute, params, _row_slice(h, last, 1)[:, 0])
        q = sampling.distribution(logits, samp)
        token = sampling.draw(q, sampling.row_keys(samp, frontier + depth, sampling.DRAFT))
        z = _set_at(z, frontier + depth - base, token)
        drafts.append(token)
        probs.append(q)
    return jnp.stack(drafts, 1), jnp.stack(probs, 1), z, pool


def accept(logits: Float[Array, "B D1 V"], state: DraftState, samp: sampling.RowSampling,
           n: Int[Array, " B"]) -> tuple[Int[Array, "B D1"], Int[Array, " B"]]:
    """Tokens for positions n+1..n+D+1 (the first `accepted`+1 are real) and how many drafts were accepted."""
    b, d1, v = logits.shape
    d = d1 - 1
    flat = jnp.repeat(jnp.arange(b), d1)
    rep = jax.tree.map(lambda x: x[flat], samp)
    p = sampling.distribution(logits.reshape(b * d1, v), rep).reshape(b, d1, v)
    p_draft = jnp.take_along_axis(p[:, :d], state.drafts[..., None], -1)[..., 0]
    q_draft = jnp.take_along_axis(state.draft_probs, state.drafts[..., None], -1)[..., 0]
    positions = n[:, None] + 1 + jnp.arange(d)[None]
    rep_d = jax.tree.map(lambda x: jnp.repeat(x, d), samp)
    u = sampling.uniform(sampling.row_keys(rep_d, positions.reshape(-1), sampling.ACCEPT)).reshape(b, d)
    # u < p/q, written without the division; q(d) > 0 because d was drawn from q.
    ok = u * q_draft < p_draft
    accepted = jnp.sum(jnp.cumprod(ok.astype(jnp.int32), axis=1), axis=1)
    q_next = jnp.concatenate([state.draft_probs, jnp.zeros((b, 1, v), p.dtype)], 1)
    p_a = _row_slice(p, accepted, 1)[:, 0]
    residual = jnp.maximum(p_a - _row_slice(q_next, accepted, 1)[:, 0], 0.0)
    mass = residual.sum(-1, keepdims=True)
    residual = jnp.where(mass > 0, residual / jnp.where(mass > 0, mass, 1.0), p_a)
    bonus = sampling.draw(residual, sampling.row_keys(samp, n + accepted + 1, sampling.RESIDUAL))
    tokens = jnp.concatenate([state.drafts, jnp.zeros((b, 1), jnp.int32)], 1)
    tokens = _set_at(tokens, accepted, bonus)
    return tokens, accepted


def verify_step(cfg: ModelConfig, compute: ComputeConfig, params: Params, pool: Pool, state: DraftState,
                n: Int[Array, " B"], page_table: Array, samp: sampling.RowSampling
                ) -> tuple[Array, Array, DraftState, Pool]:
    """One main forward over [x_n, drafts], acceptance, then the next drafts.
    Returns (tokens [B, D+1], accepted [B], next state, pool)."""
    d = cfg.num_mtp_layers
    x_n = state.tokens[:, -1:]
    positions = n[:, None] + jnp.arange(d + 1)[None]
    rows = Rows(positions, jnp.ones(positions.shape, bool), page_table)
    h, pool = forward.main(cfg, compute, params, pool, jnp.concatenate([x_n, state.drafts], 1), rows, prefill=False)
    tokens, accepted = accept(forward.head(cfg, compute, params, h), state, samp, n)
    frontier = n + accepted + 1
    hidden = jnp.concatenate([state.hidden, h], 1)  # positions n-D..n+D
    z = jnp.concatenate([state.tokens, state.drafts, jnp.zeros((n.shape[0], d + 1), jnp.int32)], 1)
    z = _set_at(z, d + accepted + 1, _row_slice(tokens, accepted, 1)[:, 0])
    drafts, probs, z, pool = draft_chain(cfg, compute, params, pool, hidden, z, n - d, frontier, page_table, samp,
                                         False)
    nxt = DraftState(drafts, probs, _row_slice(hidden, accepted + 1, d), _row_slice(z, accepted + 1, d + 1))
    return tokens, accepted, nxt, pool


def after_prefill(cfg: ModelConfig, compute: ComputeConfig, params: Params, pool: Pool, hidden: Float[Array, "B T Dm"],
                  prompt: Int[Array, "B T"], lengths: Int[Array, " B"], first: Int[Array, " B"],
                  page_table: Array, samp: sampling.RowSampling) -> tuple[DraftState, Pool]:
    """Fills every MTP cache over the prompt and makes the first drafts (the main model made x_P = first)."""
    b, t = prompt.shape
    d = cfg.num_mtp_layers
    z = jnp.concatenate([prompt, jnp.zeros((b, d + 1), jnp.int32)], 1)
    z = _set_at(z, lengths, first)
    base = jnp.zeros((b,), jnp.int32)
    drafts, probs, z, pool = draft_chain(cfg, compute, params, pool, hidden, z, base, lengths, page_table, samp, True)
    # Positions before 0 (short prompts) hold junk that nothing reads: their cache slots are never written.
    padded_h = jnp.concatenate([jnp.zeros((b, d) + hidden.shape[2:], hidden.dtype), hidden], 1)
    padded_z = jnp.concatenate([jnp.zeros((b, d), jnp.int32), z], 1)
    state = DraftState(drafts, probs, _row_slice(padded_h, lengths, d), _row_slice(padded_z, lengths, d + 1))
    return state, pool
