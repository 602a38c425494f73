"""Dropless grouped matmul over token rows sorted by expert.

Two exact layouts behind one interface:
  * "ragged": rows sorted by expert, `jax.lax.ragged_dot` — the grouped GEMM of GPU/TPU backends.
  * "padded": each expert's rows padded to a multiple of a tile inside a static bound (M + E·(tile−1)),
    then one batched einsum over tiles. On XLA:CPU ragged_dot is >10× slower than this
    (benchmarks/grouped_matmul.py, figures in docs/performance.md).
`plan` builds the layout from the router's choices; `gather_rows`, `grouped_matmul` and `combine` use it.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

MAX_TILE = 256


@flax.struct.dataclass
class Layout:
    row_token: Int[Array, " R"]  # the token each row holds (padding rows hold token 0 and are invalid)
    row_valid: Bool[Array, " R"]
    slot_row: Int[Array, "N K"]  # the row of each (token, choice) pair
    group_sizes: Int[Array, " E"]  # rows per expert ("ragged")
    tile_expert: Int[Array, " NT"] | None  # expert of each tile ("padded")
    tile: int = flax.struct.field(pytree_node=False, default=0)


def resolve_impl(impl: str) -> str:
    if impl != "auto":
        return impl
    return "padded" if jax.default_backend() == "cpu" else "ragged"


def tile_size(rows: int, num_experts: int) -> int:
    """A power of two near the mean rows per expert, between 8 and MAX_TILE."""
    mean = max(1, -(-rows // num_experts))
    return int(min(MAX_TILE, max(8, 1 << (mean - 1).bit_length())))


def _sort_by_expert(experts: Int[Array, "N K"], num_experts: int):
    flat = experts.reshape(-1)
    order = jnp.argsort(flat, stable=True)  # sorted position -> flat slot
    sizes = jnp.bincount(flat, length=num_experts).astype(jnp.int32)
    starts = jnp.cumsum(sizes) - sizes
    return flat, order, sizes, starts


def plan(experts: Int[Array, "N K"], num_experts: int, impl: str) -> Layout:
    """The row layout for the chosen experts; `impl` is "ragged", "padded" or "auto"."""
    impl = resolve_impl(impl)
    n, k = experts.shape
    m = n * k
    flat, order, sizes, starts = _sort_by_expert(experts, num_experts)
    if impl == "ragged":
        slot_row = jnp.zeros((m,), jnp.int32).at[order].set(jnp.arange(m, dtype=jnp.int32))
        return Layout(order // k, jnp.ones((m,), bool), slot_row.reshape(n, k), sizes, None, 0)
    if impl != "padded":
        raise ValueError(f"model.moe_impl={impl!r}: expected 'ragged', 'padded' or 'auto'")
    tile = tile_size(m, num_experts)
    rows = -(-(m + num_experts * (tile - 1)) // tile) * tile  # static bound on the padded total
    padded = -(-sizes // tile) * tile
    padded_end = jnp.cumsum(padded)
    padded_start = padded_end - padded
    r = jnp.arange(rows, dtype=jnp.int32)
    row_expert = jnp.minimum(jnp.searchsorted(padded_end, r, side="right"), num_experts - 1).astype(jnp.int32)
    offset = r - padded_start[row_expert]
    valid = (offset < sizes[row_expert]) & (r < padded_end[-1])
    sorted_pos = jnp.where(valid, starts[row_expert] + offset, 0)
    row_token = jnp.where(valid, order[sorted_pos] // k, 0)
    expert_of_sorted = flat[order]
    row_of_sorted = padded_start[expert_of_sorted] + jnp.arange(m, dtype=jnp.int32) - starts[expert_of_sorted]
    slot_row = jnp.zeros((m,), jnp.int32).at[order].set(row_of_sorted.astype(jnp.int32))
    return Layout(row_token, valid, slot_row.reshape(n, k), sizes, row_expert[::tile], tile)


def gather_rows(x: Float[Array, "N D"], layout: Layout) -> Float[Array, "R D"]:
    rows = jnp.take(x, layout.row_token, axis=0)
    return jnp.where(layout.row_valid[:, None], rows, jnp.zeros((), x.dtype))


def grouped_matmul(rows: Float[Array, "R I"], w: Float[Array, "E I O"], layout: Layout) -> Float[Array, "R O"]:
    """rows[r] @ w[expert of row r], for every row, in the layout's form."""
    if layout.tile_expert is None:
        return jax.lax.ragged_dot(rows, w, layout.group_sizes)
    tiles = rows.reshape(-1, layout.tile, rows.shape[-1])
    out = jnp.einsum("ntI,nIO->ntO", tiles, jnp.take(w, layout.tile_expert, axis=0))
    return out.reshape(rows.shape[0], w.shape[-1])


def combine(rows: Float[Array, "R D"], weights: Float[Array, "N K"], layout: Layout) -> Float[Array, "N D"]:
    """Σ_k weights[n, k]·rows[slot_row[n, k]], accumulated in fp32."""
    picked = jnp.take(rows, layout.slot_row, axis=0).astype(jnp.float32)  # [N, K, D]
    return jnp.einsum("NKD,NK->ND", picked, weights.astype(jnp.float32))
