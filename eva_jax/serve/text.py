"""Token ids to text, incrementally: only whole characters are released, and text that could be the start of
a stop string is held back until it is clearly not one."""

from __future__ import annotations

from eva_jax.data.tokenizer import Tokenizer


class TextStream:
    def __init__(self, tokenizer: Tokenizer, stop_tokens: frozenset[int], stop_strings: list[str]) -> None:
        self.tokenizer, self.stop_tokens = tokenizer, stop_tokens
        self.stop_strings = [s for s in stop_strings if s]
        self.ids: list[int] = []
        self.sent = 0  # characters already released
        self.stopped = False  # a stop string was found
        self.text = ""

    def push(self, ids: list[int], final: bool) -> str:
        """New text to release after `ids`; with `final`, everything that is left."""
        if self.stopped:
            return ""
        self.ids += [i for i in ids if i not in self.stop_tokens]
        text = self.tokenizer.decode(self.ids)
        for stop in self.stop_strings:
            at = text.find(stop)
            if at >= 0:
                text, self.stopped, final = text[:at], True, True
        self.text = text
        end = len(text)
        if not final:
            if text.endswith("\ufffd"):  # a character whose bytes have not all arrived
                end = len(text.rstrip("\ufffd"))
            for stop in self.stop_strings:  # a suffix that may grow into a stop string
                for k in range(min(len(stop) - 1, end), 0, -1):
                    if text[:end].endswith(stop[:k]):
                        end -= k
                        break
        end = max(end, self.sent)
        out, self.sent = text[self.sent: end], end
        return out
