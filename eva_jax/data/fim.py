"""Fill-in-the-Middle in PSM form (reference §8):
<|fim_begin|> prefix <|fim_hole|> suffix <|fim_end|> middle <|eos|>, applied per document before packing."""

from __future__ import annotations

import numpy as np

from eva_jax.data.tokenizer import Tokenizer


def document_tokens(text: str, tokenizer: Tokenizer, rng: np.random.Generator | None, fim_rate: float) -> list[int]:
    """BOS + the document (FIM-transformed with probability `fim_rate`, split at characters) + EOS."""
    if fim_rate > 0 and len(text) >= 3 and rng.random() < fim_rate:
        a, b = sorted(rng.integers(0, len(text) + 1, size=2).tolist())
        prefix, middle, suffix = text[:a], text[a:b], text[b:]
        enc = lambda s: tokenizer.encode(s, bos=False)  # noqa: E731
        body = ([tokenizer.fim_begin_id, *enc(prefix), tokenizer.fim_hole_id, *enc(suffix),
                 tokenizer.fim_end_id, *enc(middle)])
    else:
        body = tokenizer.encode(text, bos=False)
    return [tokenizer.bos_id, *body, tokenizer.eos_id]
