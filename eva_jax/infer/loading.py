"""`load_checkpoint(path) -> (cfg, params, tokenizer)` for the CLI and the server, dispatching on what the
directory holds: a Hugging Face checkpoint (config.json + safetensors) or an Orbax training workdir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tokenizers

from eva_jax.checkpoints import workdir as workdir_reader
from eva_jax.checkpoints.hf import from_hf
from eva_jax.checkpoints.safetensors_io import read_json
from eva_jax.config import Config
from eva_jax.data.tokenizer import (
    META_FILE,
    TOKENIZER_FILE,
    Tokenizer,
    TokenizerError,
    deepseek_v3,
    deepseek_v3_chat_template,
)

# The workdir `python -m eva_jax.train` uses with no arguments (workdirs/<config>, default config v3_small).
DEFAULT_WORKDIR = Path("workdirs") / "v3_small"
DEEPSEEK_V3_VOCAB = 128_815  # ids in DeepSeek-V3's tokenizer; its checkpoints pad the embedding to 129,280


class CheckpointNotFound(FileNotFoundError):
    pass


def find_tokenizer(directory: Path, vocab_size: int) -> Tokenizer | None:
    """The tokenizer saved next to the weights, else DeepSeek-V3's when the vocabulary is DeepSeek's."""
    if (directory / TOKENIZER_FILE).exists() and (directory / META_FILE).exists():
        return Tokenizer.load(directory)
    if (directory / TOKENIZER_FILE).exists():
        config = directory / "tokenizer_config.json"
        template = read_json(config).get("chat_template") if config.exists() else None
        try:
            return Tokenizer(tokenizers.Tokenizer.from_file(str(directory / TOKENIZER_FILE)),
                             template or deepseek_v3_chat_template(), directory.name)
        except TokenizerError:
            pass
    if vocab_size >= DEEPSEEK_V3_VOCAB:
        return deepseek_v3()
    return None


def _orbax(workdir: Path) -> tuple[Config, Any, Tokenizer | None]:
    """The newest complete checkpoint of a training workdir (eva_jax/checkpoints/workdir.py: parameters only)."""
    try:
        return workdir_reader.load(workdir)
    except FileNotFoundError as err:  # no completed checkpoint yet: the reader's sentence says what to do
        raise CheckpointNotFound(str(err)) from None


def _is_workdir(directory: Path) -> bool:
    """A run that has not saved yet still has its config.json (an Eva Config, which has a `train` section)."""
    try:
        return "train" in json.loads((directory / "config.json").read_text())
    except (OSError, ValueError, TypeError):
        return False


def load_checkpoint(path: str | Path, dtype: str = "float32") -> tuple[Config, Any, Tokenizer | None]:
    """(Config, params, tokenizer or None) from a Hugging Face checkpoint directory or an Orbax workdir."""
    directory = Path(path)
    if not directory.is_dir():
        raise CheckpointNotFound(f"{directory} is not a directory; pass a Hugging Face checkpoint directory "
                                 f"(config.json + *.safetensors) or a training workdir")
    if (directory / "config.json").exists() and any(directory.glob("*.safetensors")):
        cfg, params = from_hf(directory, dtype=dtype)
        return cfg, params, find_tokenizer(directory, cfg.model.vocab_size)
    if (directory / "checkpoints").is_dir() or _is_workdir(directory):
        return _orbax(directory)
    raise CheckpointNotFound(f"{directory} holds neither a Hugging Face checkpoint (config.json + *.safetensors) "
                             f"nor a training workdir (checkpoints/)")


def default_checkpoint() -> Path:
    """The default training run's workdir, or an error that says how to make one."""
    if (DEFAULT_WORKDIR / "checkpoints").is_dir() and any((DEFAULT_WORKDIR / "checkpoints").iterdir()):
        return DEFAULT_WORKDIR
    raise CheckpointNotFound(f"no --checkpoint given and the default training run {DEFAULT_WORKDIR}/ holds no "
                             f"checkpoint. Train one with `python -m eva_jax.train` (config v3_small), or pass "
                             f"--checkpoint DIR with a Hugging Face checkpoint directory.")
