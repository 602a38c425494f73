"""Request and response bodies of the OpenAI-compatible API, and its error format.

Ranges live on the fields, so a bad value is refused with the field's name before anything runs. Fields of
the OpenAI API that this server does not act on (penalties, user, ...) are accepted and ignored.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator
from pydantic_core import PydanticCustomError

from eva_jax.infer.sampling import MAX_TEMPERATURE

MAX_LOGPROBS = 20  # OpenAI allows 5; vLLM-style clients may ask for more
PROMPT_FORMS = "a string, a list of strings, a list of token ids or a list of token-id lists"


def _unicode(text: str) -> str:
    """JSON's \\uD800 escapes can carry lone surrogates, which are not Unicode text: refused by name."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        bad = text[err.start]
        raise PydanticCustomError("invalid_unicode", f"the text is not valid Unicode: a lone surrogate "
                                  f"\\u{ord(bad):04x} at character {err.start}") from None
    return text


Text = Annotated[str, AfterValidator(_unicode)]


class SamplingFields(BaseModel):
    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=MAX_TEMPERATURE)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="extension: keep the k most likely tokens (0 keeps all)")
    seed: int | None = None
    stream: bool = False
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")

    @field_validator("stop")
    @classmethod
    def _stop_text(cls, value: str | list[str] | None) -> str | list[str] | None:
        for text in [value] if isinstance(value, str) else value or []:
            _unicode(text)
        return value


class CompletionRequest(SamplingFields):
    # One choice per prompt. Read as a list of prompts, each a string or a list of token ids (see `_prompts`).
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = Field(16, ge=0, description="0 (with echo) scores the prompt and generates nothing")
    echo: bool = Field(False, description="the prompt's text (and, with logprobs, its tokens) before the completion")
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS,
                                 description="the log-probability of each token and of the k most likely there")

    @field_validator("prompt", mode="plain")
    @classmethod
    def _prompts(cls, value: Any) -> list[str | list[int]]:
        """Every accepted form as a list of prompts; anything else is one sentence (not four union errors)."""
        def ids(x: Any) -> bool:
            return isinstance(x, list) and all(type(t) is int for t in x)

        if isinstance(value, str):
            return [_unicode(value)]
        if isinstance(value, list) and value:
            if all(isinstance(p, str) for p in value):
                return [_unicode(p) for p in value]
            if ids(value):
                return [value]
            if all(ids(p) for p in value):
                empty = [i for i, p in enumerate(value) if not p]
                if empty:
                    raise PydanticCustomError("empty_prompt", f"prompt {empty[0]} is an empty list of token ids")
                return [list(p) for p in value]
        if isinstance(value, list) and not value:
            raise PydanticCustomError("empty_prompt", "the prompt is an empty list")
        raise PydanticCustomError("prompt_type", f"the prompt must be {PROMPT_FORMS}")


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    # `developer` is what current OpenAI clients send for system instructions; the template knows `system`.
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | list[TextPart] | None = None  # None: an assistant turn that said nothing

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: Any) -> Any:
        if isinstance(value, list):
            kinds = sorted({p.get("type") for p in value if isinstance(p, dict)} - {"text"}, key=str)
            if kinds:
                raise PydanticCustomError("content_part", f"content parts of type {kinds} are not supported; "
                                          f"this model reads text parts only")
        return value

    def for_template(self) -> dict[str, str]:
        content = self.content if not isinstance(self.content, list) else "\n".join(p.text for p in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content or ""}


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    def template_messages(self) -> list[dict[str, str]]:
        return [m.for_template() for m in self.messages]


class APIError(Exception):
    """An error answered as {"error": {...}} with `status`."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status, self.kind = message, param, code, status, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion_choice(index: int, text: str, finish: str | None, logprobs: dict | None = None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}


def completion(rid: str, model: str, choices: list[dict[str, Any]], use: dict[str, int] | None = None
               ) -> dict[str, Any]:
    out = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model, "choices": choices}
    return out if use is None else {**out, "usage": use}


def completion_chunk(rid: str, model: str, text: str, finish: str | None, index: int = 0) -> dict[str, Any]:
    return completion(rid, model, [completion_choice(index, text, finish)])


def chat_chunk(rid: str, model: str, delta: dict[str, str], finish: str | None) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def chat_completion(rid: str, model: str, text: str, finish: str, use: dict[str, int]) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish}], "usage": use}
