"""The engine's side of the paged latent cache (the model's side, pages and how they are read and written,
is eva_jax/nn/kv_cache.py): the pool of device pages, one Pages per cache layer — the main model's L layers
followed by the D MTP blocks (each MTP block attends over its own history when drafting) — in the compute
dtype; `PagePool`, which hands out page ids on the host and takes them back; page tables; and the accounting.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

from eva_jax.config import ModelConfig
from eva_jax.nn.kv_cache import TRASH_PAGE, Pages


def cache_layers(cfg: ModelConfig) -> int:
    return cfg.num_layers + cfg.num_mtp_layers


def latent_width(cfg: ModelConfig) -> int:
    return cfg.kv_lora_rank + cfg.qk_rope_head_dim


def init_pool(cfg: ModelConfig, num_pages: int, page_size: int, dtype: DTypeLike) -> list[Pages]:
    """Zeroed pages (in the compute dtype `dtype`) for `num_pages` usable pages plus the trash page, separate
    buffers per cache layer so every layer's write happens in place."""
    dt = jnp.dtype(dtype)
    shape = (num_pages + 1, page_size)
    return [Pages(jnp.zeros((*shape, cfg.kv_lora_rank), dt), jnp.zeros((*shape, cfg.qk_rope_head_dim), dt))
            for _ in range(cache_layers(cfg))]


@dataclasses.dataclass(frozen=True)
class CacheAccounting:
    """Bytes per token per layer of the latent cache next to what full multi-head K/V would take."""

    latent_bytes: int
    mha_bytes: int
    layers: int

    @property
    def ratio(self) -> float:
        return self.mha_bytes / self.latent_bytes

    def lines(self) -> list[str]:
        return [f"latent cache: {self.latent_bytes:,} B per token per layer "
                f"({self.latent_bytes * self.layers:,} B per token over {self.layers} layers)",
                f"full multi-head K/V: {self.mha_bytes:,} B per token per layer ({self.ratio:.1f}× larger)"]


def accounting(cfg: ModelConfig, dtype: str = "bfloat16") -> CacheAccounting:
    """2·(kv_lora_rank + qk_rope_head_dim) bytes in bf16 (1,152 B for V3); MHA caches K (N+R) and V per head."""
    size = jnp.dtype(dtype).itemsize
    latent = size * latent_width(cfg)
    mha = size * cfg.num_heads * (cfg.qk_head_dim + cfg.v_head_dim)
    return CacheAccounting(latent, mha, cfg.num_layers)


def pages_for(tokens: int, page_size: int) -> int:
    return -(-tokens // page_size)


class PoolExhausted(RuntimeError):
    pass


class PagePool:
    """Host-side allocator of page ids 1..num_pages (0 is the trash page)."""

    def __init__(self, num_pages: int) -> None:
        if num_pages < 1:
            raise ValueError(f"the page pool needs at least one page, got num_pages={num_pages}")
        self.num_pages = num_pages
        self._free = list(range(num_pages, 0, -1))  # pop() hands out low ids first
        self._taken: set[int] = set()

    @property
    def free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise PoolExhausted(f"{n} pages requested, {len(self._free)} free")
        pages = [self._free.pop() for _ in range(n)]
        self._taken.update(pages)
        return pages

    def release(self, pages: list[int]) -> None:
        if not set(pages) <= self._taken or len(set(pages)) != len(pages):
            raise ValueError(f"pages {pages} are not all held (returned twice, or never handed out)")
        self._taken.difference_update(pages)
        self._free.extend(reversed(pages))


def page_table(rows: list[list[int]], width: int) -> np.ndarray:
    """[len(rows), width] int32, each row's pages then the trash page."""
    table = np.full((len(rows), width), TRASH_PAGE, np.int32)
    for i, pages in enumerate(rows):
        table[i, : min(width, len(pages))] = pages[:width]
    return table
