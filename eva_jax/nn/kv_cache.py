"""The paged latent cache as the model sees it (reference §2.4, docs/architecture.md): per token and layer only
the normalised KV latent c_n (C values) and the rotated shared rope key k_r (R values), in fixed-size pages.

The model takes one layer's `Pages` in and hands the updated pages back (values, not mutable state); `Rows`
says where the step's tokens sit. Which pages a sequence owns, and the pool they come from, are the engine's
(eva_jax.infer.cache). Page 0 is the trash page: padding tokens write there and unused page-table entries
point there, so every write and gather has a fixed shape; reads of it are masked out.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

TRASH_PAGE = 0


class Pages(NamedTuple):
    """One cache layer: latent [pages, page_size, C] and rope key [pages, page_size, R], kept apart so that
    attention reads each as a whole array (slicing a joint [.., C + R] array copies it)."""

    latent: Float[Array, "P S C"]
    rope: Float[Array, "P S R"]


# The cache of a whole model: one Pages per cache layer (the L main layers, then the D MTP blocks).
Pool = list[Pages]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Rows:
    """Where a step's tokens sit: absolute positions (cache slots, contiguous per row), which ones are real
    (stored), and each row's page table."""

    positions: Int[Array, "B T"]
    valid: Bool[Array, "B T"]
    page_table: Int[Array, "B P"]


def write(pages: Pages, latent: Float[Array, "B T C"], rope: Float[Array, "B T R"], positions: Int[Array, "B T"],
          valid: Bool[Array, "B T"], page_table: Int[Array, "B P"]) -> Pages:
    """Stores each valid token's entries at its position's page and offset; invalid ones go to the trash page."""
    page_size = pages.latent.shape[1]
    safe = jnp.clip(positions, 0, page_table.shape[1] * page_size - 1)
    page = jnp.take_along_axis(page_table, safe // page_size, axis=1)
    page = jnp.where(valid, page, TRASH_PAGE)
    offset = safe % page_size
    return Pages(pages.latent.at[page, offset].set(latent.astype(pages.latent.dtype)),
                 pages.rope.at[page, offset].set(rope.astype(pages.rope.dtype)))


def read(pages: Pages, page_table: Int[Array, "B P"], length: Int[Array, " B"] | None = None
         ) -> tuple[Float[Array, "B S C"], Float[Array, "B S R"]]:
    """Every entry of the sequences' pages, in position order (S = pages·page_size). With `length`, slots at
    or past a row's length read as exact zeros: they may hold anything (the shared trash page, a recycled
    page), and a masked slot must contribute 0, not 0·NaN. The select fuses into the gather."""
    def gather(x):
        g = x[page_table]  # whole pages: contiguous blocks, not single rows
        g = g.reshape(g.shape[0], g.shape[1] * g.shape[2], g.shape[3])
        if length is None:
            return g
        live = jnp.arange(g.shape[1])[None, :, None] < length[:, None, None]
        return jnp.where(live, g, jnp.zeros((), g.dtype))

    return gather(pages.latent), gather(pages.rope)
