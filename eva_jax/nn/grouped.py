"""Dropless grouped matmul over token rows sorted by expert.

Four exact layouts behind one interface:
  * "ragged": rows sorted by expert, `jax.lax.ragged_dot` — the grouped GEMM of GPU/TPU backends.
  * "padded": each expert's rows padded to a multiple of a tile inside a static bound (M + E·(tile−1)),
    then one batched einsum over tiles, each tile against a gathered copy of its expert's weights. On XLA:CPU
    ragged_dot is >10× slower than this (benchmarks/grouped_matmul.py, figures in docs/performance.md).
  * "tiled": the padded row layout, but a loop over only the tiles in use, one expert's weights read per
    tile, with a hand-written backward of the same form. Memory is rows + weights (no per-tile weight copies,
    which at DeepSeek-V3's 7168×2048 experts are 29 MB a tile) and work follows the real rows, not the static
    bound. The memory-sane stand-in for a grouped GEMM kernel at scale (the 671B dry run uses it) and the
    layout expert parallelism uses.
  * "slab": a dense [E, C] slab holding each expert's first C rows (C = the mean load), multiplied as one
    batched GEMM, and the rows past C in small tiles of the "tiled" loop. A balanced router puts nearly every
    row in the slab, so the work is one efficient batched matmul over ~M rows. The CPU default ("auto"): the
    routed experts' forward + backward take 378 ms against 437 for "tiled" at the benchmark shape.
`plan` builds the layout from the router's choices; `gather_rows`, `grouped_matmul` and `combine` use it.
A plan may declare its last expert a null expert (expert parallelism sends padding there): its rows are
invalid, never computed and come out zero, so the weights need no zero expert appended.
"""

from __future__ import annotations

import functools

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
    tile_expert: Int[Array, " NT"] | None  # expert of each tile ("padded", "tiled")
    used_tiles: Int[Array, ""] | None = None  # tiles holding real rows ("tiled" computes only these)
    tile: int = flax.struct.field(pytree_node=False, default=0)
    looped: bool = flax.struct.field(pytree_node=False, default=False)
    slab: int = flax.struct.field(pytree_node=False, default=0)  # rows per expert in the dense slab ("slab")


def resolve_impl(impl: str) -> str:
    if impl != "auto":
        return impl
    return "slab" if jax.default_backend() == "cpu" else "ragged"


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


def plan(experts: Int[Array, "N K"], num_experts: int, impl: str, null_expert: bool = False) -> Layout:
    """The row layout for the chosen experts; `impl` is "ragged", "padded", "tiled" or "auto". With
    `null_expert`, expert num_experts−1 is padding: its rows are invalid and the weights hold num_experts−1."""
    impl = resolve_impl(impl)
    if impl not in ("ragged", "padded", "tiled", "slab"):
        raise ValueError(f"compute.moe_impl={impl!r}: expected 'ragged', 'padded', 'tiled', 'slab' or 'auto'")
    n, k = experts.shape
    m = n * k
    real = num_experts - 1 if null_expert else num_experts
    flat, order, sizes, starts = _sort_by_expert(experts, num_experts)
    if impl == "ragged":
        slot_row = jnp.zeros((m,), jnp.int32).at[order].set(jnp.arange(m, dtype=jnp.int32))
        valid = jnp.arange(m) < starts[real - 1] + sizes[real - 1]  # null rows sort last
        # ragged_dot leaves rows past the last group at zero, so the null expert's rows cost nothing.
        return Layout(order // k, valid, slot_row.reshape(n, k), sizes[:real], None)
    # Expert parallelism's buffers are mostly padding, so a slab sized by their length would be mostly waste:
    # with a null expert "slab" is the tile loop.
    if impl == "slab" and not null_expert:
        return _slab_plan(flat, order, sizes, starts, n, k, num_experts)
    tile = tile_size(m, num_experts)
    rows = -(-(m + num_experts * (tile - 1)) // tile) * tile  # static bound on the padded total
    padded = -(-sizes // tile) * tile
    padded_end = jnp.cumsum(padded)
    padded_start = padded_end - padded
    r = jnp.arange(rows, dtype=jnp.int32)
    row_expert = jnp.minimum(jnp.searchsorted(padded_end, r, side="right"), num_experts - 1).astype(jnp.int32)
    offset = r - padded_start[row_expert]
    valid = (offset < sizes[row_expert]) & (r < padded_end[real - 1])
    sorted_pos = jnp.where(valid, starts[row_expert] + offset, 0)
    row_token = jnp.where(valid, order[sorted_pos] // k, 0)
    expert_of_sorted = flat[order]
    row_of_sorted = padded_start[expert_of_sorted] + jnp.arange(m, dtype=jnp.int32) - starts[expert_of_sorted]
    slot_row = jnp.zeros((m,), jnp.int32).at[order].set(row_of_sorted.astype(jnp.int32))
    # Tiles of the null expert point at a real one: their rows are zero, so they come out zero.
    tile_expert = jnp.minimum(row_expert[::tile], real - 1)
    return Layout(row_token, valid, slot_row.reshape(n, k), sizes, tile_expert, padded_end[real - 1] // tile,
                  tile, impl in ("tiled", "slab"))


SLAB_OVERFLOW_TILE = 32


def _slab_plan(flat, order, sizes, starts, n: int, k: int, num_experts: int) -> Layout:
    """Rows [e·C, e·C + min(size_e, C)) hold expert e's first rows; past the slab, each expert's remaining
    rows padded to a multiple of the overflow tile, experts in order (the "tiled" form)."""
    m = n * k
    mean_load = -(-m // num_experts)
    slab = -(-mean_load // 8) * 8  # a multiple of 8 at or above the mean load
    tile = SLAB_OVERFLOW_TILE
    base = num_experts * slab
    # Σ_e max(0, size_e − C) ≤ M − C: at least one expert holds its C rows whenever any row overflows.
    overflow_rows = -(-(m - slab + num_experts * (tile - 1)) // tile) * tile
    in_slab = jnp.minimum(sizes, slab)
    padded = -(-(sizes - in_slab) // tile) * tile
    over_end = jnp.cumsum(padded)
    over_start = over_end - padded
    expert_of_sorted = flat[order]
    j = jnp.arange(m, dtype=jnp.int32) - starts[expert_of_sorted]  # rank of the row within its expert
    row_of_sorted = jnp.where(j < slab, expert_of_sorted * slab + j,
                              base + over_start[expert_of_sorted] + j - slab).astype(jnp.int32)
    rows = base + overflow_rows
    row_token = jnp.zeros((rows,), jnp.int32).at[row_of_sorted].set((order // k).astype(jnp.int32))
    valid = jnp.zeros((rows,), bool).at[row_of_sorted].set(True)
    slot_row = jnp.zeros((m,), jnp.int32).at[order].set(row_of_sorted)
    t = jnp.arange(overflow_rows // tile, dtype=jnp.int32) * tile
    tile_expert = jnp.minimum(jnp.searchsorted(over_end, t, side="right"), num_experts - 1).astype(jnp.int32)
    return Layout(row_token, valid, slot_row.reshape(n, k), sizes, tile_expert, over_end[-1] // tile, tile,
                  True, slab)


def gather_rows(x: Float[Array, "N D"], layout: Layout) -> Float[Array, "R D"]:
    rows = jnp.take(x, layout.row_token, axis=0)
    return jnp.where(layout.row_valid[:, None], rows, jnp.zeros((), x.dtype))


def grouped_matmul(rows: Float[Array, "R I"], w: Float[Array, "E I O"], layout: Layout) -> Float[Array, "R O"]:
    """rows[r] @ w[expert of row r], for every row, in the layout's form."""
    if layout.tile_expert is None:
        return jax.lax.ragged_dot(rows, w, layout.group_sizes)
    if layout.slab:
        base = layout.slab * w.shape[0]  # a slab layout has no null expert: every expert has its C rows
        slab = rows[:base].reshape(w.shape[0], layout.slab, rows.shape[-1])
        dense = jnp.einsum("ECI,EIO->ECO", slab, w).reshape(base, w.shape[-1])
        overflow = _tile_loop(rows[base:], w, layout.tile_expert, layout.used_tiles, layout.tile)
        return jnp.concatenate([dense, overflow.astype(dense.dtype)], axis=0)
    if layout.looped:
        # Inside shard_map the rows vary over the batch axes and the weights only over `expert`: widen both
        # to one variance here, so the hand-written backward needs no collectives (autodiff adds the psum).
        rows, w = (_varying(a, rows, w) for a in (rows, w))
        return _tile_loop(rows, w, layout.tile_expert, layout.used_tiles, layout.tile)
    tiles = rows.reshape(-1, layout.tile, rows.shape[-1])
    out = jnp.einsum("ntI,nIO->ntO", tiles, jnp.take(w, layout.tile_expert, axis=0))
    return out.reshape(rows.shape[0], w.shape[-1])


def _variance(x: Array) -> frozenset:
    return jax.typeof(x).manual_axis_type.varying


def _varying(x: Array, *like: Array) -> Array:
    """`x` marked as varying over every manual mesh axis any of `like` varies over (a no-op outside shard_map);
    loop carries must match the variance of what the loop body makes of them."""
    axes = frozenset().union(*(_variance(a) for a in like))
    missing = tuple(sorted(axes - _variance(x)))
    return jax.lax.pcast(x, missing, to="varying") if missing else x


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _tile_loop(rows: Float[Array, "R I"], w: Float[Array, "E I O"], tile_expert: Int[Array, " NT"],
               used: Int[Array, ""], tile: int) -> Float[Array, "R O"]:
    """rows[tile i] @ w[tile_expert[i]] for i < used; later rows are zero."""
    out = _varying(jnp.zeros((rows.shape[0], w.shape[-1]), jnp.result_type(rows, w)), rows, w, tile_expert)

    def body(i, out):
        y = jnp.dot(jax.lax.dynamic_slice_in_dim(rows, i * tile, tile), w[tile_expert[i]])
        return jax.lax.dynamic_update_slice_in_dim(out, y.astype(out.dtype), i * tile, 0)

    return jax.lax.fori_loop(0, used, body, out)


def _tile_loop_fwd(rows, w, tile_expert, used, tile):
    return _tile_loop(rows, w, tile_expert, used, tile), (rows, w, tile_expert, used)


def _tile_loop_bwd(tile, saved, d_out):
    """d_rows[tile i] = d_out[tile i] @ w[e_i]ᵀ;  d_w[e_i] += rows[tile i]ᵀ @ d_out[tile i] (fp32 accumulator)."""
    rows, w, tile_expert, used = saved
    like = (rows, w, d_out, tile_expert)
    d_rows = _varying(jnp.zeros(rows.shape, jnp.result_type(d_out, w)), *like)
    d_w = _varying(jnp.zeros(w.shape, jnp.float32), *like)

    def body(i, carry):
        d_rows, d_w = carry
        x = jax.lax.dynamic_slice_in_dim(rows, i * tile, tile)
        g = jax.lax.dynamic_slice_in_dim(d_out, i * tile, tile)
        e = tile_expert[i]
        d_x = jnp.dot(g, w[e].T).astype(d_rows.dtype)
        d_we = jnp.dot(x.T, g, preferred_element_type=jnp.float32)
        return jax.lax.dynamic_update_slice_in_dim(d_rows, d_x, i * tile, 0), d_w.at[e].add(d_we)

    d_rows, d_w = jax.lax.fori_loop(0, used, body, (d_rows, d_w))
    return d_rows.astype(rows.dtype), d_w.astype(w.dtype), None, None


_tile_loop.defvjp(_tile_loop_fwd, _tile_loop_bwd)


def combine(rows: Float[Array, "R D"], weights: Float[Array, "N K"], layout: Layout) -> Float[Array, "N D"]:
    """Σ_k weights[n, k]·rows[slot_row[n, k]], accumulated in fp32."""
    picked = jnp.take(rows, layout.slot_row, axis=0).astype(jnp.float32)  # [N, K, D]
    return jnp.einsum("NKD,NK->ND", picked, weights.astype(jnp.float32))
