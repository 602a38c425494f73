"""The OpenAI-compatible routes: /v1/completions, /v1/chat/completions (streaming by server-sent events),
/v1/models, /health. Every refusal is an OpenAI-style error body (400, 404, 405, 413); the server keeps
serving. Encoding runs on threads and the engine on its own, so /health answers while requests are in work."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from eva_jax.config import Config
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.infer.batching import EngineConfig
from eva_jax.serve import guards, schemas
from eva_jax.serve.schemas import APIError, ChatCompletionRequest, CompletionRequest
from eva_jax.serve.service import Service

CHAT_DEFAULT_MAX_TOKENS = 256
MAX_REQUEST_BYTES = 16 * 2**20  # far above a 128K-token prompt as text (~0.5 MB) or as ids (~1 MB of JSON)


def _sse(payload: dict[str, Any] | str) -> str:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n"


def _stops(stop: str | list[str] | None) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def create_app(cfg: Config, params: Any, tokenizer: Tokenizer, model_name: str | None = None,
               engine_config: EngineConfig = EngineConfig(), max_request_bytes: int = MAX_REQUEST_BYTES,
               warmup: bool = False) -> FastAPI:
    service = Service(cfg, params, tokenizer, model_name or getattr(cfg, "name", "eva"), engine_config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI):
        if warmup:  # before the worker starts: the engine is not yet shared
            await asyncio.to_thread(service.warm_up)
        service.worker.start()
        yield
        service.worker.close()

    app = FastAPI(title="Eva", lifespan=lifespan)
    app.state.service = service
    guards.install(app, max_request_bytes)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "model": service.model_name, **service.engine.stats()}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": service.model_name, "object": "model", "created": service.created,
                                            "owned_by": "eva", "context_length": service.context}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        if body.max_tokens == 0 and not body.echo:
            raise APIError("max_tokens=0 generates nothing; it is meant for echo=true (the prompt's own log-probs)",
                           "max_tokens")
        if body.stream and (body.echo or body.logprobs is not None):
            raise APIError("stream=true returns neither echo nor logprobs; ask without stream", "stream")
        prompts = await service.encode_prompts(body.prompt)
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

        async def respond() -> dict[str, Any]:
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

        return await guards.unless_disconnected(request, respond())

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request) -> Any:
        prompt = await service.encode_chat(body.template_messages())
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

        async def respond() -> dict[str, Any]:
            text, finish, count = "", None, 0
            async for piece, finish, count in stream:
                text += piece
            return schemas.chat_completion(rid, service.model_name, text, finish, schemas.usage(len(prompt), count))

        return await guards.unless_disconnected(request, respond())

    return app
