"""The tiny model and byte-level BPE of tests/infer (one compile cache for the eval tests too)."""

from tests.infer.conftest import main_model, tokenizer  # noqa: F401  (fixtures)
