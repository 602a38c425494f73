"""Sampling filters and draws, on small hand-made distributions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from eva_jax.infer import sampling
from eva_jax.infer.sampling import RowSampling, SamplingParams


def rows(n, temperature=1.0, top_k=0, top_p=1.0, seed=0):
    full = lambda v, dt: np.full((n,), v, dt)  # noqa: E731
    return RowSampling(full(temperature, np.float32), full(top_k, np.int32), full(top_p, np.float32),
                       full(seed, np.int32), np.arange(n, dtype=np.int32))


LOGITS = np.log(np.array([[0.4, 0.3, 0.15, 0.1, 0.05]], np.float32))


def kept(**kw):
    return np.isfinite(np.asarray(sampling.filtered_logits(jnp.asarray(LOGITS), rows(1, **kw))))[0].tolist()


def test_top_k_and_top_p_keep_the_right_tokens():
    assert kept() == [True] * 5
    assert kept(top_k=2) == [True, True, False, False, False]
    assert kept(top_p=0.5) == [True, True, False, False, False]  # 0.4 < 0.5, then 0.7 >= 0.5
    assert kept(top_p=0.4) == [True, False, False, False, False]
    assert kept(top_p=0.71) == [True, True, True, False, False]
    assert kept(top_k=2, top_p=0.3) == [True, False, False, False, False]
    # Temperature scales before the nucleus is taken.
    assert kept(temperature=2.0, top_p=0.5) == [True, True, False, False, False]


def test_greedy_rows_are_one_hot_and_sampled_rows_renormalise():
    s = rows(2, top_k=3)
    s.temperature[0] = 0.0
    p = np.asarray(sampling.distribution(jnp.asarray(np.repeat(LOGITS, 2, 0)), s))
    np.testing.assert_allclose(p[0], [1, 0, 0, 0, 0])
    np.testing.assert_allclose(p[1], np.array([0.4, 0.3, 0.15, 0, 0]) / 0.85, rtol=1e-5)


def test_draws_follow_the_distribution_and_are_seeded():
    n = 4000
    probs = np.repeat(np.array([[0.4, 0.3, 0.15, 0.1, 0.05]], np.float32), n, 0)
    draw = jax.jit(lambda p, s, pos: sampling.draw(p, sampling.row_keys(s, pos, sampling.SAMPLE)))
    a = np.asarray(draw(probs, rows(n), np.zeros(n, np.int32)))
    assert stats.chisquare(np.bincount(a, minlength=5), probs[0] * n).pvalue > 1e-3
    assert (a == np.asarray(draw(probs, rows(n), np.zeros(n, np.int32)))).all()
    assert (a != np.asarray(draw(probs, rows(n, seed=1), np.zeros(n, np.int32)))).mean() > 0.5
    assert (a != np.asarray(draw(probs, rows(n), np.ones(n, np.int32)))).mean() > 0.5
    zero = probs.copy()
    zero[:, 0] = 0
    assert 0 not in np.asarray(draw(zero, rows(n), np.zeros(n, np.int32)))


@pytest.mark.parametrize("bad", [dict(temperature=-0.1), dict(temperature=2.5), dict(top_p=0.0), dict(top_p=1.1),
                                 dict(top_k=-1)])
def test_out_of_range_settings_are_refused(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_top_p_of_one_keeps_all_of_a_large_vocabulary():
    """At DeepSeek-V3's 129,280 tokens the fp32 running sum of probabilities reaches 1.0 early; top_p = 1
    must still keep every token (the nucleus test alone dropped tens of thousands)."""
    logits = jnp.asarray(np.random.default_rng(0).standard_normal((2, 129_280)).astype(np.float32) * 3)
    out = np.asarray(sampling.filtered_logits(logits, rows(2, top_p=1.0)))
    assert np.isinf(out).sum() == 0  # tokens dropped
    assert np.isfinite(np.asarray(sampling.filtered_logits(logits, rows(2, top_p=0.9)))).sum(-1).max() < 129_280


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.999, 0.9999, 0.99999, 0.999999])
def test_the_nucleus_of_a_large_vocabulary_matches_float64(top_p):
    """Near top_p = 1 the nucleus boundary lies in a tail of tiny probabilities; the kept set must be the one
    float64 arithmetic gives, up to tokens within 1e-4 (relative to the smaller mass) of the boundary."""
    logits = np.random.default_rng(1).standard_normal((1, 129_280)).astype(np.float32) * 3
    out = np.asarray(sampling.filtered_logits(jnp.asarray(logits), rows(1, top_p=top_p)))[0]
    z = np.sort(logits[0].astype(np.float64))[::-1]
    probs = np.exp(z - z[0]) / np.exp(z - z[0]).sum()
    before = np.cumsum(probs) - probs
    p = float(np.float32(top_p))
    band = 1e-4 * min(p, 1 - p)
    kept = np.isfinite(out).sum()
    assert (before < p - band).sum() <= kept <= max((before < p + band).sum(), 1)
