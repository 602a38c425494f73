"""Log-likelihoods under the model: every token of a sequence given the tokens before it, continuations given
contexts, and rolling windows over documents longer than the context.

One jitted scoring function serves all three (and the server's `echo`/`logprobs`). Sequences are right-padded
(causal attention makes padding after a row's last token harmless) into buckets of power-of-two lengths and
row counts, so a whole evaluation compiles a handful of shapes. Results do not depend on what else is in the
batch or on the padding, up to floating-point reassociation.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from eva_jax import api
from eva_jax.config import Config, ModelConfig
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.infer.requests import bucket
from eva_jax.nn.model import STACKS, Transformer

Params = dict[str, Any]
MIN_LENGTH = 16  # shortest padded length: below it, more shapes cost more compiles than the padding costs


@dataclasses.dataclass
class TokenScores:
    """Scores of tokens[1:] of one sequence: entry i-1 is about tokens[i] given tokens[:i]."""

    logprobs: np.ndarray  # float32 [n-1]: log p(tokens[i] | tokens[:i])
    greedy: np.ndarray  # bool [n-1]: tokens[i] is the most likely token there
    top_ids: np.ndarray | None = None  # int32 [n-1, k]: the k most likely tokens, best first
    top_logprobs: np.ndarray | None = None  # float32 [n-1, k]


def model_logits(cfg: Config | ModelConfig, params: Params, tokens: Int[Array, "B T"]) -> Float[Array, "B T V"]:
    """The main model's logits from either parameter form: the scanned one (training, checkpoints) through
    `eva_jax.logits`, or the per-layer one the engine keeps (`dense_layers_0`, ...), which the server scores
    with so that it holds one copy of the weights."""
    if any(name in params for name in STACKS):
        return api.logits(cfg, params, tokens)
    model = Transformer(*api.split_config(cfg), scan_layers=False)
    return model.apply({"params": params}, tokens, with_mtp=False)["logits"]


@functools.partial(jax.jit, static_argnames=("cfg", "top_k"))
def _score(cfg: Config | ModelConfig, params: Params, tokens: Int[Array, "B T"], top_k: int
           ) -> tuple[Float[Array, "B T1"], Bool[Array, "B T1"], Int[Array, "B T1 K"], Float[Array, "B T1 K"]]:
    logits = model_logits(cfg, params, tokens)[:, :-1].astype(jnp.float32)
    targets = tokens[:, 1:]
    # logit - logsumexp rather than a log_softmax: one [B, T, V] array, not two.
    lse = jax.nn.logsumexp(logits, axis=-1)
    target = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0] - lse
    greedy = jnp.argmax(logits, axis=-1) == targets
    top, ids = jax.lax.top_k(logits, max(top_k, 1))
    return target, greedy, ids.astype(jnp.int32), top - lse[..., None]


@functools.partial(jax.jit, static_argnames=("cfg",))
def _last(cfg: Config | ModelConfig, params: Params, tokens: Int[Array, "B T"], lengths: Int[Array, " B"]
          ) -> Float[Array, "B V"]:
    """log p(· | row) after each row's last real token: every single-token continuation of it at once."""
    logits = model_logits(cfg, params, tokens).astype(jnp.float32)
    last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
    return last - jax.nn.logsumexp(last, axis=-1, keepdims=True)


def rolling_windows(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first) for each forward over tokens[start:end] of an n-token document: the window scores
    targets first..end-1, so every target 1..n-1 is scored exactly once. The first window scores all it holds;
    each later one ends `stride` targets further and keeps the `window - stride` tokens before its first
    target as context (stride = window - 1 gives lm-evaluation-harness's rolling windows)."""
    if not 1 <= stride <= window - 1:
        raise ValueError(f"stride={stride} must lie in [1, window - 1 = {window - 1}]")
    if n < 2:
        return []
    end = min(window, n)
    out = [(0, end, 1)]
    while end < n:
        new_end = min(end + stride, n)
        out.append((max(0, new_end - window), new_end, end))
        end = new_end
    return out


def encode_pair(tokenizer: Tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids with BOS, continuation ids). Whitespace at the end of the context moves to the continuation,
    and the continuation is the tail of the encoded whole, as lm-evaluation-harness splits them."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    ctx = tokenizer.encode(context)
    return ctx, tokenizer.encode(context + continuation)[len(ctx):]


class Scorer:
    """Batched scoring with one model: `score_tokens`, `loglikelihood`, `rolling`.

    `max_length` is the longest sequence one forward sees (default and ceiling: the model's
    max_position_embeddings); `batch_size` the most rows per forward. `progress(n)` is told how many
    sequences each forward finished."""

    def __init__(self, cfg: Config | ModelConfig, params: Params, batch_size: int = 8, max_length: int | None = None,
                 min_length: int = MIN_LENGTH) -> None:
        mc = api.model_config(cfg)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.cfg, self.params, self.batch_size = cfg, params, batch_size
        self.vocab_size = mc.vocab_size
        self.window = min(max_length or mc.max_position_embeddings, mc.max_position_embeddings)
        if self.window < 2:
            raise ValueError(f"max_length={self.window} must be at least 2 tokens")
        self.min_length = min(min_length, self.window)

    @property
    def default_stride(self) -> int:
        """Targets per rolling window after the first: half the window, so each has half a window of context."""
        return max(self.window // 2, 1)

    def _check(self, seq: Sequence[int], what: str) -> None:
        if len(seq) > self.window:
            raise ValueError(f"{what} is {len(seq)} tokens, longer than the {self.window}-token window")
        bad = [t for t in seq if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} in {what} is outside the vocabulary [0, {self.vocab_size})")

    def _batches(self, lengths: list[int]) -> list[tuple[list[int], int, int]]:
        """(indices, rows, padded length) per forward, longest sequences first so a batch pads little."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        out = []
        for at in range(0, len(order), self.batch_size):
            chunk = order[at: at + self.batch_size]
            t = bucket(lengths[chunk[0]], self.min_length, self.window)
            out.append((chunk, bucket(len(chunk), cap=self.batch_size), t))
        return out

    def score_tokens(self, sequences: Sequence[Sequence[int]], top_k: int = 0,
                     progress: Callable[[int], None] | None = None) -> list[TokenScores]:
        """Scores of every token after the first, for each sequence (each at most `max_length` tokens)."""
        seqs = [[int(t) for t in s] for s in sequences]
        for i, s in enumerate(seqs):
            self._check(s, f"sequence {i}")
        out: list[TokenScores | None] = [None] * len(seqs)
        for i, s in enumerate(seqs):
            if len(s) < 2:  # nothing to score: no forward for it
                out[i] = _empty(top_k)
        todo = [i for i, s in enumerate(seqs) if len(s) >= 2]
        for chunk, rows, t in self._batches([len(seqs[i]) for i in todo]):
            tokens = np.zeros((rows, t), np.int32)
            for r, j in enumerate(chunk):
                tokens[r, : len(seqs[todo[j]])] = seqs[todo[j]]
            target, greedy, ids, top = jax.device_get(_score(self.cfg, self.params, tokens, top_k))
            for r, j in enumerate(chunk):
                n = len(seqs[todo[j]]) - 1
                out[todo[j]] = TokenScores(target[r, :n], greedy[r, :n], ids[r, :n, :top_k] if top_k else None,
                                           top[r, :n, :top_k] if top_k else None)
            if progress is not None:
                progress(len(chunk))
        return out  # type: ignore[return-value]

    def _next_logprobs(self, contexts: list[list[int]]) -> list[np.ndarray]:
        """log p(· | context) after each context, float32 [V] each."""
        out: list[np.ndarray] = [np.empty(0)] * len(contexts)
        for chunk, rows, t in self._batches([len(c) for c in contexts]):
            tokens = np.zeros((rows, t), np.int32)
            lengths = np.ones((rows,), np.int32)
            for r, j in enumerate(chunk):
                tokens[r, : len(contexts[j])] = contexts[j]
                lengths[r] = len(contexts[j])
            last = jax.device_get(_last(self.cfg, self.params, tokens, lengths))
            for r, j in enumerate(chunk):
                out[j] = last[r]
        return out

    def loglikelihood(self, requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                      progress: Callable[[int], None] | None = None) -> list[tuple[float, bool]]:
        """(log p(continuation | context), whether greedy decoding would produce the continuation) for each
        (context ids, continuation ids). A context too long for the window loses tokens from its left.
        Single-token continuations of one context (multiple-choice letters) share one forward."""
        seqs, singles, multi = [], {}, []
        for i, (context, continuation) in enumerate(requests):
            ctx, cont = [int(t) for t in context], [int(t) for t in continuation]
            if not ctx:
                raise ValueError(f"request {i} has an empty context; give at least one token (e.g. BOS)")
            if not cont:
                raise ValueError(f"request {i} has an empty continuation")
            if len(cont) >= self.window:
                raise ValueError(f"request {i}'s continuation is {len(cont)} tokens; the {self.window}-token window "
                                 f"leaves room for at most {self.window - 1}")
            seq = (ctx + cont)[-self.window:]
            self._check(seq, f"request {i}")
            seqs.append((seq, len(cont)))
            if len(cont) == 1:
                singles.setdefault(tuple(seq[:-1]), []).append(i)
            else:
                multi.append(i)
        out: list[tuple[float, bool]] = [(0.0, False)] * len(seqs)
        keys = list(singles)
        for key, logp in zip(keys, self._next_logprobs([list(k) for k in keys])):
            best = int(np.argmax(logp))
            for i in singles[key]:
                token = seqs[i][0][-1]
                out[i] = (float(logp[token]), token == best)
        if progress is not None and singles:
            progress(sum(len(v) for v in singles.values()))
        scores = self.score_tokens([seqs[i][0] for i in multi], progress=progress)
        for i, s in zip(multi, scores):
            n = seqs[i][1]
            out[i] = (float(np.sum(s.logprobs[-n:], dtype=np.float64)), bool(np.all(s.greedy[-n:])))
        return out

    def rolling(self, documents: Sequence[Sequence[int]], stride: int | None = None,
                progress: Callable[[int], None] | None = None) -> list[tuple[float, int]]:
        """(sum of log p(token | what precedes it), tokens scored) for each document of any length: every token
        after the first (BOS) is scored once, with at least `window - stride` tokens of context where the
        document has them (windows of `rolling_windows`; default stride: half the window)."""
        stride = self.default_stride if stride is None else stride
        pieces, owners = [], []
        for d, doc in enumerate(documents):
            doc = [int(t) for t in doc]
            for start, end, first in rolling_windows(len(doc), self.window, stride):
                pieces.append(doc[start:end])
                owners.append((d, first - start - 1))
        totals = [0.0] * len(documents)
        for (d, skip), scores in zip(owners, self.score_tokens(pieces, progress=progress)):
            totals[d] += float(np.sum(scores.logprobs[skip:], dtype=np.float64))
        return [(total, max(len(doc) - 1, 0)) for total, doc in zip(totals, documents)]


def _empty(top_k: int) -> TokenScores:
    return TokenScores(np.zeros((0,), np.float32), np.zeros((0,), bool),
                       np.zeros((0, top_k), np.int32) if top_k else None,
                       np.zeros((0, top_k), np.float32) if top_k else None)
