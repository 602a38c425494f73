"""Greedy generation from a transformers checkpoint is token-identical to transformers' own `generate`."""

import numpy as np
import pytest

pytest.importorskip("transformers", reason="the hf extra (torch, transformers) is needed for parity tests")

import torch  # noqa: E402

from eva_jax.infer.api import generate  # noqa: E402
from eva_jax.infer.loading import load_checkpoint  # noqa: E402
from tests import hf_reference as ref  # noqa: E402
from tests.infer.conftest import ENGINE, ragged_prompts  # noqa: E402

YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 32,
        "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 0.8, "mscale_all_dim": 0.6}


@pytest.mark.slow  # ~30 s (own compiles); decode == forward is in the default run, forward == transformers too
def test_greedy_generate_matches_transformers(tmp_path):
    model, mtp = ref.build_v3(seed=4, rope_parameters=YARN, num_hidden_layers=2)
    cfg, params, tokenizer = load_checkpoint(ref.save_checkpoint(model, mtp, tmp_path))
    assert tokenizer is None  # a 97-id random model ships none
    prompts = ragged_prompts(cfg.model.vocab_size, lengths=(5, 17, 9))
    ours = generate(cfg, params, prompts, 64, engine_config=ENGINE)
    theirs = []
    for p in prompts:
        with torch.no_grad():
            out = model.generate(torch.tensor([p]), max_new_tokens=64, do_sample=False, eos_token_id=1,
                                 pad_token_id=1)
        theirs.append(out[0, len(p):].tolist())
    assert ours == theirs
    assert sum(len(t) for t in theirs) > 64 and np.mean([len(set(t)) for t in theirs]) > 5
