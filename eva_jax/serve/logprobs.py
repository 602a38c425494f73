"""The `logprobs` object of OpenAI's (legacy) completions API, built from eva_jax.eval's token scores:
{"tokens", "token_logprobs", "top_logprobs", "text_offset"}, one entry per token.

- tokens: each token's own text (special tokens by name); a token holding only part of a character is
  "bytes:\\xNN…", as OpenAI writes such tokens, so no two tokens share a name;
- token_logprobs: log p(token | everything before it); null for a sequence's first token, which nothing predicts;
- top_logprobs: {token text: logprob} of the k most likely tokens there, plus the token itself (so up to k + 1);
- text_offset: where the token's text starts in the decoded prompt + completion (special tokens add no text;
  the tokens of a character split across tokens all start where the character does).
"""

from __future__ import annotations

import functools
from typing import Any

from tokenizers.decoders import DecodeStream

from eva_jax.data.tokenizer import Tokenizer
from eva_jax.eval.loglik import TokenScores


@functools.cache
def _byte_of() -> dict[str, int]:
    """GPT-2's byte-to-character table, inverted: byte-level BPE vocabularies (DeepSeek's and the trained ones)
    spell every byte as one printable character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]  # spelled 256, 257, ... in byte order
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(others)}}


def token_text(tokenizer: Tokenizer, token: int) -> str:
    """A token's text, or "bytes:\\xNN…" when its bytes are not whole characters."""
    text = tokenizer.decode([token])
    if "\ufffd" not in text:
        return text
    spelled, table = tokenizer.backend.id_to_token(token) or "", _byte_of()
    if not spelled or any(ch not in table for ch in spelled):
        return text
    raw = bytes(table[ch] for ch in spelled)
    try:
        return raw.decode("utf-8")  # a real U+FFFD
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def text_offsets(tokenizer: Tokenizer, ids: list[int]) -> list[int]:
    """Character offset of each token's text in the decoded text of all of them, in one incremental pass."""
    stream = DecodeStream(skip_special_tokens=True)
    offsets, at = [], 0
    for token in ids:
        offsets.append(at)
        at += len(stream.step(tokenizer.backend, token) or "")
    return offsets


def logprobs_object(tokenizer: Tokenizer, ids: list[int], scores: TokenScores, first: int) -> dict[str, Any]:
    """The entries of ids[first:]; `scores` are of the whole sequence (entry j-1 is about ids[j])."""
    names: dict[int, str] = {}

    def name(token: int) -> str:
        if token not in names:
            names[token] = token_text(tokenizer, token)
        return names[token]

    offsets = text_offsets(tokenizer, ids)
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for j in range(first, len(ids)):
        out["tokens"].append(name(ids[j]))
        out["text_offset"].append(offsets[j])
        if j == 0:
            out["token_logprobs"].append(None)
            out["top_logprobs"].append(None)
            continue
        logprob = float(scores.logprobs[j - 1])
        top: dict[str, float] = {}
        if scores.top_ids is not None:
            for token, value in zip(scores.top_ids[j - 1].tolist(), scores.top_logprobs[j - 1].tolist()):
                top.setdefault(name(token), float(value))
        top.setdefault(name(ids[j]), logprob)
        out["token_logprobs"].append(logprob)
        out["top_logprobs"].append(top)
    return out
