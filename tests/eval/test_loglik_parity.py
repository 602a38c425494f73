"""eva_jax.eval.loglik against transformers: log-likelihoods, per-token log-probs, top-k and greedy flags of a
random tiny DeepseekV3ForCausalLM checkpoint equal transformers' own (fp32, 1e-4 relative)."""

from __future__ import annotations

import numpy as np
import pytest

import eva_jax
from eva_jax.eval.loglik import Scorer

torch = pytest.importorskip("torch", reason="the hf extra (torch, transformers) is needed for parity tests")
pytest.importorskip("transformers", reason="the hf extra (torch, transformers) is needed for parity tests")

from tests import hf_reference as ref  # noqa: E402


@pytest.fixture(scope="module")
def hf_case(tmp_path_factory):
    """A random tiny DeepseekV3ForCausalLM (MoE, YaRN-free, MTP) saved as a checkpoint and loaded by Eva."""
    model, mtp = ref.build_v3(seed=11)
    directory = ref.save_checkpoint(model, mtp, tmp_path_factory.mktemp("hf"))
    cfg, params = eva_jax.from_hf(directory)
    return model, cfg, params


def random_ids(rng, vocab, n):
    return [int(t) for t in rng.integers(2, vocab, n)]


def hf_logprobs(model, ids: list[int]) -> np.ndarray:
    """log p(ids[i] | ids[:i]) for i >= 1, from transformers, one unpadded sequence at a time."""
    with torch.no_grad():
        logits = model(torch.as_tensor([ids])).logits[0, :-1].double()
    logp = torch.log_softmax(logits, dim=-1)
    return logp[torch.arange(len(ids) - 1), torch.as_tensor(ids[1:])].numpy()


def test_loglikelihoods_match_transformers(hf_case):
    model, cfg, params = hf_case
    rng = np.random.default_rng(0)
    vocab = cfg.model.vocab_size
    # Single-token continuations (multiple-choice letters: one shared forward) and longer ones.
    requests = [([0, *random_ids(rng, vocab, n)], random_ids(rng, vocab, k))
                for n, k in [(5, 1), (5, 1), (12, 3), (30, 7), (1, 1), (20, 1), (9, 12)]]
    ours = Scorer(cfg, params, batch_size=4).loglikelihood(requests)
    worst = 0.0
    for (ctx, cont), (ll, greedy) in zip(requests, ours):
        theirs = hf_logprobs(model, ctx + cont)[-len(cont):]
        worst = max(worst, abs(ll - theirs.sum()) / abs(theirs.sum()))
        with torch.no_grad():
            logits = model(torch.as_tensor([ctx + cont])).logits[0].numpy()
        expect_greedy = all(int(np.argmax(logits[len(ctx) - 1 + j])) == cont[j] for j in range(len(cont)))
        assert greedy == expect_greedy
    assert worst <= 1e-4, f"max relative difference of log-likelihoods {worst:.3g}"


def test_token_logprobs_and_top_k_match_transformers(hf_case):
    model, cfg, params = hf_case
    rng = np.random.default_rng(1)
    seqs = [[0, *random_ids(rng, cfg.model.vocab_size, n)] for n in (40, 17, 3)]
    scores = Scorer(cfg, params, batch_size=4).score_tokens(seqs, top_k=3)
    for seq, s in zip(seqs, scores):
        theirs = hf_logprobs(model, seq)
        assert s.logprobs.shape == (len(seq) - 1,)
        np.testing.assert_allclose(s.logprobs, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.as_tensor([seq])).logits[0, :-1].double(), -1).numpy()
        np.testing.assert_array_equal(s.top_ids[:, 0], logp.argmax(-1))
        np.testing.assert_allclose(s.top_logprobs, np.sort(logp, -1)[:, ::-1][:, :3], rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(s.greedy, logp.argmax(-1) == np.asarray(seq[1:]))
