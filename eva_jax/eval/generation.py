"""Text continuations for generative tasks, through the serving engine (continuous batching over the latent
cache): prompts in, texts out, each cut at the first stop string. A request that produces a stop string is
cancelled at once, so its slot and pages go to the next prompt."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from eva_jax.api import model_config
from eva_jax.config import Config
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.infer.batching import Engine, Request
from eva_jax.infer.requests import EngineConfig
from eva_jax.infer.sampling import SamplingParams


def cut(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the first occurrence of any stop string, and whether one occurred."""
    ends = [at for at in (text.find(s) for s in stop if s) if at >= 0]
    return (text[: min(ends)], True) if ends else (text, False)


def fit_prompt(prompt: list[int], room: int) -> list[int]:
    """At most `room` tokens of the prompt: its first token (BOS) and as many of the last ones as fit."""
    if len(prompt) <= room:
        return prompt
    return [prompt[0], *prompt[len(prompt) - room + 1:]] if room > 1 else prompt[-1:]


def generate_until(cfg: Config, params: Any, tokenizer: Tokenizer, prompts: Sequence[list[int]], max_tokens: int,
                   stop: Sequence[str] = (), *, batch: int = 8, temperature: float = 0.0, seed: int = 0,
                   max_length: int | None = None, progress: Callable[[int], None] | None = None) -> list[str]:
    """The continuation text of each prompt (token ids): at most `max_tokens` new tokens, cut at the first stop
    string, ended by EOS. Greedy at temperature 0; otherwise prompt i draws from stream i of `seed`. A prompt
    longer than the window (`max_length`, at most the model's) minus max_tokens keeps its BOS and its end."""
    if not prompts:
        return []
    window = min(max_length or model_config(cfg).max_position_embeddings, model_config(cfg).max_position_embeddings)
    if max_tokens < 1 or max_tokens >= window:
        raise ValueError(f"max_tokens={max_tokens} must lie in [1, {window - 1}] for a {window}-token window")
    prompts = [fit_prompt(list(p), window - max_tokens) for p in prompts]
    engine = Engine(cfg, params, EngineConfig(max_batch=batch, max_seq_len=max(len(p) for p in prompts) + max_tokens))
    eos = tokenizer.eos_id
    texts: dict[int, str] = {}

    def listener(request: Request, _: list[int]) -> None:
        if request.id in texts:
            return
        text, stopped = cut(tokenizer.decode([t for t in request.output if t != eos]), stop)
        if stopped and not request.done:
            engine.cancel(request)  # finished before the next step; its pages go back to the pool
        if stopped or request.done:
            texts[request.id] = text
            if progress is not None:
                progress(1)

    sampling = SamplingParams(temperature=temperature, seed=seed)
    requests = [engine.submit(p, max_tokens, sampling, (eos,), stream=i, listener=listener)
                for i, p in enumerate(prompts)]
    engine.run()
    return [texts[r.id] for r in requests]
