"""What the engine is told: its shapes and pool (EngineConfig) and each request's state (Request)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from eva_jax.config import ModelConfig
from eva_jax.infer import cache
from eva_jax.infer.sampling import SamplingParams

Listener = Callable[["Request", list[int]], None]


def bucket(n: int, floor: int = 1, cap: int | None = None) -> int:
    """The power of two ≥ max(n, floor), capped at `cap`: the few shapes compiled steps see."""
    size = 1 << (max(n, floor) - 1).bit_length()
    return min(size, cap) if cap is not None else size


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    max_batch: int = 8  # decode slots
    page_size: int = 16  # tokens per cache page
    num_pages: int | None = None  # pool size; None = max_batch full-length sequences
    max_seq_len: int | None = None  # prompt + new tokens; None = the model's max_position_embeddings
    speculative: bool = False  # draft with the MTP modules
    min_prefill_len: int = 16
    # Batch sizes the compiled steps are built for; None = powers of two up to max_batch. One entry
    # (e.g. (max_batch,)) means one compiled decode step whatever the load.
    row_buckets: tuple[int, ...] | None = None
    # Smallest page-table width; max_seq_len / page_size gives a single decode shape.
    min_table_pages: int = 1

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.page_size < 1:
            raise ValueError(f"max_batch={self.max_batch} and page_size={self.page_size} must be positive")
        if self.row_buckets is not None and max(self.row_buckets) < self.max_batch:
            raise ValueError(f"row_buckets={self.row_buckets} must include a size >= max_batch={self.max_batch}")

    def rows(self, n: int) -> int:
        if self.row_buckets is None:
            return bucket(n, cap=self.max_batch)
        return min(b for b in self.row_buckets if b >= n)

    def seq_len(self, cfg: ModelConfig) -> int:
        # YaRN positions reach max_position_embeddings; the model was not built for more.
        return min(self.max_seq_len or cfg.max_position_embeddings, cfg.max_position_embeddings)

    def pages(self, cfg: ModelConfig) -> int:
        if self.num_pages is not None:
            return self.num_pages
        return self.max_batch * cache.pages_for(self.seq_len(cfg) + cfg.num_mtp_layers, self.page_size)


@dataclasses.dataclass(eq=False)
class Request:
    id: int
    prompt: list[int]
    max_tokens: int
    sampling: SamplingParams
    stop: frozenset[int]
    stream: int = 0  # which random stream of `seed` this request draws from
    listener: Listener | None = None
    output: list[int] = dataclasses.field(default_factory=list)
    # Log-probability of each output token under the distribution it was drawn from (sampling.sample); empty
    # with speculative decoding, whose accepted drafts come from two distributions.
    logprobs: list[float] = dataclasses.field(default_factory=list)
    finish_reason: str | None = None  # "stop", "length", "cancelled" or "error"
    error: str | None = None
    pages: list[int] = dataclasses.field(default_factory=list)
    slot: int | None = None
    cancelled: bool = False
    main_steps: int = 0
    drafted: int = 0
    accepted: int = 0

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def position(self) -> int:
        """Position of the newest token, the one the next step feeds to the model."""
        return len(self.prompt) + len(self.output) - 1
