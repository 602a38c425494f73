"""Perplexity of documents of any length: rolling log-likelihood (eva_jax.eval.loglik.Scorer.rolling), reported
per token, per word and per byte, and as bits per byte.

Corpus-level numbers pool the documents: exp(-Σ log p / Σ units), as lm-evaluation-harness aggregates them.
Words are whitespace-separated pieces, bytes are UTF-8 bytes of the text; tokens are the tokenizer's (BOS is
context, never scored), so only bytes and words compare across tokenizers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eva_jax.data.sources import DataError, open_source, split
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.eval.context import EvalContext
from eva_jax.eval.errors import EvalError
from eva_jax.eval.loglik import Scorer, rolling_windows


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def metrics(logprob: float, tokens: int, words: int, nbytes: int) -> dict[str, float]:
    """Perplexities from a summed log-likelihood (natural log) and the units it covers."""
    nll = -logprob
    return {"token_perplexity": _exp(nll / max(tokens, 1)), "word_perplexity": _exp(nll / max(words, 1)),
            "byte_perplexity": _exp(nll / max(nbytes, 1)), "bits_per_byte": nll / max(nbytes, 1) / math.log(2)}


def evaluate(scorer: Scorer, tokenizer: Tokenizer, texts: list[str], stride: int | None = None,
             progress: Callable[[int], None] | None = None, docs: list[list[int]] | None = None) -> dict[str, Any]:
    """Corpus perplexities of the non-empty `texts` (`docs`: their token ids, if already encoded) and the
    counts behind them."""
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise EvalError("perplexity: every document is empty")
    docs = tokenizer.encode_batch(texts) if docs is None else docs
    scores = scorer.rolling(docs, stride=stride, progress=progress)
    logprob = sum(s for s, _ in scores)
    counts = {"tokens": sum(n for _, n in scores), "words": sum(len(t.split()) for t in texts),
              "bytes": sum(len(t.encode("utf-8")) for t in texts)}
    return {**metrics(logprob, counts["tokens"], counts["words"], counts["bytes"]), "documents": len(texts),
            **counts, "loglikelihood": logprob}


def load_texts(spec: str | None, limit: int | None, heldout_fraction: float) -> tuple[list[str], str]:
    """(documents, what they are). `spec`: a text file, a directory or glob of text files, a .jsonl (field
    "text") or a .parquet; None: the held-out files of the default training corpus (this interpreter's standard
    library, split as training splits it), which any checkpoint trained by `python -m eva_jax.train` never saw."""
    if spec is None:
        docs = open_source("stdlib")
        _, held = split(docs, heldout_fraction)
        keys = docs.keys()
        held = sorted(held, key=lambda i: keys[i])[:limit]
        return [docs[i] for i in held], f"stdlib held-out ({len(held)} files)"
    path = Path(spec)
    if not path.exists() and not any(ch in spec for ch in "*?["):
        raise EvalError(f"--perplexity-data={spec}: no such file or directory")
    try:
        docs = open_source(spec)
    except DataError as err:
        raise EvalError(f"--perplexity-data: {err}") from None
    n = len(docs) if limit is None else min(limit, len(docs))
    return [docs[i] for i in range(n)], spec


def check(ctx: EvalContext) -> None:
    spec = ctx.data.get("perplexity")
    if spec is not None and not Path(spec).exists() and not any(ch in spec for ch in "*?["):
        raise EvalError(f"--perplexity-data={spec}: no such file or directory")


def run(ctx: EvalContext) -> dict[str, Any]:
    texts, source = load_texts(ctx.data.get("perplexity"), ctx.limit, ctx.cfg.data.heldout_fraction)
    texts = [t for t in texts if t.strip()]
    scorer = ctx.scorer
    stride = ctx.option("stride", scorer.default_stride)
    docs = ctx.tokenizer.encode_batch(texts)
    windows = sum(len(rolling_windows(len(d), scorer.window, stride)) for d in docs)
    with ctx.progress(windows, "perplexity") as bar:
        out = evaluate(scorer, ctx.tokenizer, texts, stride=stride, progress=bar.update, docs=docs)
    return {**out, "source": source, "window": scorer.window, "stride": stride}
