"""A masked cache slot contributes exactly nothing: with every page of a fresh pool (the shared trash page and
every page a request has not written yet) full of NaN, generation gives the same tokens as from a zeroed pool.
With probability-0 weights alone, 0·NaN = NaN would poison every request (XLA decode form)."""

import dataclasses

import jax.numpy as jnp

from eva_jax.infer.batching import Engine
from eva_jax.nn.kv_cache import Pages
from tests.infer.conftest import ENGINE, ragged_prompts


def run(cfg, params, poison: bool, speculative: bool = False) -> list[list[int]]:
    engine = Engine(cfg, params, dataclasses.replace(ENGINE, speculative=speculative))
    if poison:
        engine.pool = [Pages(jnp.full_like(p.latent, jnp.nan), jnp.full_like(p.rope, jnp.nan)) for p in engine.pool]
    requests = [engine.submit(p, 6) for p in ragged_prompts(cfg.model.vocab_size)]
    engine.run()
    return [r.output for r in requests]


def test_nan_in_unwritten_pages_changes_no_token(main_model):
    cfg, params = main_model
    assert run(cfg, params, poison=True) == run(cfg, params, poison=False)


def test_nan_in_unwritten_pages_changes_no_speculative_token(spec_model):
    cfg, params = spec_model
    assert run(cfg, params, poison=True, speculative=True) == run(cfg, params, poison=False, speculative=True)
