"""MTP speculative decoding: greedy output identical to plain decoding, drafts identical to the MTP modules'
predictions over the full sequence, and under sampling the exact output distribution of the model."""

import numpy as np
import pytest
from scipy import stats

from eva_jax.api import forward
from eva_jax.infer.batching import Engine
from eva_jax.infer.sampling import SamplingParams
from tests.infer.conftest import ENGINE, ragged_prompts

SPEC_ENGINE = ENGINE.__class__(**{**ENGINE.__dict__, "speculative": True})


def full_outputs(cfg, params, seqs, rows=4, width=128):
    """Main logits and every MTP depth's logits of each sequence, recomputed without a cache."""
    tokens = np.zeros((rows, width), np.int32)
    out = []
    for start in range(0, len(seqs), rows):
        chunk = seqs[start: start + rows]
        tokens[:] = 0
        for i, s in enumerate(chunk):
            tokens[i, : len(s)] = s
        res = forward(cfg.model, cfg.compute, params, tokens, True)
        main, mtp = np.asarray(res["logits"]), [np.asarray(m) for m in res["mtp_logits"]]
        out += [(main[i], [m[i] for m in mtp]) for i in range(len(chunk))]
    return out


def greedy_reference(cfg, params, prompts, new_tokens):
    seqs = [list(p) for p in prompts]
    for _ in range(new_tokens):
        for s, (main, _) in zip(seqs, full_outputs(cfg, params, seqs)):
            s.append(int(np.argmax(main[len(s) - 1])))
    return [s[len(p):] for s, p in zip(seqs, prompts)]


def test_speculative_greedy_equals_plain_greedy_and_reports_acceptance(spec_model):
    cfg, params = spec_model
    prompts = ragged_prompts(cfg.model.vocab_size, lengths=(5, 17, 9, 2))
    engine = Engine(cfg, params, SPEC_ENGINE)
    requests = [engine.submit(p, 40, stream=i) for i, p in enumerate(prompts)]
    engine.run()
    ours = [r.output for r in requests]
    assert ours == greedy_reference(cfg, params, prompts, 40)
    s = engine.stats()
    assert 0 < s["acceptance_rate"] < 1
    assert s["tokens_per_main_step"] == pytest.approx(1 + 2 * s["acceptance_rate"])
    assert sum(r.main_steps for r in requests) < sum(len(r.output) - 1 for r in requests)  # fewer main steps
    assert s["free_pages"] == s["total_pages"]


def test_drafts_are_the_mtp_modules_predictions(spec_model):
    cfg, params = spec_model
    prompt = ragged_prompts(cfg.model.vocab_size, lengths=(7,), seed=3)[0]
    engine = Engine(cfg, params, SPEC_ENGINE)
    request = engine.submit(prompt, 30)
    steps = []  # (the sequence so far, drafts for the next two positions)
    while not engine.idle:
        engine.step()
        if not request.done:
            steps.append((prompt + request.output, [int(t) for t in np.asarray(engine.state.drafts[request.slot])]))
    # Depth 1 at slot n-1 reads tokens up to x_n and predicts x_{n+1}; depth 2 at slot n-1 reads x_{n+1} = d1
    # too and predicts x_{n+2}. Recompute both without a cache on the sequence with d1 appended.
    recomputed = full_outputs(cfg, params, [seq + [d1] for seq, (d1, _) in steps])
    for (seq, (d1, d2)), (_, (mtp1, mtp2)) in zip(steps, recomputed):
        n = len(seq) - 1
        assert (d1, d2) == (int(np.argmax(mtp1[n - 1])), int(np.argmax(mtp2[n - 1])))
    assert len(steps) > 10


def exact_two_token_distribution(cfg, params, prompt, temperature):
    """P(t1, t2) and P(t3) of the model (temperature-scaled softmax), by enumeration over the vocabulary."""
    v = cfg.model.vocab_size

    def probs(logits):
        z = logits / temperature
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p1 = probs(full_outputs(cfg, params, [prompt])[0][0][len(prompt) - 1])
    seqs2 = [prompt + [a] for a in range(v)]
    p2 = np.stack([probs(o[0][len(prompt)]) for o in full_outputs(cfg, params, seqs2)])
    joint = p1[:, None] * p2
    seqs3 = [prompt + [a, b] for a in range(v) for b in range(v)]
    p3 = np.stack([probs(o[0][len(prompt) + 1]) for o in full_outputs(cfg, params, seqs3)]).reshape(v, v, v)
    return joint, (joint[..., None] * p3).sum((0, 1))


def chi_square_p(counts, expected_probs):
    expected = expected_probs.ravel() * counts.sum()
    counts = counts.ravel()
    big = expected >= 5  # pool the sparse cells so the chi-square approximation holds
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    keep = exp > 0
    obs, exp = obs[keep], exp[keep].astype(np.float64)
    return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


def test_speculative_sampling_has_the_model_distribution(spec_model):
    cfg, params = spec_model
    v, temperature, n = cfg.model.vocab_size, 1.0, 2000
    prompt = ragged_prompts(v, lengths=(6,), seed=9)[0]
    engine = Engine(cfg, params, SPEC_ENGINE)
    sampling = SamplingParams(temperature=temperature, seed=11)
    requests = [engine.submit(prompt, 3, sampling, stream=i) for i in range(n)]
    engine.run()
    outs = np.array([r.output for r in requests])
    joint, marginal3 = exact_two_token_distribution(cfg, params, prompt, temperature)
    counts = np.zeros((v, v))
    np.add.at(counts, (outs[:, 0], outs[:, 1]), 1)
    assert chi_square_p(counts, joint) > 1e-3
    assert chi_square_p(np.bincount(outs[:, 2], minlength=v).astype(float), marginal3) > 1e-3
    assert 0.05 < engine.stats()["acceptance_rate"] < 0.95  # both the accept and the residual path ran
