"""What the routes share: the engine on its worker thread, the tokenizer, and the asynchronous steps of a
request (encoding and scoring run on threads, so the event loop keeps answering while they work)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from eva_jax.api import model_config
from eva_jax.config import Config
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.eval.loglik import Scorer
from eva_jax.infer.batching import Engine, EngineConfig
from eva_jax.infer.sampling import SamplingParams
from eva_jax.serve import schemas
from eva_jax.serve.logprobs import logprobs_object
from eva_jax.serve.schemas import APIError
from eva_jax.serve.text import TextStream
from eva_jax.serve.worker import Worker

log = logging.getLogger("eva_jax.serve")


@dataclasses.dataclass
class Completion:
    text: str
    finish: str | None
    ids: list[int]  # the tokens whose text `text` is (EOS and anything after a stop string left out)
    count: int  # tokens generated


class Service:
    """What the routes share: the engine's worker, the tokenizer, the served name and context."""

    def __init__(self, cfg: Config, params: Any, tokenizer: Tokenizer, model_name: str,
                 engine_config: EngineConfig) -> None:
        self.cfg = model_config(cfg)
        self.engine = Engine(cfg, params, engine_config)
        self.worker = Worker(self.engine)
        self.tokenizer, self.model_name = tokenizer, model_name
        self.context = engine_config.seq_len(self.cfg)
        self.created = int(time.time())
        # `echo` and `logprobs` score with eva_jax.eval's scorer, over the engine's copy of the weights.
        self.scorer = Scorer(cfg, self.engine.params, batch_size=engine_config.max_batch, max_length=self.context)

    def _too_long(self, length: int, where: str = "", exact: bool = True) -> APIError:
        return APIError(f"{where}the prompt is {'' if exact else 'at least '}{length} tokens, and the context is "
                        f"{self.context} tokens; shorten the prompt", "prompt", "context_length_exceeded")

    async def encode_prompts(self, prompts: list[str | list[int]]) -> list[list[int]]:
        """Token ids of each prompt; text is encoded on a thread (a 6 MB prompt takes seconds, and the
        tokenizer releases the GIL while it works)."""
        texts = [p for p in prompts if isinstance(p, str)]
        for i, text in enumerate(prompts):
            await self._refuse_huge(text, f"prompt {i}: " if len(prompts) > 1 else "")
        encoded = iter(await asyncio.to_thread(self.tokenizer.encode_batch, texts) if texts else [])
        return [next(encoded) if isinstance(p, str) else p for p in prompts]

    async def encode_chat(self, messages: list[dict]) -> list[int]:
        await self._refuse_huge("".join(m["content"] for m in messages))
        return await asyncio.to_thread(self.tokenizer.encode_chat, messages)

    async def _refuse_huge(self, text: str | list[int], where: str = "") -> None:
        """A text that a prefix shows to be longer than the context is refused without encoding all of it:
        the tokenizer works off the GIL, but freeing millions of encoded tokens holds it for ~0.3 s."""
        if isinstance(text, str) and len(text) > self.context:
            bound = await asyncio.to_thread(self.tokenizer.more_than, text, self.context)
            if bound is not None:
                raise self._too_long(bound, where, exact=False)

    def warm_up(self) -> float:
        """Compiles the prefill and decode steps for every batch size the engine buckets to (shortest prompt
        bucket, narrowest page table), so the first burst of requests does not wait on compilation. Seconds."""
        began = time.perf_counter()
        sizes = sorted({self.engine.config.rows(n) for n in range(1, self.engine.config.max_batch + 1)})
        for rows in sizes:
            for _ in range(rows):
                self.engine.submit([self.tokenizer.bos_id], 2, SamplingParams(temperature=0.0))
            self.engine.run()
        took = time.perf_counter() - began
        log.info("warm-up compiled batch sizes %s in %.1f s", sizes, took)
        return took

    def prepare(self, body: schemas.SamplingFields, prompt: list[int], max_tokens: int | None,
                default_max: int, which: int | None = None) -> tuple[SamplingParams, int]:
        """Sampling settings and max_tokens for one prompt, or an APIError naming what is wrong (and, in a
        batch, `which` prompt). max_tokens=0 (scoring the prompt only) needs no room to generate."""
        where = "" if which is None else f"prompt {which}: "
        if body.model is not None and body.model != self.model_name:
            raise APIError(f"the model {body.model!r} does not exist; this server serves {self.model_name!r}",
                           "model", "model_not_found")
        room = self.context - len(prompt)  # first: a huge prompt is refused before any pass over its ids
        if room < (0 if max_tokens == 0 else 1):
            raise self._too_long(len(prompt), where)
        bad = [t for t in prompt if not 0 <= t < self.cfg.vocab_size]
        if bad:
            raise APIError(f"{where}token id {bad[0]} is outside the vocabulary [0, {self.cfg.vocab_size})", "prompt")
        max_tokens = min(default_max, room) if max_tokens is None else max_tokens
        if max_tokens > room:
            raise APIError(f"{where}max_tokens={max_tokens} is too large: the prompt takes {len(prompt)} of the "
                           f"{self.context}-token context, leaving {room}", "max_tokens", "context_length_exceeded")
        if max_tokens:
            try:
                self.engine.check(len(prompt), max_tokens)
            except ValueError as err:
                raise APIError(f"{where}{err}", "max_tokens") from None
        seed = random.getrandbits(32) if body.seed is None else body.seed
        return SamplingParams(body.temperature, body.top_p, body.top_k, seed), max_tokens

    async def run(self, prompt: list[int], max_tokens: int, sampling: SamplingParams,
                  stop: list[str], ids: list[int] | None = None) -> AsyncIterator[tuple[str, str | None, int]]:
        """(new text, finish reason or None, completion tokens so far) as tokens arrive; `ids` collects them."""
        eos = frozenset({self.tokenizer.eos_id})
        text = TextStream(self.tokenizer, eos, stop)
        async for new, last, request in self.worker.tokens(prompt, max_tokens, sampling, eos):
            if ids is not None:
                ids += new
            piece = text.push(new, last)
            if text.stopped:  # a stop string: the text ends here, the request has no more to say
                self.engine.cancel(request)
                yield piece, "stop", len(request.output)
                return
            finish = {"error": "error", "cancelled": "stop"}.get(request.finish_reason) if last else None
            finish = finish or (request.finish_reason if last else None)
            if piece or finish:
                yield piece, finish, len(request.output)

    async def complete(self, prompt: list[int], max_tokens: int, sampling: SamplingParams,
                       stop: list[str]) -> Completion:
        if max_tokens == 0:
            return Completion("", "length", [], 0)
        text, finish, count, ids = "", None, 0, []
        async for piece, finish, count in self.run(prompt, max_tokens, sampling, stop, ids):
            text += piece
        ids = [t for t in ids if t != self.tokenizer.eos_id]
        keep = next((k for k in range(len(ids) + 1) if len(self.tokenizer.decode(ids[:k])) >= len(text)), len(ids))
        return Completion(text, finish, ids[:keep], count)

    async def logprobs(self, prompts: list[list[int]], completions: list[list[int]], echo: bool,
                       top_k: int) -> list[dict[str, Any]]:
        """The logprobs objects of each completion (with echo: of its prompt too), scored in one batch."""
        seqs = [p + c for p, c in zip(prompts, completions)]
        scores = await asyncio.to_thread(self.scorer.score_tokens, seqs, top_k)
        return [logprobs_object(self.tokenizer, seq, s, 0 if echo else len(p))
                for seq, s, p in zip(seqs, scores, prompts)]

    async def merged(self, runs: list[AsyncIterator[tuple[str, str | None, int]]]
                     ) -> AsyncIterator[tuple[int, str, str | None]]:
        """(prompt index, new text, finish reason) from several runs as they arrive; closing this closes them."""
        queue: asyncio.Queue[tuple[int, str | None, str | None]] = asyncio.Queue()

        async def pump(i: int, run: AsyncIterator[tuple[str, str | None, int]]) -> None:
            try:
                async for piece, finish, _ in run:
                    await queue.put((i, piece, finish))
            finally:
                await queue.put((i, None, None))

        tasks = [asyncio.create_task(pump(i, run)) for i, run in enumerate(runs)]
        try:
            remaining = len(tasks)
            while remaining:
                i, piece, finish = await queue.get()
                if piece is None:
                    remaining -= 1
                else:
                    yield i, piece, finish
        finally:
            for task in tasks:
                task.cancel()
