"""eva_jax.eval.loglik: scores do not depend on the batch or the padding, a long context loses tokens from its
left, and rolling windows score every token once, as a by-hand sum of window-by-window forwards does."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import eva_jax
from eva_jax.eval.loglik import Scorer, rolling_windows


def random_ids(rng, vocab, n):
    return [int(t) for t in rng.integers(2, vocab, n)]


def test_scores_do_not_depend_on_the_batch_or_the_padding(main_model):
    cfg, params = main_model
    rng = np.random.default_rng(2)
    seqs = [[0, *random_ids(rng, cfg.model.vocab_size, n)] for n in (7, 29, 13, 2, 22)]
    alone = [Scorer(cfg, params, batch_size=1).score_tokens([s])[0].logprobs for s in seqs]
    together = Scorer(cfg, params, batch_size=4).score_tokens(seqs)
    padded = Scorer(cfg, params, batch_size=8, min_length=64).score_tokens(seqs[::-1])[::-1]
    for a, b, c in zip(alone, together, padded):
        np.testing.assert_allclose(b.logprobs, a, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(c.logprobs, a, rtol=1e-5, atol=1e-5)
    # The single-token path (one forward per context) agrees with the full one.
    ctx = seqs[1]
    conts = [[t] for t in range(2, 6)]
    lls = Scorer(cfg, params, batch_size=4).loglikelihood([(ctx, c) for c in conts])
    full = Scorer(cfg, params, batch_size=4).score_tokens([ctx + c for c in conts])
    for (ll, _), s in zip(lls, full):
        assert ll == pytest.approx(float(s.logprobs[-1]), rel=1e-5, abs=1e-5)


def test_a_long_context_loses_tokens_from_its_left(main_model):
    cfg, params = main_model
    rng = np.random.default_rng(3)
    ctx, cont = [0, *random_ids(rng, cfg.model.vocab_size, 50)], random_ids(rng, cfg.model.vocab_size, 4)
    scorer = Scorer(cfg, params, batch_size=2, max_length=32)
    (ll, _), = scorer.loglikelihood([(ctx, cont)])
    tail = (ctx + cont)[-32:]
    assert ll == pytest.approx(float(scorer.score_tokens([tail])[0].logprobs[-4:].sum()), rel=1e-6)


@pytest.mark.parametrize("n,window,stride", [(1, 8, 4), (2, 8, 4), (8, 8, 7), (9, 8, 7), (100, 32, 8),
                                             (100, 32, 31), (33, 32, 16), (64, 16, 1)])
def test_rolling_windows_score_every_token_once(n, window, stride):
    windows = rolling_windows(n, window, stride)
    scored = [p for start, end, first in windows for p in range(first, end)]
    assert scored == list(range(1, n))
    for start, end, first in windows:
        assert 0 <= start < first <= end <= n and end - start <= window
        if start > 0:  # a later window: its first target has window - stride tokens of context or more
            assert first - start >= window - stride
        assert end - start == min(window, n)  # every forward is as long as it can be


def test_rolling_log_likelihood_equals_the_sum_window_by_window(main_model):
    cfg, params = main_model
    rng = np.random.default_rng(4)
    docs = [[0, *random_ids(rng, cfg.model.vocab_size, n)] for n in (99, 40, 20)]
    window, stride = 32, 12
    ours = Scorer(cfg, params, batch_size=4, max_length=window).rolling(docs, stride=stride)
    for doc, (total, count) in zip(docs, ours):
        assert count == len(doc) - 1
        by_hand, start, done = 0.0, 0, 0
        # Window k ends at min(window + k·stride, n) and holds the `window` tokens before its end.
        end = min(window, len(doc))
        while True:
            piece = np.asarray(doc[start:end])[None]
            logp = np.asarray(jax.nn.log_softmax(eva_jax.logits(cfg, params, piece)[0, :-1], -1))
            targets = range(max(done, 1), end)
            by_hand += sum(float(logp[p - start - 1, doc[p]]) for p in targets)
            done = end
            if end == len(doc):
                break
            end = min(end + stride, len(doc))
            start = end - window
        assert total == pytest.approx(by_hand, rel=1e-5)
    # With the whole document in one window, rolling is plain scoring.
    whole = Scorer(cfg, params, batch_size=4, max_length=128).rolling(docs[:1])[0][0]
    assert whole == pytest.approx(float(Scorer(cfg, params).score_tokens(docs[:1])[0].logprobs.sum()), rel=1e-5)


def test_bad_input_is_a_sentence(main_model):
    cfg, params = main_model
    scorer = Scorer(cfg, params, max_length=16)
    with pytest.raises(ValueError, match="longer than the 16-token window"):
        scorer.score_tokens([list(range(20))])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        scorer.score_tokens([[0, cfg.model.vocab_size]])
    with pytest.raises(ValueError, match="empty context"):
        scorer.loglikelihood([([], [3])])
    with pytest.raises(ValueError, match="at most 15"):
        scorer.loglikelihood([([0], list(range(2, 20)))])
    with pytest.raises(ValueError, match="stride"):
        scorer.rolling([list(range(40))], stride=16)
    assert scorer.score_tokens([[5]])[0].logprobs.shape == (0,)
