"""Chat encoding in which only the chat template places control tokens.

Encoding the rendered chat as one string would let message text forge control tokens: a user who types
`<｜end▁of▁sentence｜>` or `<｜Assistant｜>` would get the real ids (DeepSeek's `<｜User｜>`/`<｜Assistant｜>` are
not even marked special, so `encode_special_tokens` would not stop them). Here every added-token string inside
a message is swapped for an unused private-use character before rendering; the rendered text is split at the
added tokens that remain (the template's own); the runs between them are encoded as plain text, with the
swapped strings restored, by a copy of the tokenizer that knows no added tokens.

For text without such strings the ids equal encoding the rendered string whole: the tokenizer itself splits
at added tokens first and encodes the runs between them independently (tests/data/test_chat_encoding.py checks
against transformers). One consequence of treating message text as text: a template rule that looks for an
added token inside a message (DeepSeek's drops assistant reasoning up to `</think>`) sees it as text too.
"""

from __future__ import annotations

import json
import re

import tokenizers

PRIVATE_USE = range(0xF0000, 0xFFFFE)  # supplementary private-use area A: no tokenizer gives these meaning


class ChatEncoder:
    """Renders messages with a template and encodes them with control tokens from the template only."""

    def __init__(self, backend: tokenizers.Tokenizer) -> None:
        self.added = {tok.content: i for i, tok in backend.get_added_tokens_decoder().items()}
        longest_first = sorted(self.added, key=len, reverse=True)  # as the tokenizer matches: leftmost-longest
        self.pattern = re.compile("|".join(map(re.escape, longest_first)))
        spec = json.loads(backend.to_str())
        spec["added_tokens"] = []
        self.text_backend = tokenizers.Tokenizer.from_str(json.dumps(spec))

    def _markers(self, texts: list[str]) -> dict[str, str]:
        """One unused private-use character per added-token string that occurs in `texts`."""
        found = sorted({m.group() for text in texts for m in self.pattern.finditer(text)})
        if not found:
            return {}
        used = set().union(*map(set, texts))
        free = (chr(c) for c in PRIVATE_USE if chr(c) not in used)
        return {s: next(free) for s in found}

    def encode(self, messages: list[dict], render) -> list[int]:
        """`render(messages)` is the template; message contents are encoded as text."""
        texts = [m["content"] for m in messages if isinstance(m.get("content"), str)]
        markers = self._markers(texts)
        if markers:
            swap = re.compile("|".join(map(re.escape, sorted(markers, key=len, reverse=True))))
            messages = [{**m, "content": swap.sub(lambda x: markers[x.group()], m["content"])}
                        if isinstance(m.get("content"), str) else m for m in messages]
        rendered = render(messages)
        restore = {v: k for k, v in markers.items()}
        pieces: list[int | str] = []
        at = 0
        for match in self.pattern.finditer(rendered):
            pieces += [rendered[at:match.start()], self.added[match.group()]]
            at = match.end()
        pieces.append(rendered[at:])
        runs = [p.translate(str.maketrans(restore)) if restore else p for p in pieces if isinstance(p, str) and p]
        encoded = iter(self.text_backend.encode_batch(runs, add_special_tokens=False))
        out: list[int] = []
        for piece in pieces:
            if isinstance(piece, int):
                out.append(piece)
            elif piece:
                out += next(encoded).ids
        return out
