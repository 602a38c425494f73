"""FIM in PSM form, concat-then-split packing with segment ids and positions, document isolation."""

import dataclasses
import itertools

import jax.numpy as jnp
import numpy as np
import pytest

import eva_jax
from eva_jax.data import pipeline
from eva_jax.data.fim import document_tokens
from eva_jax.data.tokenizer import train_bpe
from eva_jax.nn.model import Transformer

TEXTS = [f"def function_{i}(x):\n    return x * {i} + {i * i}\n" * (1 + i % 4) for i in range(40)]


@pytest.fixture(scope="module")
def tok():
    return train_bpe(TEXTS, 400)


def test_fim_psm_layout_and_content(tok):
    rng = np.random.default_rng(0)
    text = TEXTS[7]
    ids = document_tokens(text, tok, rng, fim_rate=1.0)
    assert ids[0] == tok.bos_id and ids[1] == tok.fim_begin_id and ids[-1] == tok.eos_id
    hole, end = ids.index(tok.fim_hole_id), ids.index(tok.fim_end_id)
    prefix, suffix, middle = ids[2:hole], ids[hole + 1:end], ids[end + 1:-1]
    assert tok.decode(prefix) + tok.decode(middle) + tok.decode(suffix) == text
    plain = document_tokens(text, tok, rng, fim_rate=0.0)
    assert plain == [tok.bos_id, *tok.encode(text, bos=False), tok.eos_id]


def test_fim_rate_is_respected(tok):
    rng = np.random.default_rng(1)
    hits = sum(tok.fim_begin_id in document_tokens("abcdefgh", tok, rng, 0.1) for _ in range(2000))
    assert 140 <= hits <= 260


def test_packing_keeps_every_token_and_marks_documents(tok):
    cfg = eva_jax.load_config("v3_tiny", **{"train.seq_len": 31, "train.micro_batch": 2, "data.fim_rate": 0.0})
    docs = TEXTS[:10]
    data = pipeline.rows(cfg, docs, list(range(10)), tok, train=False)
    rows = [r for batch in data for r in zip(batch["tokens"], batch["tokens_segment_ids"], batch["tokens_positions"])]
    assert all(len(r[0]) == 32 for r in rows)
    stream = np.concatenate([r[0][r[1] > 0] for r in rows])  # segment 0 marks padding of the final row
    expected = list(itertools.chain.from_iterable(document_tokens(d, tok, None, 0.0) for d in docs))
    assert list(stream) == expected[: len(stream)] and len(expected) - len(stream) < 64  # only the tail remains
    tokens, seg, pos = rows[1]
    for s in np.unique(seg):
        np.testing.assert_array_equal(np.diff(pos[seg == s]), 1)  # positions count up inside a document
    starts = np.flatnonzero(tokens == tok.bos_id)
    assert (pos[starts] == 0).all()


def test_isolated_attention_over_a_packed_row_equals_each_document_alone():
    cfg = eva_jax.load_config("v3_tiny")
    params = eva_jax.init_params(cfg, seed=2)
    rng = np.random.default_rng(3)
    lengths = [5, 9, 4]
    docs = [rng.integers(0, 256, n) for n in lengths]
    row = np.concatenate(docs)[None]
    seg = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)])[None]
    pos = np.concatenate([np.arange(n) for n in lengths])[None]
    model = Transformer(cfg.model, dataclasses.replace(cfg.compute, moe_impl="ragged"))
    packed = model.apply({"params": params}, jnp.asarray(row), positions=jnp.asarray(pos),
                         segment_ids=jnp.asarray(seg), with_mtp=False)["logits"][0]
    offset = 0
    for doc in docs:
        alone = model.apply({"params": params}, jnp.asarray(doc[None]), with_mtp=False)["logits"][0]
        np.testing.assert_allclose(packed[offset: offset + len(doc)], alone, rtol=1e-5, atol=1e-5)
        offset += len(doc)


def test_long_documents_are_cut_at_line_ends_into_pieces_that_cover_them():
    from eva_jax.data.pipeline import pieces

    long = "".join(f"line {i} " + "x" * (i % 13) + "\n" for i in range(400))
    docs = ["short\n", long, "y" * 50]  # the last one has no line end: hard cuts
    spans = pieces(docs, [0, 1, 2], 100)
    assert spans[0] == (0, 0, 6)
    for doc in (1, 2):
        mine = [(a, b) for d, a, b in spans if d == doc]
        assert "".join(docs[doc][a:b] for a, b in mine) == docs[doc]  # nothing lost, nothing repeated
        assert all(b - a <= 100 for a, b in mine) and len(mine) > 1 or len(docs[doc]) <= 100
    assert all(docs[1][b - 1] == "\n" for d, a, b in spans if d == 1)
    assert pieces(docs, [1], 0) == [(1, 0, len(long))]
