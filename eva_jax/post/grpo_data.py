"""GRPO prompts from JSON Lines: {"prompt": ..., "answer": ...} (the prompt a text or a list of chat messages, or
{"messages": [...], "answer": ...}), or GSM8K's official lines {"question": ..., "answer": "... #### N"}.

A text prompt is one user turn of the chat template (grpo.prompt_format="chat") or the text itself after BOS
("raw"); messages always go through the template, ending with the assistant's turn open. GSM8K questions get an
instruction asking for the answer as "#### N" (what the `format` reward checks). A bad line — malformed, a field
missing, an empty answer, a prompt leaving no room for grpo.max_new_tokens — is a sentence naming file and line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from eva_jax.config import Config
from eva_jax.data.jsonl import numbered_jsonl
from eva_jax.data.sources import DataError
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.post.sft_data import checked_messages

FORMS = 'expected {"prompt": text or messages, "answer": text}, {"messages": [...], "answer": text} or GSM8K\'s ' \
        '{"question": text, "answer": text}'
GSM8K_INSTRUCTION = "\nSolve it step by step, then give the final answer on its own line as '#### <number>'."


@dataclasses.dataclass(frozen=True)
class Prompt:
    ids: tuple[int, ...]  # the encoded prompt, ending where the completion starts
    answer: str  # the reference the rewards compare with
    line: int


def _answer(row: dict, where: str) -> str:
    answer = row.get("answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str):
        raise DataError(f"{where}: \"answer\" must be text (or a number); {FORMS}")
    if not answer.strip():
        raise DataError(f"{where}: the answer is empty; a reward needs a reference to compare with")
    return answer


def encode_prompt(row: dict, tokenizer: Tokenizer, prompt_format: str, where: str) -> list[int]:
    """The ids the completion continues: the template's rendering with the assistant turn open, or raw text."""
    if "question" in row and "prompt" not in row and "messages" not in row:
        row = {"prompt": str(row["question"]) + GSM8K_INSTRUCTION}
    value = row.get("messages", row.get("prompt"))
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: the prompt is empty")
        if prompt_format == "raw":
            return tokenizer.encode(value)
        value = [{"role": "user", "content": value}]
    elif value is None:
        raise DataError(f"{where}: {FORMS}")
    return tokenizer.encode_chat(checked_messages(value, where), add_generation_prompt=True)


def read_prompts(path: str | Path, tokenizer: Tokenizer, cfg: Config) -> list[Prompt]:
    """Every line as a Prompt whose ids leave room for grpo.max_new_tokens in a row of train.seq_len + 1."""
    room = cfg.train.seq_len + 1 - cfg.grpo.max_new_tokens
    prompts = []
    for number, row in numbered_jsonl(path, DataError, ("answer",), f"; {FORMS}"):
        where = f"{path}:{number}"
        answer = _answer(row, where)
        ids = encode_prompt(row, tokenizer, cfg.grpo.prompt_format, where)
        if len(ids) > room:
            raise DataError(f"{where}: the prompt is {len(ids)} tokens; with grpo.max_new_tokens="
                            f"{cfg.grpo.max_new_tokens} a row of train.seq_len + 1 = {cfg.train.seq_len + 1} "
                            f"holds prompts of at most {max(room, 0)}; raise train.seq_len or shorten it")
        prompts.append(Prompt(tuple(ids), answer, number))
    if not prompts:
        raise DataError(f"{path} holds no prompts; {FORMS}")
    return prompts


def split(prompts: list[Prompt], held: int, seed: int) -> tuple[list[Prompt], list[Prompt]]:
    """(train, held-out): `held` prompts drawn by `seed` are kept out, in file order; at least one trains."""
    if held >= len(prompts):
        raise DataError(f"grpo.heldout_prompts={held} leaves none of the {len(prompts)} prompts to train on")
    order = np.random.default_rng(seed).permutation(len(prompts))
    kept = set(order[:held].tolist())
    return [p for i, p in enumerate(prompts) if i not in kept], [p for i, p in enumerate(prompts) if i in kept]


def batch_of_prompts(prompts: list[Prompt], step: int, count: int, seed: int) -> list[Prompt]:
    """The `count` prompts of rollout batch `step`: epochs in their own seeded order, one after the other — a
    pure function of the step, so a resumed run draws what the uninterrupted one drew."""
    n = len(prompts)
    out = []
    for k in range(step * count, (step + 1) * count):
        epoch, at = divmod(k, n)
        out.append(prompts[int(np.random.default_rng([seed, epoch]).permutation(n)[at])])
    return out
