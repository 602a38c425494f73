"""The OpenAI-compatible routes: /v1/completions, /v1/chat/completions (streaming by server-sent events),
/v1/models, /health. Every refusal is an HTTP 400 with an OpenAI-style error body; the server keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from eva_jax.api import model_config
from eva_jax.config import Config
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.eval.loglik import Scorer
from eva_jax.infer.batching import Engine, EngineConfig
from eva_jax.infer.sampling import SamplingParams
from eva_jax.serve import schemas
from eva_jax.serve.logprobs import logprobs_object
from eva_jax.serve.schemas import APIError, ChatCompletionRequest, CompletionRequest
from eva_jax.serve.text import TextStream
from eva_jax.serve.worker import Worker

CHAT_DEFAULT_MAX_TOKENS = 256


def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
    first = err.errors()[0] if err.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        message, param = "the request body is not valid JSON", None
    else:
        message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid value')}"
        param = ".".join(loc) or None
    return JSONResponse(APIError(message, param, first.get("type")).body(), status_code=400)


def _api_error(_: Request, err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status)


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


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

    def prepare(self, body: schemas.SamplingFields, prompt: list[int], max_tokens: int | None,
                default_max: int, which: int | None = None) -> tuple[SamplingParams, int]:
        """Sampling settings and max_tokens for one prompt, or an APIError naming what is wrong (and, in a
        batch, `which` prompt). max_tokens=0 (scoring the prompt only) needs no room to generate."""
        where = "" if which is None else f"prompt {which}: "
        if body.model is not None and body.model != self.model_name:
            raise APIError(f"the model {body.model!r} does not exist; this server serves {self.model_name!r}",
                           "model", "model_not_found")
        bad = [t for t in prompt if not 0 <= t < self.cfg.vocab_size]
        if bad:
            raise APIError(f"{where}token id {bad[0]} is outside the vocabulary [0, {self.cfg.vocab_size})", "prompt")
        room = self.context - len(prompt)
        if room < (0 if max_tokens == 0 else 1):
            raise APIError(f"{where}the prompt is {len(prompt)} tokens, and the context is {self.context} tokens; "
                           f"shorten the prompt", "prompt", "context_length_exceeded")
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


def _stops(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def create_app(cfg: Config, params: Any, tokenizer: Tokenizer, model_name: str | None = None,
               engine_config: EngineConfig = EngineConfig()) -> FastAPI:
    service = Service(cfg, params, tokenizer, model_name or getattr(cfg, "name", "eva"), engine_config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        service.worker.start()
        yield
        service.worker.close()

    app = FastAPI(title="Eva", lifespan=lifespan)
    app.state.service = service
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(APIError, _api_error)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_name, **service.engine.stats()}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": service.model_name, "object": "model", "created": service.created,
                                            "owned_by": "eva", "context_length": service.context}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Any:
        if body.max_tokens == 0 and not body.echo:
            raise APIError("max_tokens=0 generates nothing; it is meant for echo=true (the prompt's own log-probs)",
                           "max_tokens")
        if body.stream and (body.echo or body.logprobs is not None):
            raise APIError("stream=true returns neither echo nor logprobs; ask without stream", "stream")
        prompts = [tokenizer.encode(p) if isinstance(p, str) else p for p in body.prompt]
        many = len(prompts) > 1
        plans = [service.prepare(body, p, body.max_tokens, body.max_tokens, i if many else None)
                 for i, p in enumerate(prompts)]
        rid, stops = schemas.new_id("cmpl"), _stops(body.stop)
        if body.stream:
            runs = [service.run(p, m, sampling, stops) for p, (sampling, m) in zip(prompts, plans)]

            async def events() -> AsyncIterator[str]:
                async for i, piece, finish in service.merged(runs):
                    yield _sse(schemas.completion_chunk(rid, service.model_name, piece, finish, i))
                yield _sse("[DONE]")

            return StreamingResponse(events(), media_type="text/event-stream")
        done = await asyncio.gather(*(service.complete(p, m, sampling, stops)
                                      for p, (sampling, m) in zip(prompts, plans)))
        logprobs = [None] * len(prompts)
        if body.logprobs is not None:
            logprobs = await service.logprobs(prompts, [c.ids for c in done], body.echo, body.logprobs)
        choices = []
        for i, (given, ids, c) in enumerate(zip(body.prompt, prompts, done)):
            echoed = "" if not body.echo else given if isinstance(given, str) else tokenizer.decode(ids, True)
            choices.append(schemas.completion_choice(i, echoed + c.text, c.finish, logprobs[i]))
        use = schemas.usage(sum(len(p) for p in prompts), sum(c.count for c in done))
        return schemas.completion(rid, service.model_name, choices, use)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest) -> Any:
        prompt = tokenizer.encode_chat([m.model_dump() for m in body.messages])
        requested = body.max_completion_tokens or body.max_tokens
        sampling, max_tokens = service.prepare(body, prompt, requested, CHAT_DEFAULT_MAX_TOKENS)
        rid, stream = schemas.new_id("chatcmpl"), service.run(prompt, max_tokens, sampling, _stops(body.stop))
        if body.stream:
            async def events() -> AsyncIterator[str]:
                yield _sse(schemas.chat_chunk(rid, service.model_name, {"role": "assistant", "content": ""}, None))
                async for piece, finish, _ in stream:
                    yield _sse(schemas.chat_chunk(rid, service.model_name, {"content": piece} if piece else {}, finish))
                yield _sse("[DONE]")

            return StreamingResponse(events(), media_type="text/event-stream")
        text, finish, count = "", None, 0
        async for piece, finish, count in stream:
            text += piece
        return schemas.chat_completion(rid, service.model_name, text, finish, schemas.usage(len(prompt), count))

    return app
