"""Pallas kernels against their references and the XLA path: FP8 GEMM, MLA flash attention, absorbed paged decode.

    python benchmarks/kernels.py            # GPU or TPU, DeepSeek-V3 shapes, < 5 min; appends to docs/performance.md
    python benchmarks/kernels.py --smoke    # any machine: tiny shapes in interpret mode, prints only

Each kernel is first checked against its reference (max |Δ| / max |ref|), then timed next to the XLA path the
model would otherwise run (bf16 `jnp.dot` for the GEMM; the T×T jnp attention; gather + einsum decode).
Counting follows DeepGEMM / FlashMLA: GEMM FLOPs 2·M·N·K; attention FLOPs 2·h·s_q·s_k·(d_k + d_v), halved when
causal, ×3 for forward + backward; decode bytes = cache bytes read (576 bf16 values per live position).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.report import append_section  # noqa: E402
from pallas_kernels.backend import default_flavour  # noqa: E402
from pallas_kernels.fp8_matmul import fp8_matmul, fp8_scaled_matmul  # noqa: E402
from pallas_kernels.fp8_matmul_ref import column_scales, fp8_matmul_ref  # noqa: E402
from pallas_kernels.latent_attention import flash_mla, mla_decode  # noqa: E402
from pallas_kernels.latent_attention_ref import flash_mla_ref, mla_decode_paged_ref  # noqa: E402
from pallas_kernels.quant import quantize_blocks, quantize_tiles  # noqa: E402

# device_kind substring → (dense bf16 TFLOP/s, dense FP8 TFLOP/s or None, HBM GB/s); first match wins.
PEAKS = [("H100 PCIe", (756, 1513, 2000)), ("H200", (989, 1979, 4800)), ("H100", (989, 1979, 3350)),
         ("H800", (989, 1979, 3350)), ("H20", (148, 296, 4000)), ("B200", (2250, 4500, 8000)),
         ("A100", (312, None, 2039)), ("TPU v4", (275, None, 1200)), ("TPU v5 lite", (197, None, 819)),
         ("TPU v5", (459, None, 2765)), ("TPU v6", (918, None, 1640)), ("TPU7", (2307, 4614, 7370))]
TIME_BUDGET_S = 270.0
DIMS = dict(h=128, n=128, r=64, v=128, c=512, page=64)  # DeepSeek-V3 MLA
V3_SCALE = 0.13523378  # 192^-1/2 · YaRN mscale² (reference §2.2)
# Shapes per mode. Check shapes are deliberately awkward (not multiples of the blocks, ragged lengths).
SHAPES = {
    "real": dict(fp8_check=(512, 1088, 384),
                 fp8=[(4096, 7168, 2048), (4096, 7168, 2112), (4096, 1536, 24576), (4096, 16384, 7168),
                      (4096, 2048, 7168)],
                 flash_check=(1, 1000, 4), flash=[(1, 4096, 128), (2, 4096, 128), (4, 4096, 128)],
                 decode_check=(3, 16, 1000), decode_heads=DIMS["h"],
                 decode=[(1, 4096), (1, 65536), (16, 16384), (64, 32768), (128, 4096), (128, 65536)]),
    "smoke": dict(fp8_check=(64, 320, 200), fp8=[(64, 256, 256)], flash_check=(1, 40, 2), flash=[(1, 64, 2)],
                  decode_check=(3, 4, 200), decode_heads=4, decode=[(2, 256)]),
}
# Alternative tilings timed on the first shape of each kernel (defaults first), to guide tuning from one run.
SWEEPS = {
    ("fp8", "triton"): [dict(block_m=128, block_n=256), dict(block_m=64, block_n=128, num_warps=4)],
    ("fp8", "mosaic"): [dict(block_m=512, block_n=512, block_k=1024), dict(block_m=256, block_n=512)],
    ("flash", "triton"): [dict(block_q=64, block_k=64), dict(block_q=128, block_k=64, num_warps=4)],
    ("flash", "mosaic"): [dict(block_q=256, block_k=256)],
    ("decode", "triton"): [dict(block_rows=16), dict(block_rows=64), dict(num_splits=1)],
    ("decode", "mosaic"): [dict(block_rows=64)],
}


@dataclasses.dataclass
class Ctx:
    smoke: bool
    interpret: bool
    flavour: str
    iters: int
    peaks: tuple[float, float | None, float] | None
    shapes: dict
    start: float = dataclasses.field(default_factory=time.perf_counter)
    rows: list[str] = dataclasses.field(default_factory=list)
    checks: list[str] = dataclasses.field(default_factory=list)

    def time_left(self) -> float:
        return TIME_BUDGET_S - (time.perf_counter() - self.start)

    def sweep(self, kernel: str, first: bool) -> list[dict]:
        """The default configuration, plus the alternatives on the first shape of a real run."""
        return [{}] + (SWEEPS.get((kernel, self.flavour), []) if first and not self.smoke else [])


def label(impl: str, cfg: dict) -> str:
    return impl + (" " + ",".join(f"{k}={v}" for k, v in cfg.items()) if cfg else "")


def timed(ctx: Ctx, fn, *args) -> float:
    """Seconds per call: one compile-and-warm call, then `iters` back-to-back calls and one sync."""
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(ctx.iters):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / ctx.iters


def row(ctx: Ctx, kernel: str, shape: str, impl: str, sec: float, flops: float, nbytes: float,
        fp8: bool = False) -> None:
    tflops, gbs = flops / sec / 1e12, nbytes / sec / 1e9  # (tiny in --smoke: printed to 3 significant digits)
    pct_f = pct_b = "n/a"
    if ctx.peaks:
        bf16, f8, bw = ctx.peaks
        peak = f8 if (fp8 and f8) else bf16
        pct_f, pct_b = f"{100 * tflops / peak:.0f}%", f"{100 * gbs / bw:.0f}%"
    ctx.rows.append(f"| {kernel} | {shape} | {impl} | {sec * 1e3:.3f} | {tflops:.3g} | {pct_f} | {gbs:.3g} | {pct_b} |")
    print(ctx.rows[-1], flush=True)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def record_check(ctx: Ctx, what: str, err: float, tol: float) -> None:
    verdict = "ok" if err <= tol and np.isfinite(err) else "FAIL"
    ctx.checks.append(f"- check {what}: rel err {err:.2e} (tol {tol:g}) {verdict}")
    print(ctx.checks[-1], flush=True)


def normal(key, shape, dtype=jnp.bfloat16, scale=1.0):
    return (jax.random.normal(key, shape, jnp.float32) * scale).astype(dtype)


def bench_fp8(ctx: Ctx, key) -> None:
    kw = dict(interpret=ctx.interpret)
    m, k, n = ctx.shapes["fp8_check"]
    x, w = normal(key, (m, k)), normal(jax.random.fold_in(key, 1), (k, n), jnp.float32, 0.05)
    got = jax.jit(lambda x, w: fp8_matmul(x, w, out_dtype=jnp.float32, **kw))(x, w)
    want = fp8_matmul_ref(x, w, out_dtype=jnp.float32)
    record_check(ctx, f"fp8_matmul {m}x{k}x{n} vs reference recipe", rel_err(got, want), 1e-4)
    for i, (m, k, n) in enumerate(ctx.shapes["fp8"]):
        if ctx.time_left() < 20:
            ctx.rows.append(f"| fp8 gemm | {m}x{k}x{n} | skipped (time budget) | | | | | |")
            continue
        x, w = normal(jax.random.fold_in(key, 10 + i), (m, k)), normal(jax.random.fold_in(key, 20 + i), (k, n))
        xq, xs = quantize_tiles(x, axis=1)
        wq, ws = quantize_blocks(w, xp=jnp)
        wcols = column_scales(ws, n)
        flops, shape = 2 * m * n * k, f"{m}x{k}x{n}"
        for cfg in ctx.sweep("fp8", i == 0):
            kernel = jax.jit(lambda a, sa, b, sb, cfg=cfg: fp8_scaled_matmul(a, sa, b, sb, out_dtype=jnp.bfloat16,
                                                                             **kw, **cfg))
            row(ctx, "fp8 gemm", shape, label("pallas, pre-quantised", cfg), timed(ctx, kernel, xq, xs, wq, wcols),
                flops, m * k + k * n + 2 * m * n, fp8=True)
        full = jax.jit(lambda x, w: fp8_matmul(x, w, **kw))
        row(ctx, "fp8 gemm", shape, "pallas + quantise x, w", timed(ctx, full, x, w), flops,
            2 * (m * k + k * n + m * n), fp8=True)
        row(ctx, "fp8 gemm", shape, "xla bf16 dot", timed(ctx, jax.jit(jnp.dot), x, w), flops,
            2 * (m * k + k * n + m * n))
        if i == 0:  # a training step: forward, dgrad and wgrad
            def step(f):
                return jax.jit(jax.grad(lambda x, w: f(x, w).astype(jnp.float32).sum(), (0, 1)))
            row(ctx, "fp8 gemm fwd+bwd", shape, "pallas", timed(ctx, step(lambda x, w: fp8_matmul(x, w, **kw)), x, w),
                3 * flops, 0, fp8=True)
            row(ctx, "fp8 gemm fwd+bwd", shape, "xla bf16", timed(ctx, step(jnp.dot), x, w), 3 * flops, 0)


def flash_inputs(key, b, t, h, n, r, v):
    ks = jax.random.split(key, 5)
    return [normal(ks[0], (b, t, h, n)), normal(ks[1], (b, t, h, r)), normal(ks[2], (b, t, h, n)),
            normal(ks[3], (b, t, r)), normal(ks[4], (b, t, h, v))]


def bench_flash(ctx: Ctx, key) -> None:
    d = DIMS
    kw = dict(interpret=ctx.interpret)
    b, t, h = ctx.shapes["flash_check"]
    args = flash_inputs(key, b, t, h, d["n"], d["r"], d["v"])
    seg = jnp.asarray(np.repeat(np.arange(4), -(-t // 4))[None, :t], jnp.int32)
    d_out = normal(jax.random.fold_in(key, 9), (b, t, h, d["v"]))

    def with_grads(attn):
        return jax.jit(lambda *a: (lambda o, vjp: (o, *vjp(d_out)))(*jax.vjp(lambda *x: attn(*x, seg, V3_SCALE), *a)))

    got = with_grads(lambda *a: flash_mla(*a, **kw))(*args)
    want = with_grads(flash_mla_ref)(*args)
    record_check(ctx, f"flash_mla bf16 B={b} T={t} H={h}, output and 5 grads, packed segments",
                 max(rel_err(g, w) for g, w in zip(got, want)), 2e-2)
    for i, (b, t, h) in enumerate(ctx.shapes["flash"]):
        if ctx.time_left() < 30:
            ctx.rows.append(f"| flash mla | B={b} T={t} H={h} | skipped (time budget) | | | | | |")
            continue
        args = flash_inputs(jax.random.fold_in(key, 100 + i), b, t, h, d["n"], d["r"], d["v"])
        flops = 2 * b * h * t * t * (d["n"] + d["r"] + d["v"]) / 2
        shape = f"B={b} T={t} H={h}"
        xla_fits = b * h * t * t * 6 < 40e9  # fp32 scores + bf16 probabilities
        fwd = [(label("pallas", cfg), lambda *a, cfg=cfg: flash_mla(*a, None, V3_SCALE, **kw, **cfg))
               for cfg in ctx.sweep("flash", i == 0)]
        if xla_fits:
            fwd.append(("xla T×T", lambda *a: flash_mla_ref(*a, None, V3_SCALE)))
        for impl, fn in fwd:
            row(ctx, "flash mla fwd", shape, impl, timed(ctx, jax.jit(fn), *args), flops, 0)
        for impl, fn in [fwd[0]] + ([fwd[-1]] if i == 0 and xla_fits else []):
            grad = jax.jit(jax.grad(lambda *a: fn(*a).astype(jnp.float32).sum(), tuple(range(5))))
            row(ctx, "flash mla fwd+bwd", shape, impl, timed(ctx, grad, *args), 3 * flops, 0)


def decode_inputs(key, b, ctx_len, h, page, lengths=None):
    d = DIMS
    pages_per_seq = -(-ctx_len // page)
    n_pages = b * pages_per_seq
    ks = jax.random.split(key, 5)
    table = jax.random.permutation(ks[0], n_pages).reshape(b, pages_per_seq).astype(jnp.int32)
    lengths = jnp.full((b,), ctx_len, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
    return (normal(ks[1], (b, 1, h, d["c"])), normal(ks[2], (b, 1, h, d["r"])),
            normal(ks[3], (n_pages, page, d["c"])), normal(ks[4], (n_pages, page, d["r"])), table, lengths)


def bench_decode(ctx: Ctx, key) -> None:
    d = DIMS
    kw = dict(interpret=ctx.interpret)
    b, h, ctx_len = ctx.shapes["decode_check"]
    args = decode_inputs(key, b, ctx_len, h, d["page"], lengths=[1, ctx_len // 2 + 5, ctx_len])  # ragged
    got = jax.jit(lambda *a: mla_decode(*a, V3_SCALE, num_splits=2, **kw))(*args)
    record_check(ctx, f"mla_decode bf16 ragged lengths, {b} sequences up to {ctx_len}, 2 splits",
                 rel_err(got, jax.jit(mla_decode_paged_ref, static_argnums=6)(*args, V3_SCALE)), 2e-2)
    h = ctx.shapes["decode_heads"]
    for i, (b, ctx_len) in enumerate(ctx.shapes["decode"]):
        if ctx.time_left() < 15:
            ctx.rows.append(f"| mla decode | B={b} ctx={ctx_len} | skipped (time budget) | | | | | |")
            continue
        args = decode_inputs(jax.random.fold_in(key, 200 + i), b, ctx_len, h, d["page"])
        flops = 2 * b * h * ctx_len * (d["c"] + d["r"] + d["c"])
        nbytes = b * ctx_len * (d["c"] + d["r"]) * 2
        shape = f"B={b} ctx={ctx_len} H={h}"
        for cfg in ctx.sweep("decode", i == 0):
            pallas = jax.jit(lambda *a, cfg=cfg: mla_decode(*a, V3_SCALE, **kw, **cfg))
            row(ctx, "mla decode", shape, label("pallas paged", cfg), timed(ctx, pallas, *args), flops, nbytes)
        if b * ctx_len <= 4 * 65536 or ctx.smoke:  # the gather copies the cache; keep the baseline affordable
            xla = jax.jit(mla_decode_paged_ref, static_argnums=6)
            row(ctx, "mla decode", shape, "xla gather+einsum", timed(ctx, xla, *args, V3_SCALE), flops, nbytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes in interpret mode (CPU); prints only")
    parser.add_argument("--kernels", default="fp8,flash,decode", help="comma-separated subset")
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/performance.md")
    opts = parser.parse_args()
    platform = jax.default_backend()
    if platform not in ("gpu", "tpu") and not opts.smoke:
        sys.exit(f"backend '{platform}' has no Pallas compiler; run on a GPU or TPU, or pass --smoke")
    kind = jax.devices()[0].device_kind
    peaks = next((p for name, p in PEAKS if name in kind), None)
    ctx = Ctx(smoke=opts.smoke, interpret=opts.smoke, flavour=default_flavour(platform),
              iters=1 if opts.smoke else 20, peaks=peaks, shapes=SHAPES["smoke" if opts.smoke else "real"])
    print(f"device: {kind} ({platform}, {default_flavour(platform)} kernels"
          f"{', interpret mode' if ctx.interpret else ''}); peaks bf16/fp8 TFLOP/s, GB/s: {peaks}", flush=True)
    header = ["| kernel | shape | impl | ms | TFLOP/s | % peak FLOP/s | GB/s | % HBM |",
              "|---|---|---|---|---|---|---|---|"]
    print("\n".join(header))
    key = jax.random.key(int(time.time()))
    benches = {"fp8": bench_fp8, "flash": bench_flash, "decode": bench_decode}
    for name in opts.kernels.split(","):
        benches[name](ctx, jax.random.fold_in(key, len(name)))
    total = time.perf_counter() - ctx.start
    lines = [f"- device: {kind}; peaks used (bf16 TFLOP/s, fp8 TFLOP/s, HBM GB/s): {peaks}",
             "- % peak FLOP/s is against the FP8 peak for FP8 rows (bf16 peak where the chip has no FP8 units), "
             "else bf16; GB/s counts operand + output bytes (GEMM) or cache bytes read (decode)",
             *ctx.checks, f"- total runtime {total:.0f} s", "", *header, *ctx.rows]
    if ctx.smoke or opts.no_write:
        print(f"total runtime {total:.0f} s")
    else:
        append_section(f"Pallas kernels on {kind}", lines)
    if any("FAIL" in c for c in ctx.checks):
        sys.exit("a kernel disagrees with its reference (see the checks above)")


if __name__ == "__main__":
    main()
