"""The OpenAI-compatible routes: /v1/completions, /v1/chat/completions (streaming by server-sent events),
/v1/models, /health. Every refusal is an HTTP 400 with an OpenAI-style error body; the server keeps serving."""

from __future__ import annotations

import contextlib
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
from eva_jax.infer.batching import Engine, EngineConfig
from eva_jax.infer.sampling import SamplingParams
from eva_jax.serve import schemas
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


class Service:
    """What the routes share: the engine's worker, the tokenizer, the served name and context."""

    def __init__(self, cfg: Config, params: Any, tokenizer: Tokenizer, model_name: str,
                 engine_config: EngineConfig) -> None:
        self.cfg = model_config(cfg)
        self.engine = Engine(self.cfg, params, engine_config)
        self.worker = Worker(self.engine)
        self.tokenizer, self.model_name = tokenizer, model_name
        self.context = engine_config.seq_len(self.cfg)
        self.created = int(time.time())

    def prepare(self, body: schemas.SamplingFields, prompt: list[int], max_tokens: int | None,
                default_max: int) -> tuple[SamplingParams, int]:
        if body.model is not None and body.model != self.model_name:
            raise APIError(f"the model {body.model!r} does not exist; this server serves {self.model_name!r}",
                           "model", "model_not_found")
        bad = [t for t in prompt if not 0 <= t < self.cfg.vocab_size]
        if bad:
            raise APIError(f"token id {bad[0]} is outside the vocabulary [0, {self.cfg.vocab_size})", "prompt")
        room = self.context - len(prompt)
        if room < 1:
            raise APIError(f"the prompt is {len(prompt)} tokens, and the context is {self.context} tokens; "
                           f"shorten the prompt", "prompt", "context_length_exceeded")
        max_tokens = min(default_max, room) if max_tokens is None else max_tokens
        if max_tokens > room:
            raise APIError(f"max_tokens={max_tokens} is too large: the prompt takes {len(prompt)} of the "
                           f"{self.context}-token context, leaving {room}", "max_tokens", "context_length_exceeded")
        try:
            self.engine.check(len(prompt), max_tokens)
        except ValueError as err:
            raise APIError(str(err), "max_tokens") from None
        seed = random.getrandbits(32) if body.seed is None else body.seed
        return SamplingParams(body.temperature, body.top_p, body.top_k, seed), max_tokens

    async def run(self, prompt: list[int], max_tokens: int, sampling: SamplingParams,
                  stop: list[str]) -> AsyncIterator[tuple[str, str | None, int]]:
        """(new text, finish reason or None, completion tokens so far) as tokens arrive."""
        eos = frozenset({self.tokenizer.eos_id})
        text = TextStream(self.tokenizer, eos, stop)
        async for new, last, request in self.worker.tokens(prompt, max_tokens, sampling, eos):
            piece = text.push(new, last)
            if text.stopped:  # a stop string: the text ends here, the request has no more to say
                self.engine.cancel(request)
                yield piece, "stop", len(request.output)
                return
            finish = {"error": "error", "cancelled": "stop"}.get(request.finish_reason) if last else None
            finish = finish or (request.finish_reason if last else None)
            if piece or finish:
                yield piece, finish, len(request.output)


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
        prompt = tokenizer.encode(body.prompt) if isinstance(body.prompt, str) else list(body.prompt)
        sampling, max_tokens = service.prepare(body, prompt, body.max_tokens, body.max_tokens)
        rid, stream = schemas.new_id("cmpl"), service.run(prompt, max_tokens, sampling, _stops(body.stop))
        if body.stream:
            async def events() -> AsyncIterator[str]:
                async for piece, finish, _ in stream:
                    yield _sse(schemas.completion_chunk(rid, service.model_name, piece, finish))
                yield _sse("[DONE]")

            return StreamingResponse(events(), media_type="text/event-stream")
        text, finish, count = "", None, 0
        async for piece, finish, count in stream:
            text += piece
        return {**schemas.completion_chunk(rid, service.model_name, text, finish),
                "usage": schemas.usage(len(prompt), count)}

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
