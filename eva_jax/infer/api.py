"""`generate`: token ids in, token ids out, through the same engine the server uses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eva_jax.api import model_config
from eva_jax.config import Config, ModelConfig
from eva_jax.infer.batching import Engine
from eva_jax.infer.requests import EngineConfig, bucket
from eva_jax.infer.sampling import SamplingParams

MAX_DEFAULT_BATCH = 64


def generate(cfg: Config | ModelConfig, params: Any, prompts: list[list[int]], max_new_tokens: int, *,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0, speculative: bool = False,
             stop_tokens: Sequence[int] | None = None, engine_config: EngineConfig | None = None) -> list[list[int]]:
    """New tokens for each prompt (the prompt excluded), decoded with the latent cache.

    temperature 0 is greedy; otherwise tokens are drawn after top-k (0 = off) and top-p (1 = off) filtering,
    seeded: prompt i draws from stream i of `seed`, whatever else is in the batch. `speculative=True` drafts
    with the model's MTP modules and verifies in one main forward (same greedy output; same distribution when
    sampling). Generation stops after `max_new_tokens` or at a stop token, which is kept as the last token;
    the default stop token is the model's EOS (`stop_tokens=()` never stops early).
    """
    mc = model_config(cfg)
    if not prompts:
        return []
    stop = (mc.eos_token_id,) if stop_tokens is None else tuple(stop_tokens)
    sampling = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
    if engine_config is None:
        engine_config = EngineConfig(max_batch=bucket(min(len(prompts), MAX_DEFAULT_BATCH)), speculative=speculative,
                                     max_seq_len=max(len(p) for p in prompts) + max_new_tokens)
    elif engine_config.speculative != speculative:
        raise ValueError(f"speculative={speculative} disagrees with engine_config.speculative="
                         f"{engine_config.speculative}")
    engine = Engine(cfg, params, engine_config)
    requests = [engine.submit(p, max_new_tokens, sampling, stop, stream=i) for i, p in enumerate(prompts)]
    engine.run()
    return [r.output for r in requests]
