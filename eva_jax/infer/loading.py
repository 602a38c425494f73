"""`load_checkpoint(path) -> (cfg, params, tokenizer)` for the CLI and the server, dispatching on what the
directory holds: a Hugging Face checkpoint (config.json + safetensors) or an Orbax training workdir."""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

from eva_jax.config import Config
from eva_jax.data.tokenizer import META_FILE, TOKENIZER_FILE, Tokenizer, TokenizerError

# The workdir `python -m eva_jax.train` uses with no arguments (workdirs/<config>, default config v3_small).
DEFAULT_WORKDIR = Path("workdirs") / "v3_small"
DEEPSEEK_V3_VOCAB = 128_815  # ids in DeepSeek-V3's tokenizer; its checkpoints pad the embedding to 129,280
TRAIN_HOOK = ("eva_jax.train.checkpoint", "load_for_inference")


class CheckpointNotFound(FileNotFoundError):
    pass


def find_tokenizer(directory: Path, vocab_size: int) -> Tokenizer | None:
    """The tokenizer saved next to the weights, else DeepSeek-V3's when the vocabulary is DeepSeek's."""
    if (directory / TOKENIZER_FILE).exists() and (directory / META_FILE).exists():
        return Tokenizer.load(directory)
    if (directory / TOKENIZER_FILE).exists():
        import tokenizers

        from eva_jax.data.tokenizer import deepseek_v3_chat_template

        config = directory / "tokenizer_config.json"
        template = json.loads(config.read_text()).get("chat_template") if config.exists() else None
        try:
            return Tokenizer(tokenizers.Tokenizer.from_file(str(directory / TOKENIZER_FILE)),
                             template or deepseek_v3_chat_template(), directory.name)
        except TokenizerError:
            pass
    if vocab_size >= DEEPSEEK_V3_VOCAB:
        from eva_jax.data.tokenizer import deepseek_v3

        return deepseek_v3()
    return None


def _orbax(workdir: Path) -> tuple[Config, Any, Tokenizer | None]:
    """The newest complete checkpoint of a training workdir, through the training package's reader (imported
    only here, so serving a Hugging Face checkpoint never loads Orbax)."""
    module_name, function = TRAIN_HOOK
    load = None
    if importlib.util.find_spec("eva_jax.train") is not None and importlib.util.find_spec(module_name) is not None:
        load = getattr(importlib.import_module(module_name), function, None)
    if load is None:
        raise CheckpointNotFound(f"{workdir} is an Orbax training workdir, and reading those needs "
                                 f"{module_name}.{function}, which this installation lacks. Export the run to a "
                                 f"Hugging Face checkpoint with eva_jax.to_hf and pass that directory instead.")
    try:
        return load(workdir)
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
        from eva_jax.checkpoints.hf import from_hf

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
