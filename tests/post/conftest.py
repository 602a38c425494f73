"""A tiny model and its byte-level BPE, exported as a Hugging Face checkpoint directory (with the tokenizer)
for --init, and synthetic conversations (two-digit sums: a verifiable task with a known answer)."""

import json

import numpy as np
import pytest

import eva_jax
from eva_jax.data.tokenizer import train_bpe
from tests.infer.conftest import random_params

TINY = {"model.vocab_size": 320, "model.num_layers": 2, "compute.dtype": "float32", "model.remat_policy": "none"}


def sums(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        a, b = (int(x) for x in rng.integers(10, 99, 2))
        out.append({"prompt": f"What is {a} + {b}?", "completion": f"{a} + {b} = {a + b}. #### {a + b}"})
    return out


@pytest.fixture(scope="session")
def sft_tokenizer():
    texts = [f"{r['prompt']} {r['completion']}" for r in sums(200, 1)] + ["system user assistant hello"] * 5
    return train_bpe(texts, 320, "sums_bpe")


@pytest.fixture(scope="session")
def tiny_model():
    cfg = eva_jax.load_config("v3_tiny", **TINY)
    return cfg, random_params(cfg, 3)


@pytest.fixture(scope="session")
def hf_init(tiny_model, sft_tokenizer, tmp_path_factory):
    cfg, params = tiny_model
    out = eva_jax.to_hf(cfg, params, tmp_path_factory.mktemp("init"), dtype="float32")
    sft_tokenizer.save(out)
    return out


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
