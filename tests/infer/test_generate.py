"""The latent-cache engine against recomputation, its options, and its errors."""

import pytest

import eva_jax
from eva_jax.infer.api import generate
from eva_jax.infer.batching import EngineConfig
from tests.infer.conftest import ENGINE, greedy_by_recompute, ragged_prompts


def test_greedy_with_latent_cache_equals_recomputing_every_step(main_model):
    # YaRN config: 64 new tokens take positions well past the original 32 the frequencies were built for.
    cfg, params = main_model
    prompts = ragged_prompts(cfg.model.vocab_size)
    ours = generate(cfg, params, prompts, 64, stop_tokens=(), engine_config=ENGINE)
    assert [len(o) for o in ours] == [64, 64, 64]
    assert ours == greedy_by_recompute(cfg, params, prompts, 64)
    assert len({tuple(o) for o in ours}) == 3 and all(len(set(o)) > 8 for o in ours)  # not a degenerate loop


def test_max_tokens_stop_tokens_and_results_exclude_the_prompt(main_model):
    cfg, params = main_model
    prompts = ragged_prompts(cfg.model.vocab_size)
    free = generate(cfg, params, prompts, 12, stop_tokens=(), engine_config=ENGINE)
    stop = free[1][4]
    stopped = generate(cfg, params, prompts, 12, stop_tokens=(stop,), engine_config=ENGINE)
    for f, s in zip(free, stopped):
        cut = f.index(stop) + 1 if stop in f else len(f)
        assert s == f[:cut]  # ends with the stop token, nothing after it
    assert len(stopped[1]) <= 5
    assert generate(cfg, params, prompts, 3, stop_tokens=(), engine_config=ENGINE) == [f[:3] for f in free]


def test_sampling_is_seeded_and_independent_of_the_batch(main_model):
    cfg, params = main_model
    prompts = ragged_prompts(cfg.model.vocab_size)
    kw = dict(temperature=1.0, top_p=0.9, top_k=50, stop_tokens=(), engine_config=ENGINE)
    a = generate(cfg, params, prompts, 10, seed=7, **kw)
    assert a == generate(cfg, params, prompts, 10, seed=7, **kw)
    assert a != generate(cfg, params, prompts, 10, seed=8, **kw)
    # Prompt 0 alone draws from the same stream as prompt 0 of the batch.
    assert generate(cfg, params, prompts[:1], 10, seed=7, **kw) == a[:1]
    greedy = generate(cfg, params, prompts, 10, stop_tokens=(), engine_config=ENGINE)
    assert a != greedy and generate(cfg, params, prompts, 10, **{**kw, "top_k": 1, "top_p": 1.0}) == greedy


def test_more_prompts_than_slots_queue_and_all_finish(main_model):
    cfg, params = main_model
    prompts = ragged_prompts(cfg.model.vocab_size, lengths=(3, 8, 5, 12, 7, 4, 30, 1, 2), seed=5)
    batched = generate(cfg, params, prompts, 6, stop_tokens=(), engine_config=ENGINE)
    one_by_one = [generate(cfg, params, [p], 6, stop_tokens=(), engine_config=ENGINE)[0] for p in prompts]
    assert batched == one_by_one


def test_bad_requests_are_named(main_model):
    cfg, params = main_model
    with pytest.raises(ValueError, match="exceeds the context"):
        generate(cfg, params, [[3] * 100], 100, engine_config=ENGINE)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(cfg, params, [[3, 999]], 4, engine_config=ENGINE)
    with pytest.raises(ValueError, match="temperature"):
        generate(cfg, params, [[3]], 4, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p"):
        generate(cfg, params, [[3]], 4, top_p=0.0)
    with pytest.raises(ValueError, match="max_tokens"):
        generate(cfg, params, [[3]], 0, engine_config=ENGINE)
    with pytest.raises(ValueError, match="empty"):
        generate(cfg, params, [[]], 4, engine_config=ENGINE)
    with pytest.raises(ValueError, match="MTP"):
        generate(eva_jax.load_config("v3_tiny", **{"model.num_mtp_layers": 0}), params, [[3]], 4, speculative=True,
                 engine_config=EngineConfig(speculative=True))
