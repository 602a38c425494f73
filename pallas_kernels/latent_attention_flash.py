"""Flash attention for MLA training and prefill: causal, packed segments, one rope key shared by all heads.

Scores are scale·(q_nope·k_nope + q_rope·k_rope): two products per block instead of concatenating [nope; rope] per
head, so the shared rope key stays one [B, T, R] array and is never broadcast to H copies in memory. The value
width V may differ from N + R (V3: 192 vs 128). Forward keeps an online softmax and saves the log-sum-exp; the backward
recomputes probabilities from it (FlashAttention-2): one kernel for dK/dV (looping over query blocks), one for dQ
(looping over key blocks). No T×T array exists anywhere. The shared rope key's gradient is produced per head and
summed over heads outside the kernel.

Layout: the wrapper moves heads before time ([B, H, T, ·]) so that every block is a plain 2-D tile on both
backends. Each program holds its head's whole key (or query) sequence in a block and walks it in a loop with
causal block skipping — the Triton way, and valid on Mosaic while a head's K/V fits VMEM (≈2.5 MB at T=4096 in
bf16); much longer sequences on TPU want a grid-carried variant (not written). Sequence lengths that are not
multiples of the blocks are zero-padded; padded keys sit after every real query, so causality already hides them.
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

MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)  # finite: a fully masked block must not produce inf − inf
NT = (((1,), (1,)), ((), ()))  # a · bᵀ


def _precision(dtype) -> lax.Precision:
    # float32 parity runs need true fp32 products (Triton would otherwise pick TF32).
    return lax.Precision.HIGHEST if jnp.dtype(dtype) == jnp.float32 else lax.Precision.DEFAULT


def _scores(qn, qr, kn, kr, q_start, k_start, seg_q, seg_k, scale, prec):
    """Masked scale·(qn·knᵀ + qr·krᵀ) for one [bq, bk] tile, fp32."""
    s = lax.dot_general(qn, kn, NT, preferred_element_type=jnp.float32, precision=prec)
    s += lax.dot_general(qr, kr, NT, preferred_element_type=jnp.float32, precision=prec)
    q_pos = q_start + lax.broadcasted_iota(jnp.int32, s.shape, 0)
    k_pos = k_start + lax.broadcasted_iota(jnp.int32, s.shape, 1)
    allowed = (k_pos <= q_pos) & (seg_q == seg_k)
    return jnp.where(allowed, s * scale, MASK_VALUE)


def _fwd_kernel(qn_ref, qr_ref, kn_ref, kr_ref, v_ref, sq_ref, sk_ref, o_ref, lse_ref, *, scale, bq, bk, prec):
    i = pl.program_id(2)
    qn, qr, seg_q = qn_ref[...], qr_ref[...], sq_ref[...]

    def body(j, carry):
        acc, m, l = carry
        ks = pl.ds(pl.multiple_of(j * bk, bk), bk)
        s = _scores(qn, qr, kn_ref[ks, :], kr_ref[ks, :], i * bq, j * bk, seg_q, sk_ref[:, ks], scale, prec)
        m_new = jnp.maximum(m, s.max(axis=1, keepdims=True))
        p = jnp.exp(s - m_new)
        alpha = jnp.exp(m - m_new)
        v = v_ref[ks, :]
        acc = alpha * acc + jnp.dot(p.astype(v.dtype), v, preferred_element_type=jnp.float32, precision=prec)
        return acc, m_new, alpha * l + p.sum(axis=1, keepdims=True)

    init = (jnp.zeros((bq, o_ref.shape[-1]), jnp.float32), jnp.full((bq, 1), -jnp.inf, jnp.float32),
            jnp.zeros((bq, 1), jnp.float32))
    acc, m, l = lax.fori_loop(0, lax.div((i + 1) * bq + bk - 1, bk), body, init)  # causal: skip blocks past i
    o_ref[...] = (acc / l).astype(o_ref.dtype)
    lse_ref[...] = m + jnp.log(l)


def _dkv_kernel(qn_ref, qr_ref, kn_ref, kr_ref, v_ref, sq_ref, sk_ref, do_ref, lse_ref, delta_ref,
                dkn_ref, dkr_ref, dv_ref, *, scale, bq, bk, prec):
    j = pl.program_id(2)
    kn, kr, v, seg_k = kn_ref[...], kr_ref[...], v_ref[...], sk_ref[...]

    def body(i, carry):
        dkn, dkr, dv = carry
        qs = pl.ds(pl.multiple_of(i * bq, bq), bq)
        qn, qr, do = qn_ref[qs, :], qr_ref[qs, :], do_ref[qs, :]
        p = jnp.exp(_scores(qn, qr, kn, kr, i * bq, j * bk, sq_ref[qs, :], seg_k, scale, prec) - lse_ref[qs, :])
        dv += jnp.dot(p.T.astype(do.dtype), do, preferred_element_type=jnp.float32, precision=prec)
        dp = lax.dot_general(do, v, NT, preferred_element_type=jnp.float32, precision=prec)
        ds_t = (p * (dp - delta_ref[qs, :]) * scale).T.astype(qn.dtype)
        dkn += jnp.dot(ds_t, qn, preferred_element_type=jnp.float32, precision=prec)
        dkr += jnp.dot(ds_t, qr, preferred_element_type=jnp.float32, precision=prec)
        return dkn, dkr, dv

    init = (jnp.zeros(kn.shape, jnp.float32), jnp.zeros(kr.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    n_q = qn_ref.shape[0] // bq
    dkn, dkr, dv = lax.fori_loop(lax.div(j * bk, bq), n_q, body, init)  # causal: queries before j never see it
    dkn_ref[...] = dkn.astype(dkn_ref.dtype)
    dkr_ref[...] = dkr.astype(dkr_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(qn_ref, qr_ref, kn_ref, kr_ref, v_ref, sq_ref, sk_ref, do_ref, lse_ref, delta_ref,
               dqn_ref, dqr_ref, *, scale, bq, bk, prec):
    i = pl.program_id(2)
    qn, qr, seg_q, do, lse, delta = qn_ref[...], qr_ref[...], sq_ref[...], do_ref[...], lse_ref[...], delta_ref[...]

    def body(j, carry):
        dqn, dqr = carry
        ks = pl.ds(pl.multiple_of(j * bk, bk), bk)
        kn, kr = kn_ref[ks, :], kr_ref[ks, :]
        p = jnp.exp(_scores(qn, qr, kn, kr, i * bq, j * bk, seg_q, sk_ref[:, ks], scale, prec) - lse)
        dp = lax.dot_general(do, v_ref[ks, :], NT, preferred_element_type=jnp.float32, precision=prec)
        ds = (p * (dp - delta) * scale).astype(kn.dtype)
        dqn += jnp.dot(ds, kn, preferred_element_type=jnp.float32, precision=prec)
        dqr += jnp.dot(ds, kr, preferred_element_type=jnp.float32, precision=prec)
        return dqn, dqr

    init = (jnp.zeros(qn.shape, jnp.float32), jnp.zeros(qr.shape, jnp.float32))
    dqn, dqr = lax.fori_loop(0, lax.div((i + 1) * bq + bk - 1, bk), body, init)
    dqn_ref[...] = dqn.astype(dqn_ref.dtype)
    dqr_ref[...] = dqr.astype(dqr_ref.dtype)


def _call(kernel, grid, in_specs, out_specs, out_shape, cfg, name, blocks):
    if cfg["flavour"] == "triton":
        params = pltriton.CompilerParams(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"])
    else:
        params = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "parallel"))
    body = functools.partial(kernel, scale=cfg["scale"], bq=blocks[0], bk=blocks[1], prec=cfg["prec"])
    return pl.pallas_call(body, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
                          interpret=cfg["interpret"], compiler_params=params, name=name)


def _specs(kr: int, block: int | None, axis_len: int):
    """BlockSpecs over grid (b, h, i): whole sequence per head (block None) or the i-th block of `block` rows."""
    seq = axis_len if block is None else block
    pick = (lambda i: 0) if block is None else (lambda i: i)
    return dict(
        head=lambda d: pl.BlockSpec((None, None, seq, d), lambda b, h, i: (b, h, pick(i), 0)),
        rope=pl.BlockSpec((None, seq, kr), lambda b, h, i: (b, pick(i), 0)),
        col=pl.BlockSpec((None, seq, 1), lambda b, h, i: (b, pick(i), 0)),
        row=pl.BlockSpec((None, 1, seq), lambda b, h, i: (b, 0, pick(i))),
        stat=pl.BlockSpec((None, None, seq, 1), lambda b, h, i: (b, h, pick(i), 0)),
    )


def _forward(cfg, qn, qr, kn, kr, v, seg_q, seg_k):
    b, h, t, n = qn.shape
    r, d_v = qr.shape[-1], v.shape[-1]
    blk, full = _specs(r, cfg["bq"], t), _specs(r, None, t)
    return _call(
        _fwd_kernel, (b, h, t // cfg["bq"]),
        [blk["head"](n), blk["head"](r), full["head"](n), full["rope"], full["head"](d_v), blk["col"], full["row"]],
        [blk["head"](d_v), blk["stat"]],
        [jax.ShapeDtypeStruct((b, h, t, d_v), qn.dtype), jax.ShapeDtypeStruct((b, h, t, 1), jnp.float32)],
        cfg, "flash_mla_fwd", (cfg["bq"], cfg["bk"]))(qn, qr, kn, kr, v, seg_q, seg_k)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(cfg, qn, qr, kn, kr, v, seg_q, seg_k):
    return _forward(dict(cfg), qn, qr, kn, kr, v, seg_q, seg_k)[0]


def _flash_fwd(cfg, qn, qr, kn, kr, v, seg_q, seg_k):
    o, lse = _forward(dict(cfg), qn, qr, kn, kr, v, seg_q, seg_k)
    return o, (qn, qr, kn, kr, v, seg_q, seg_k, o, lse)


def _flash_bwd(cfg, res, do):
    cfg = dict(cfg)
    qn, qr, kn, kr, v, seg_q, seg_k, o, lse = res
    b, h, t, n = qn.shape
    r, d_v = qr.shape[-1], v.shape[-1]
    delta = jnp.sum(o.astype(jnp.float32) * do.astype(jnp.float32), axis=-1, keepdims=True)
    inputs = (qn, qr, kn, kr, v, seg_q, seg_k, do, lse, delta)
    full = _specs(r, None, t)
    blocks = (cfg["bq_bwd"], cfg["bk_bwd"])

    kb = _specs(r, blocks[1], t)
    dkn, dkr_h, dv = _call(
        _dkv_kernel, (b, h, t // blocks[1]),
        [full["head"](n), full["head"](r), kb["head"](n), kb["rope"], kb["head"](d_v), full["col"], kb["row"],
         full["head"](d_v), full["stat"], full["stat"]],
        [kb["head"](n), kb["head"](r), kb["head"](d_v)],
        [jax.ShapeDtypeStruct(kn.shape, kn.dtype), jax.ShapeDtypeStruct((b, h, t, r), jnp.float32),
         jax.ShapeDtypeStruct(v.shape, v.dtype)],
        cfg, "flash_mla_dkv", blocks)(*inputs)

    qb = _specs(r, blocks[0], t)
    dqn, dqr = _call(
        _dq_kernel, (b, h, t // blocks[0]),
        [qb["head"](n), qb["head"](r), full["head"](n), full["rope"], full["head"](d_v), qb["col"], full["row"],
         qb["head"](d_v), qb["stat"], qb["stat"]],
        [qb["head"](n), qb["head"](r)],
        [jax.ShapeDtypeStruct(qn.shape, qn.dtype), jax.ShapeDtypeStruct(qr.shape, qr.dtype)],
        cfg, "flash_mla_dq", blocks)(*inputs)
    # The rope key is shared by all heads, so its gradient is the sum of the per-head ones.
    return dqn, dqr, dkn, dkr_h.sum(axis=1).astype(kr.dtype), dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


def _pad_axis(x: Array, axis: int, size: int, value=0) -> Array:
    if x.shape[axis] == size:
        return x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, pad, constant_values=value)


def flash_mla(q_nope: Float[Array, "B T H N"], q_rope: Float[Array, "B T H R"], k_nope: Float[Array, "B S H N"],
              k_rope: Float[Array, "B S R"], v: Float[Array, "B S H V"], segment_ids: Int[Array, "B T"] | None,
              scale: float, *, interpret: bool | None = None, flavour: Flavour | None = None,
              block_q: int | None = None, block_k: int | None = None, block_q_bwd: int | None = None,
              block_k_bwd: int | None = None, num_warps: int = 8, num_stages: int = 2) -> Float[Array, "B T H V"]:
    """Causal MLA attention, as `eva_jax.nn.attention.mla_attention` with mask = causal ∧ same segment.

    Keys are the queries' own positions (training / prefill from position 0, so S = T). segment_ids [B, T]
    (None: one segment per row) keep packed documents apart. scale is the final softmax scale (YaRN mscale²
    included). Differentiable (custom_vjp). All block sizes must divide the largest of them; the backward
    defaults to smaller tiles on GPU, where its three fp32 accumulators compete for registers.
    """
    b, t, h, n = q_nope.shape
    if k_nope.shape[:3] != (b, t, h) or v.shape[:3] != (b, t, h) or k_rope.shape[:2] != (b, t):
        raise ValueError(f"flash_mla needs keys at the query positions (S = T): q_nope {q_nope.shape}, k_nope "
                         f"{k_nope.shape}, k_rope {k_rope.shape}, v {v.shape}")
    interpret, flavour = kernel_mode("attention", interpret, flavour)
    triton = flavour == "triton"

    def fit(blk: int) -> int:
        # Triton tiles are powers of two (≥ 16 for tensor-core dots); Mosaic wants multiples of 16 rows.
        return min(blk, max(16, pl.next_power_of_2(t))) if triton else min(blk, -(-t // 16) * 16)

    bq, bk = fit(block_q or 128), fit(block_k or 128)
    bq_b, bk_b = fit(block_q_bwd or (64 if triton else bq)), fit(block_k_bwd or (64 if triton else bk))
    blocks = (bq, bk, bq_b, bk_b)
    if any(max(blocks) % x for x in blocks):
        raise ValueError(f"block sizes {blocks} (q, k, q backward, k backward) must all divide the largest")
    tp = -(-t // max(blocks)) * max(blocks)

    def dim(d: int) -> int:  # Triton also wants power-of-two feature widths; zero columns change nothing
        return max(16, pl.next_power_of_2(d)) if triton else d

    def heads_first(x: Array, d: int) -> Array:
        return _pad_axis(_pad_axis(jnp.swapaxes(x, 1, 2), 2, tp), 3, dim(d))

    r, d_v = q_rope.shape[-1], v.shape[-1]
    seg = jnp.zeros((b, t), jnp.int32) if segment_ids is None else segment_ids.astype(jnp.int32)
    seg = _pad_axis(seg, 1, tp, -1)  # padding is its own segment, so padded queries still see a key
    cfg = dict(scale=float(scale), bq=bq, bk=bk, bq_bwd=bq_b, bk_bwd=bk_b, prec=_precision(q_nope.dtype),
               interpret=interpret, flavour=flavour, num_warps=num_warps, num_stages=num_stages)
    o = _flash(tuple(sorted(cfg.items())), heads_first(q_nope, n), heads_first(q_rope, r), heads_first(k_nope, n),
               _pad_axis(_pad_axis(k_rope, 1, tp), 2, dim(r)), heads_first(v, d_v), seg[:, :, None], seg[:, None, :])
    return jnp.swapaxes(o[:, :, :t, :d_v], 1, 2)


__all__ = ["flash_mla", "MASK_VALUE"]
