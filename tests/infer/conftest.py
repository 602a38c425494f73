"""Shared tiny models and engine shapes for tests/infer and tests/serve.

Compiles dominate these tests on a 2-core CPU, so every test uses one of two model configs and one engine
shape (4 rows, prompts of at most 32 tokens, 8-page tables), and parameters are drawn in numpy from the
abstract shapes (no init compile).
"""

import jax
import numpy as np
import pytest

import eva_jax
from eva_jax.infer.batching import EngineConfig

ENGINE = EngineConfig(max_batch=4, page_size=16, max_seq_len=128, row_buckets=(4,), min_prefill_len=32,
                      min_table_pages=8)
YARN = {"factor": 4.0, "original_max_position_embeddings": 32, "mscale": 1.0, "mscale_all_dim": 1.0}
# v3_tiny with YaRN (decoding runs past the original 32 positions), a vocabulary a trained BPE can fill, and
# two layers (one dense, one MoE: every kind, and layers are unrolled in the decode steps, so fewer compile faster).
MAIN = {"model.rope_scaling": YARN, "model.vocab_size": 320, "model.num_layers": 2}
# Two MTP depths (the general drafting path) over a 16-token vocabulary (small enough for a chi-square test).
SPEC = {**MAIN, "model.vocab_size": 16, "model.num_mtp_layers": 2}


def random_params(cfg, seed: int) -> dict:
    """Weights of std 0.1 (logits well separated, routing not flat), unit-ish norm gains, a small router bias."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "scale" in name:
            value = 1.0 + 0.1 * rng.standard_normal(leaf.shape)
        elif "router_bias" in name:
            value = 0.05 * rng.standard_normal(leaf.shape)
        elif "'embed'" in name:
            value = rng.standard_normal(leaf.shape)
        elif "wkv_b" in name:
            # Drawn in the [C, H, N+V] order wkv_b was once stored in, so these models stay the same models.
            *lead, h, k, c = leaf.shape
            value = np.moveaxis(0.1 * rng.standard_normal((*lead, c, h, k)), -3, -1)
        else:
            value = 0.1 * rng.standard_normal(leaf.shape)
        return np.asarray(value, leaf.dtype)

    import flax.linen as nn

    return jax.tree_util.tree_map_with_path(draw, nn.unbox(eva_jax.abstract_params(cfg)))


@pytest.fixture(scope="session")
def main_model():
    cfg = eva_jax.load_config("v3_tiny", **MAIN)
    return cfg, random_params(cfg, 1)


CORPUS = ["the quick brown fox jumps over the lazy dog", "a journey of a thousand miles begins with one step",
          "to be or not to be that is the question", "all that glitters is not gold",
          "hello world, this is a tiny model speaking in tongues"] * 20


@pytest.fixture(scope="session")
def tokenizer(main_model):
    """A byte-level BPE trained to fill main_model's vocabulary exactly."""
    from eva_jax.data.tokenizer import train_bpe

    tok = train_bpe(CORPUS, main_model[0].model.vocab_size)
    assert tok.vocab_size == main_model[0].model.vocab_size
    return tok


@pytest.fixture(scope="session")
def spec_model():
    cfg = eva_jax.load_config("v3_tiny", **SPEC)
    return cfg, random_params(cfg, 2)


def ragged_prompts(vocab: int, lengths=(5, 17, 9), seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(2, vocab, n)] for n in lengths]


def greedy_by_recompute(cfg, params, prompts, new_tokens: int, rows: int = 4, width: int = 128) -> list[list[int]]:
    """Greedy continuation recomputing the whole forward at every step (no cache). Rows are right-padded to one
    fixed [rows, width], which causality makes harmless, so the reference compiles once."""
    seqs = [list(p) for p in prompts]
    tokens = np.zeros((rows, width), np.int32)
    for _ in range(new_tokens):
        for i, s in enumerate(seqs):
            tokens[i, : len(s)] = s
        logits = np.asarray(eva_jax.logits(cfg, params, tokens))
        for i, s in enumerate(seqs):
            s.append(int(np.argmax(logits[i, len(s) - 1])))
    return [s[len(p):] for s, p in zip(seqs, prompts)]
