"""SFT data: conversations from JSON Lines, rendered with the chat template, with the loss on assistant tokens
only, packed whole into rows whose samples never see each other (segment ids and per-sample positions).

A line is {"messages": [{"role": ..., "content": ...}, ...]} or {"prompt": ..., "completion": ...} (one user
turn and the answer). Each assistant turn's tokens — its text and the end-of-sentence token the template puts
after it — are targets; the template's tokens and every other turn are context. A bad line is a sentence
naming the file and the line.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from eva_jax.data.jsonl import numbered_jsonl
from eva_jax.data.sources import DataError
from eva_jax.data.tokenizer import Tokenizer

ROLES = ("system", "developer", "user", "assistant")
FORMS = 'expected {"messages": [{"role": ..., "content": ...}, ...]} or {"prompt": ..., "completion": ...}'


@dataclasses.dataclass(frozen=True)
class Sample:
    ids: np.ndarray  # int32 [n]: the rendered conversation
    targets: np.ndarray  # bool [n]: token i is predicted and counts in the loss (an assistant token)


def checked_messages(messages, where: str) -> list[dict]:
    """A non-empty list of {"role": known role, "content": text}; `developer` becomes `system`."""
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: messages must be a non-empty list")
    out = []
    for k, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: message {k} must be {{\"role\": one of {', '.join(ROLES)}, "
                            f"\"content\": text}}")
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]})
    return out


def conversation(row: dict, where: str) -> list[dict]:
    """The messages of one line, checked: known roles, text content, at least one non-empty assistant turn."""
    if "messages" in row:
        messages = row["messages"]
    elif "prompt" in row and "completion" in row:
        messages = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
    else:
        raise DataError(f"{where}: {FORMS}")
    out = checked_messages(messages, where)
    answers = [m for m in out if m["role"] == "assistant"]
    if not answers or not any(m["content"].strip() for m in answers):
        raise DataError(f"{where}: there is no assistant answer to learn (empty or missing)")
    return out


def encode(tokenizer: Tokenizer, messages: list[dict], where: str) -> Sample:
    """Ids and target flags: the chat up to each assistant turn is the prompt (ending in <｜Assistant｜>), the
    turn itself — up to the rendering of the chat that includes it — the answer."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    ids: list[int] = []
    targets: list[bool] = []
    for i, m in enumerate(messages[: last + 1]):
        if m["role"] != "assistant":
            continue
        prompt = tokenizer.encode_chat(messages[:i], add_generation_prompt=True)
        full = tokenizer.encode_chat(messages[: i + 1], add_generation_prompt=False)
        if prompt[: len(ids)] != ids or full[: len(prompt)] != prompt:
            raise DataError(f"{where}: the chat template does not render this conversation turn by turn (a "
                            f"system message after the first answer?); put system messages first")
        targets += [False] * (len(prompt) - len(ids)) + [True] * (len(full) - len(prompt))
        ids = full
    return Sample(np.asarray(ids, np.int32), np.asarray(targets, bool))


def read_samples(path: str | Path, tokenizer: Tokenizer, max_tokens: int) -> list[Sample]:
    """Every line of the file as a Sample of at most `max_tokens` tokens (a row: seq_len + 1)."""
    samples = []
    for number, row in numbered_jsonl(path, DataError, hint=f"; {FORMS}"):
        where = f"{path}:{number}"
        sample = encode(tokenizer, conversation(row, where), where)
        if len(sample.ids) > max_tokens:
            raise DataError(f"{where}: the conversation is {len(sample.ids)} tokens, more than a training row "
                            f"holds ({max_tokens} = train.seq_len + 1); raise train.seq_len or shorten it")
        samples.append(sample)
    if not samples:
        raise DataError(f"{path} holds no conversations")
    return samples


def pack(lengths: list[int], order: np.ndarray, row_len: int, open_rows: int = 8) -> list[list[int]]:
    """Sample indices per row, whole samples only: each sample in `order` goes to the first of the last
    `open_rows` rows with room, else starts a row (first-fit over a window: near-full rows, linear time)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for s in order:
        n = lengths[s]
        start = max(0, len(rows) - open_rows)
        slot = next((r for r in range(start, len(rows)) if room[r] >= n), None)
        if slot is None:
            rows.append([])
            room.append(row_len)
            slot = len(rows) - 1
        rows[slot].append(int(s))
        room[slot] -= n
    return rows


def row_arrays(samples: list[Sample], members: list[list[int]], row_len: int) -> dict[str, np.ndarray]:
    """Rows as the pipeline's arrays: tokens, segment ids (1.. per sample, 0 = padding), positions (from 0 in
    each sample) and loss_mask (the target flags)."""
    shape = (len(members), row_len)
    out = {"tokens": np.zeros(shape, np.int32), "tokens_segment_ids": np.zeros(shape, np.int32),
           "tokens_positions": np.zeros(shape, np.int32), "loss_mask": np.zeros(shape, bool)}
    for r, row in enumerate(members):
        at = 0
        for seg, s in enumerate(row, start=1):
            sample, n = samples[s], len(samples[s].ids)
            out["tokens"][r, at:at + n] = sample.ids
            out["tokens_segment_ids"][r, at:at + n] = seg
            out["tokens_positions"][r, at:at + n] = np.arange(n)
            out["loss_mask"][r, at:at + n] = sample.targets
            at += n
    return out
