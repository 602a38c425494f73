"""Perplexity: the formulas, the counts behind them, a document's total equal to one direct forward when it fits
the window, and the data sources (a file, the stdlib held-out default)."""

from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np
import pytest

import eva_jax
from eva_jax.data.sources import is_heldout
from eva_jax.eval import perplexity
from eva_jax.eval.errors import EvalError
from eva_jax.eval.loglik import Scorer

TEXT = Path(__file__).parent / "fixtures" / "perplexity.txt"


def test_metrics_formulas():
    m = perplexity.metrics(-10.0, tokens=5, words=2, nbytes=20)
    assert m["token_perplexity"] == pytest.approx(math.exp(2.0))
    assert m["word_perplexity"] == pytest.approx(math.exp(5.0))
    assert m["byte_perplexity"] == pytest.approx(math.exp(0.5))
    assert m["bits_per_byte"] == pytest.approx(0.5 / math.log(2))
    assert perplexity.metrics(-1e6, 1, 1, 1)["token_perplexity"] == math.inf  # overflow is infinite, not an error


def test_a_document_inside_the_window_is_one_forward(main_model, tokenizer):
    cfg, params = main_model
    text = TEXT.read_text()
    ids = tokenizer.encode(text)
    assert 64 < len(ids) <= 512
    out = perplexity.evaluate(Scorer(cfg, params, batch_size=2), tokenizer, [text, "  \n"])
    logp = np.asarray(jax.nn.log_softmax(eva_jax.logits(cfg, params, np.asarray([ids]))[0, :-1], -1), np.float64)
    total = float(logp[np.arange(len(ids) - 1), ids[1:]].sum())
    assert out["documents"] == 1  # the blank one is skipped
    assert out["tokens"] == len(ids) - 1 and out["words"] == len(text.split())
    assert out["bytes"] == len(text.encode())
    assert out["loglikelihood"] == pytest.approx(total, rel=1e-5)
    assert out["token_perplexity"] == pytest.approx(math.exp(-total / (len(ids) - 1)), rel=1e-5)
    assert out["bits_per_byte"] == pytest.approx(-total / len(text.encode()) / math.log(2), rel=1e-5)
    # A window shorter than the document: the same counts, every token still scored once.
    short = perplexity.evaluate(Scorer(cfg, params, batch_size=2, max_length=32), tokenizer, [text], stride=16)
    assert short["tokens"] == out["tokens"] and math.isfinite(short["loglikelihood"])


def test_data_sources(tmp_path):
    texts, source = perplexity.load_texts(str(TEXT), None, 0.02)
    assert texts == [TEXT.read_text()] and source == str(TEXT)
    (tmp_path / "docs.jsonl").write_text('{"text": "one"}\n{"text": "two"}\n{"text": "three"}\n')
    assert perplexity.load_texts(str(tmp_path / "docs.jsonl"), 2, 0.02)[0] == ["one", "two"]
    with pytest.raises(EvalError, match="no such file"):
        perplexity.load_texts(str(tmp_path / "missing.txt"), None, 0.02)
    # The default: files of the training corpus (the stdlib) that training holds out.
    texts, source = perplexity.load_texts(None, 2, 0.02)
    assert len(texts) == 2 and source.startswith("stdlib held-out")


def test_the_default_corpus_is_the_held_out_split():
    from eva_jax.data.sources import open_source

    docs = open_source("stdlib")
    texts, _ = perplexity.load_texts(None, 3, 0.02)
    held = sorted(k for k in docs.keys() if is_heldout(k, 0.02))[:3]
    assert texts == [docs[docs.keys().index(k)] for k in held]
