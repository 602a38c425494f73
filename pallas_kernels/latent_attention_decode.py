"""Absorbed MLA decode over a paged latent cache (reference §2.4; FlashMLA's problem).

Every head's query lives in latent space (q̃ = q_nope·W_UK, C = 512 for V3) plus a rope part (R = 64), and all
heads share one key/value stream: the latent c_n (key and value at once) and the rope key. So the kernel treats
the T·H query rows of a sequence as the M side of one matmul against each cache page — MQA with T·H "heads" —
and reads each page once per block of rows. The output stays in latent space; W_UV is applied outside.

The cache is [P pages, Z page size, C] (+ [P, Z, R] for the rope key), addressed per sequence by a page table
[B, M max pages] (P, Z, M extend the model's dimension legend). lengths[b] counts the valid positions including
the T new ones, so query t sits at position lengths[b] − T + t (causal for T > 1: speculative verification).
Rows past a sequence's length, and page-table entries past its last page, are never trusted: entries are clamped
to the last used page and rows are zeroed.

The key axis can be split (`num_splits`) so a small batch still fills the machine; each split writes its partial
output normalised by its own softmax sum plus the log-sum-exp, and the splits are merged outside the kernel.
- "triton" (GPU): grid (B, row blocks, splits); each program loops over its pages, reading page ids from the table.
- "mosaic" (TPU): page table and lengths are scalar-prefetched into SMEM and drive the BlockSpec index map, so the
  pipeline DMAs page after page; grid (B, row blocks, splits, pages per split) with the softmax state in VMEM.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton
from jaxtyping import Array, Float, Int

from pallas_kernels.backend import Flavour, kernel_mode
from pallas_kernels.latent_attention_flash import MASK_VALUE, NT, _precision


def _page_update(q, qr, lat, kr, k_start, q_pos, length, carry, *, scale, prec):
    """One page of online softmax for [bm] query rows: returns the new (acc, m, l)."""
    acc, m, l = carry
    live = (k_start + lax.broadcasted_iota(jnp.int32, (lat.shape[0], 1), 0)) < length
    lat = jnp.where(live, lat, 0).astype(q.dtype)  # stale or poisoned rows past the length must not reach P·V
    s = lax.dot_general(q, lat, NT, preferred_element_type=jnp.float32, precision=prec)
    s += lax.dot_general(qr, kr.astype(qr.dtype), NT, preferred_element_type=jnp.float32, precision=prec)
    k_pos = k_start + lax.broadcasted_iota(jnp.int32, s.shape, 1)
    s = jnp.where((k_pos <= q_pos) & (k_pos < length), s * scale, MASK_VALUE)
    m_new = jnp.maximum(m, s.max(axis=1, keepdims=True))
    p = jnp.exp(s - m_new)
    alpha = jnp.exp(m - m_new)
    acc = alpha * acc + jnp.dot(p.astype(lat.dtype), lat, preferred_element_type=jnp.float32, precision=prec)
    return acc, m_new, alpha * l + p.sum(axis=1, keepdims=True)


def _query_positions(block: int | Int[Array, ""], bm: int, length, n_new: int, n_heads: int):
    rows = block * bm + lax.broadcasted_iota(jnp.int32, (bm, 1), 0)
    # Row r is token r // H of the T new ones; lax.div because r ≥ 0 needs no floor fix-up (Mosaic lacks `sign`).
    return length - n_new + lax.div(rows, n_heads)


def _finish(acc, m, l, o_ref, lse_ref):
    # A split that owns no live page (short sequence) reports weight zero rather than 0/0. (A split whose live
    # keys are all causally hidden from a row has l > 0 from masked scores, but its lse ≈ MASK_VALUE gives it
    # zero weight in the merge; every row sees at least itself in some split.)
    seen = l > 0
    o_ref[...] = jnp.where(seen, acc / jnp.where(seen, l, 1.0), 0.0).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), -jnp.inf)


def _triton_kernel(pt_ref, len_ref, q_ref, qr_ref, lat_ref, rope_ref, o_ref, lse_ref, *,
                   scale, n_new, n_heads, page, pages_per_split, prec):
    b, i, s = pl.program_id(0), pl.program_id(1), pl.program_id(2)
    length = len_ref[b]
    q, qr = q_ref[...], qr_ref[...]
    bm = q.shape[0]
    q_pos = _query_positions(i, bm, length, n_new, n_heads)
    first = s * pages_per_split
    last = jnp.minimum(first + pages_per_split, lax.div(length + page - 1, page))

    def body(p, carry):
        idx = pt_ref[b, p]
        return _page_update(q, qr, lat_ref[idx, :, :], rope_ref[idx, :, :], p * page, q_pos, length, carry,
                            scale=scale, prec=prec)

    init = (jnp.zeros((bm, o_ref.shape[-1]), jnp.float32), jnp.full((bm, 1), -jnp.inf, jnp.float32),
            jnp.zeros((bm, 1), jnp.float32))
    _finish(*lax.fori_loop(first, jnp.maximum(first, last), body, init), o_ref, lse_ref)


def _mosaic_kernel(pt_ref, len_ref, q_ref, qr_ref, lat_ref, rope_ref, o_ref, lse_ref, acc_sc, m_sc, l_sc, *,
                   scale, n_new, n_heads, page, pages_per_split, prec):
    b, i, s, p = (pl.program_id(d) for d in range(4))
    length = len_ref[b]

    @pl.when(p == 0)
    def _():
        acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)
        m_sc[...] = jnp.full(m_sc.shape, -jnp.inf, jnp.float32)
        l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)

    k_start = (s * pages_per_split + p) * page

    @pl.when(k_start < length)
    def _():
        q_pos = _query_positions(i, q_ref.shape[0], length, n_new, n_heads)
        acc, m, l = _page_update(q_ref[...], qr_ref[...], lat_ref[...], rope_ref[...], k_start, q_pos, length,
                                 (acc_sc[...], m_sc[...], l_sc[...]), scale=scale, prec=prec)
        acc_sc[...], m_sc[...], l_sc[...] = acc, m, l

    @pl.when(p == pages_per_split - 1)
    def _():
        _finish(acc_sc[...], m_sc[...], l_sc[...], o_ref, lse_ref)


def live_page(bi, s, p, pt, lens, *, page: int, pages_per_split: int):
    """The cache page the TPU pipeline fetches at grid step (split s, step p) of sequence bi.

    Past the sequence's last live page it keeps pointing at that page: the pipeline then skips the copy, and a
    garbage (possibly out-of-range) page-table entry is never handed to the DMA engine.
    """
    last = jnp.maximum(lax.div(lens[bi] + page - 1, page) - 1, 0)
    return pt[bi, jnp.minimum(s * pages_per_split + p, last)]


def _default_splits(flavour: Flavour, programs: int, max_pages: int) -> int:
    if flavour == "mosaic":
        return 1  # TPU grids run in order on one or two cores; splitting only adds merge work
    # Aim for ~2 programs per SM of a 132-SM Hopper; keep ≥ 4 pages per split so each one amortises its merge.
    return max(1, min(-(-264 // programs), -(-max_pages // 4)))


def _merge_splits(o: Array, lse: Array) -> Array:
    """Σ_s softmax-weighted partial outputs: each split's o is normalised by its own sum, lse carries the sum."""
    top = lse.max(axis=1, keepdims=True)
    w = jnp.exp(lse - jnp.where(jnp.isfinite(top), top, 0.0))
    return (w * o).sum(axis=1) / w.sum(axis=1)


def mla_decode(q_latent: Float[Array, "B T H C"], q_rope: Float[Array, "B T H R"],
               latent_pages: Float[Array, "P Z C"], rope_pages: Float[Array, "P Z R"],
               page_table: Int[Array, "B M"], lengths: Int[Array, " B"], scale: float, *,
               interpret: bool | None = None, flavour: Flavour | None = None, block_rows: int | None = None,
               num_splits: int | None = None, num_warps: int = 8, num_stages: int = 2) -> Float[Array, "B T H C"]:
    """Absorbed MLA attention of T new tokens per sequence over a paged latent cache; output in latent space.

    q_latent = q_nope·W_UK per head; scores = scale·(q_latent·c + q_rope·k_rope) over the sequence's first
    lengths[b] cached positions (which include the T new ones; lengths[b] ≥ T), causal among the new tokens.
    block_rows: query rows (of T·H) per program; num_splits: key-axis splits (None: by occupancy).
    """
    b, t, h, c = q_latent.shape
    r = q_rope.shape[-1]
    n_pages, page = latent_pages.shape[:2]
    max_pages = page_table.shape[1]
    if rope_pages.shape[:2] != (n_pages, page) or q_rope.shape[:3] != (b, t, h) or page_table.shape[0] != b:
        raise ValueError(f"mla_decode shapes disagree: q_latent {q_latent.shape}, q_rope {q_rope.shape}, "
                         f"latent_pages {latent_pages.shape}, rope_pages {rope_pages.shape}, "
                         f"page_table {page_table.shape}")
    interpret, flavour = kernel_mode("attention", interpret, flavour)
    if flavour == "triton" and not interpret and any(d & (d - 1) for d in (c, r, page)):
        raise ValueError(f"the Triton decode kernel needs power-of-two latent, rope and page sizes; got C={c}, "
                         f"R={r}, page size {page} (DeepSeek-V3: 512, 64, 64)")
    rows = t * h
    if flavour == "triton":
        # A [rows, 512] fp32 accumulator lives in registers: 32 rows × 512 over 8 warps is 64 values a thread.
        bm = block_rows or min(32, max(16, pl.next_power_of_2(rows)))
    else:
        bm = block_rows or min(256, -(-rows // 16) * 16)
    mp = -(-rows // bm) * bm
    q = jnp.pad(q_latent.reshape(b, rows, c), ((0, 0), (0, mp - rows), (0, 0)))
    qr = jnp.pad(q_rope.reshape(b, rows, r), ((0, 0), (0, mp - rows), (0, 0)))
    splits = num_splits or _default_splits(flavour, b * (mp // bm), max_pages)
    pps = -(-max_pages // splits)
    page_table, lengths = page_table.astype(jnp.int32), lengths.astype(jnp.int32)
    out_shape = [jax.ShapeDtypeStruct((b, splits, mp, c), jnp.float32),
                 jax.ShapeDtypeStruct((b, splits, mp, 1), jnp.float32)]
    static = dict(scale=float(scale), n_new=t, n_heads=h, page=page, pages_per_split=pps,
                  prec=_precision(q_latent.dtype))

    if flavour == "triton":
        # Entries past a sequence's last page are never read (the loop stops at its length).
        whole = pl.BlockSpec()  # the whole array: programs index pages themselves
        o, lse = pl.pallas_call(
            functools.partial(_triton_kernel, **static),
            grid=(b, mp // bm, splits),
            in_specs=[whole, whole,
                      pl.BlockSpec((None, bm, c), lambda i, j, s: (i, j, 0)),
                      pl.BlockSpec((None, bm, r), lambda i, j, s: (i, j, 0)),
                      whole, whole],
            out_specs=[pl.BlockSpec((None, None, bm, c), lambda i, j, s: (i, s, j, 0)),
                       pl.BlockSpec((None, None, bm, 1), lambda i, j, s: (i, s, j, 0))],
            out_shape=out_shape, interpret=interpret, name="mla_decode",
            compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
        )(page_table, lengths, q, qr, latent_pages, rope_pages)
    else:
        def page_map(bi, j, s, p, pt, lens):
            return live_page(bi, s, p, pt, lens, page=page, pages_per_split=pps), 0, 0

        grid_spec = pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=2,
            grid=(b, mp // bm, splits, pps),
            in_specs=[pl.BlockSpec((None, bm, c), lambda bi, j, s, p, pt, lens: (bi, j, 0)),
                      pl.BlockSpec((None, bm, r), lambda bi, j, s, p, pt, lens: (bi, j, 0)),
                      pl.BlockSpec((None, page, c), page_map),
                      pl.BlockSpec((None, page, r), page_map)],
            out_specs=[pl.BlockSpec((None, None, bm, c), lambda bi, j, s, p, pt, lens: (bi, s, j, 0)),
                       pl.BlockSpec((None, None, bm, 1), lambda bi, j, s, p, pt, lens: (bi, s, j, 0))],
            scratch_shapes=[pltpu.VMEM((bm, c), jnp.float32), pltpu.VMEM((bm, 1), jnp.float32),
                            pltpu.VMEM((bm, 1), jnp.float32)])
        o, lse = pl.pallas_call(
            functools.partial(_mosaic_kernel, **static), grid_spec=grid_spec,
            out_shape=out_shape, interpret=interpret, name="mla_decode",
            compiler_params=pltpu.CompilerParams(
                dimension_semantics=("parallel", "parallel", "parallel", "arbitrary")),
        )(page_table, lengths, q, qr, latent_pages, rope_pages)
    out = o[:, 0] if splits == 1 else _merge_splits(o, lse)
    return out[:, :rows].reshape(b, t, h, c).astype(q_latent.dtype)


__all__ = ["mla_decode"]
