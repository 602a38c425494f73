"""Continuous batching: joins between steps, a queue when the pool is full, pages back at once."""

from eva_jax.infer.batching import Engine
from eva_jax.infer.cache import PagePool
from eva_jax.infer.sampling import SamplingParams
from tests.infer.conftest import ENGINE, ragged_prompts


def alone(cfg, params, prompt, n, sampling=SamplingParams()):
    engine = Engine(cfg, params, ENGINE)
    request = engine.submit(prompt, n, sampling)
    engine.run()
    return request.output


def test_a_request_joining_mid_generation_gets_what_it_gets_alone(main_model):
    cfg, params = main_model
    p = ragged_prompts(cfg.model.vocab_size, lengths=(9, 4, 20), seed=1)
    engine = Engine(cfg, params, ENGINE)
    first = engine.submit(p[0], 20)
    hot = SamplingParams(temperature=0.8, top_p=0.95, seed=3)
    for _ in range(5):
        engine.step()
    second = engine.submit(p[1], 12, hot)
    for _ in range(3):
        engine.step()
    third = engine.submit(p[2], 8)
    engine.run()
    assert first.output == alone(cfg, params, p[0], 20)
    assert second.output == alone(cfg, params, p[1], 12, hot)
    assert third.output == alone(cfg, params, p[2], 8)


def small_pool_engine(cfg, params, pages):
    """An engine whose allocator hands out only `pages` pages. The device pool keeps ENGINE's size, so the
    compiled steps are the ones every other test uses (the pool's shape is part of a step's signature)."""
    engine = Engine(cfg, params, ENGINE)
    engine.pages = PagePool(pages)
    return engine


def test_requests_wait_for_pages_and_pages_come_back_at_once(main_model):
    cfg, params = main_model
    # 6 pages of 16 tokens; each request below needs 2 pages, so only 3 run at a time though 4 slots exist.
    engine = small_pool_engine(cfg, params, 6)
    prompts = ragged_prompts(cfg.model.vocab_size, lengths=(10, 12, 8, 11, 9), seed=2)
    lengths = (8, 16, 16, 16, 16)
    requests = [engine.submit(p, n) for p, n in zip(prompts, lengths)]
    engine.step()
    assert len(engine.running) == 3 and len(engine.waiting) == 2 and engine.pages.free == 0
    while not requests[0].done:
        engine.step()
    assert engine.pages.free == 2 and len(engine.running) == 2  # freed pages, not yet reused
    engine.step()
    assert len(engine.running) == 3
    engine.run()
    assert all(r.finish_reason == "length" and len(r.output) == n for r, n in zip(requests, lengths))
    assert engine.pages.free == 6 and engine.idle
    assert [r.output for r in requests] == [alone(cfg, params, p, n) for p, n in zip(prompts, lengths)]


def test_cancel_returns_pages_before_the_next_step(main_model):
    cfg, params = main_model
    engine = small_pool_engine(cfg, params, 4)
    prompts = ragged_prompts(cfg.model.vocab_size, lengths=(10, 12, 8), seed=4)
    running, other, queued = (engine.submit(p, 16) for p in prompts)
    engine.step()
    assert queued in engine.waiting and engine.pages.free == 0
    engine.cancel(queued)  # waiting: leaves the queue now
    assert queued.finish_reason == "cancelled" and queued not in engine.waiting
    engine.cancel(running)
    engine.step()
    assert running.finish_reason == "cancelled" and running.slot is None
    assert engine.pages.free == 2
    engine.run()
    assert engine.pages.free == 4 and other.finish_reason == "length"
