"""With document isolation (segment ids), nothing of one packed document reaches another's counted logits:
main or any MTP depth. MTP depth k's slot i joins h^{k-1}_i with token i+k, so at a document boundary it mixes
two documents; such a slot must be seen by no other slot."""

import jax
import numpy as np
import pytest

import eva_jax
from eva_jax.nn.model import Transformer, mtp_segments

T, SPLIT = 16, 7  # document A holds positions 0..6, document B 7..15


@pytest.fixture(scope="module")
def model():
    cfg = eva_jax.load_config("v3_tiny", **{"model.num_mtp_layers": 2})
    return cfg, eva_jax.init_params(cfg, seed=3)


def outputs(cfg, params, toks):
    seg = np.where(np.arange(T) < SPLIT, 0, 1)[None].astype(np.int32)
    pos = np.where(np.arange(T) < SPLIT, np.arange(T), np.arange(T) - SPLIT)[None].astype(np.int32)
    model = Transformer(cfg.model, cfg.compute)
    fn = jax.jit(lambda p, t: model.apply({"params": p}, t, positions=pos, segment_ids=seg))
    return fn(params, toks)


def test_changing_document_a_moves_nothing_counted_in_document_b(model):
    cfg, params = model
    rng = np.random.default_rng(0)
    toks = rng.integers(0, cfg.model.vocab_size, (1, T)).astype(np.int32)
    other = toks.copy()
    other[0, SPLIT - 1] = (other[0, SPLIT - 1] + 1) % cfg.model.vocab_size  # A's last token
    a, b = outputs(cfg, params, toks), outputs(cfg, params, other)
    np.testing.assert_array_equal(np.asarray(a["logits"])[0, SPLIT:], np.asarray(b["logits"])[0, SPLIT:])
    for k, (la, lb) in enumerate(zip(a["mtp_logits"], b["mtp_logits"]), start=1):
        # Depth k's slot i predicts token i+k+1 from tokens i..i+k: counted in B when all of them are in B.
        counted = slice(SPLIT, T - k)
        diff = np.abs(np.asarray(la)[0, counted] - np.asarray(lb)[0, counted]).max()
        assert diff == 0.0, f"depth {k}: B's logits moved by {diff}"


def test_boundary_slots_get_ids_of_their_own():
    seg = np.array([[0, 0, 0, 1, 1, 1, 2]], np.int32)
    got = np.asarray(mtp_segments(seg, 1))[0]
    assert list(got[[0, 1, 3, 4]]) == [0, 0, 1, 1]
    mixed = got[[2, 5]]
    assert (mixed < 0).all() and len(set(mixed)) == 2
