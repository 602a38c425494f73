"""Generation speed on the benchmark shape (../shared/bench_shape.json, random weights) next to transformers'
DeepseekV3ForCausalLM (torch CPU, 2 threads, sdpa attention) with the same weights, in one run:
decode ms/token at batch 1, decode tokens/s at batch 32, prefill tokens/s, and the weights-read floor
(bytes a batch-1 decode step must read / measured read bandwidth). Appends a section to docs/performance.md.

    python benchmarks/decode.py [--new-tokens 128] [--prompt-len 512] [--peer-batch-tokens 16]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.report import append_section  # noqa: E402

SHAPE = ROOT.parent / "shared" / "bench_shape.json"


def read_bandwidth(mib: int = 1024) -> float:
    """Bytes per second the cores read from memory: a 1 GiB float32 array (far beyond every cache) summed by
    one thread per core over its own slice (numpy's reduction releases the GIL), best of 5. Decode reads its
    weights once per step and writes almost nothing, so reading, not copying, is its physics."""
    import concurrent.futures

    data = np.ones(mib * 2**20 // 4, np.float32)
    parts = np.array_split(data, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(len(parts)) as pool:
        def read_all() -> None:
            list(pool.map(np.sum, parts))

        read_all()
        best = min(_timed(read_all) for _ in range(5))
    return data.nbytes / best


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def read_bytes_per_token(cfg, context: int) -> tuple[int, int]:
    """(weight bytes, latent-cache bytes) one batch-1 decode step reads: every weight except the embedding
    (one row) and the routed experts (K of E per MoE layer), plus the cache over `context` positions."""
    import jax

    from eva_jax.api import abstract_params
    from eva_jax.infer.cache import latent_width

    mc, weights = cfg.model, 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params(cfg))[0]:
        name = jax.tree_util.keystr(path)
        if name.startswith("['mtp_"):
            continue
        size = leaf.size * leaf.dtype.itemsize
        if name == "['embed']":
            size = mc.hidden_size * leaf.dtype.itemsize
        elif "experts_" in name:
            size = size * mc.num_experts_per_tok // mc.n_routed_experts
        weights += size
    cache = mc.num_layers * context * latent_width(mc) * np.dtype(cfg.compute.dtype).itemsize
    return weights, cache


def hf_model(shape: dict, directory: Path):
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    torch.manual_seed(0)
    kwargs = {k: v for k, v in shape.items() if k != "rope_theta"}
    config = DeepseekV3Config(**kwargs, rope_parameters={"rope_type": "default", "rope_theta": shape["rope_theta"]},
                              attn_implementation="sdpa")
    model = DeepseekV3ForCausalLM(config).eval()
    model.save_pretrained(directory)
    return model


def eva_run(cfg, params, prompts: list[list[int]], new_tokens: int) -> tuple[float, float, list[list[int]]]:
    """(prefill seconds, decode seconds per step, outputs), compiled steps warmed up first."""
    from eva_jax.infer.batching import Engine, EngineConfig

    config = EngineConfig(max_batch=len(prompts), max_seq_len=len(prompts[0]) + new_tokens + 1)

    def run(n):
        engine = Engine(cfg, params, config)
        requests = [engine.submit(p, n) for p in prompts]
        seconds = _timed(engine.run)
        return seconds, [r.output for r in requests]

    run(3)  # compiles the prefill and the decode step
    prefill = min(run(1)[0] for _ in range(2))
    total, outputs = run(new_tokens + 1)
    return prefill, (total - prefill) / new_tokens, outputs


def hf_run(model, prompts: list[list[int]], new_tokens: int) -> tuple[float, float, list[list[int]]]:
    import torch

    ids = torch.tensor(prompts)

    def run(n):
        with torch.no_grad():
            start = time.perf_counter()
            out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
            return time.perf_counter() - start, out[:, ids.shape[1]:].tolist()

    run(1)
    prefill = min(run(1)[0] for _ in range(2))
    total, outputs = run(new_tokens + 1)
    return prefill, (total - prefill) / new_tokens, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt-len", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--peer-batch-tokens", type=int, default=16, help="new tokens for the peer at batch 32")
    parser.add_argument("--no-write", action="store_true", help="print, do not append to docs/performance.md")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    load_before = os.getloadavg()[0]
    import eva_jax
    from eva_jax.infer.cache import accounting

    shape = json.loads(SHAPE.read_text())["model"]
    rng = np.random.default_rng(0)
    prompts = [[int(t) for t in rng.integers(2, shape["vocab_size"], args.prompt_len)] for _ in range(args.batch)]
    with tempfile.TemporaryDirectory() as tmp:
        model = hf_model(shape, Path(tmp))
        cfg, params = eva_jax.from_hf(tmp)
    mc = cfg.model
    n = args.new_tokens

    e1 = eva_run(cfg, params, prompts[:1], n)
    eb = eva_run(cfg, params, prompts, n)
    h1 = hf_run(model, prompts[:1], n)
    hb = hf_run(model, prompts, args.peer_batch_tokens)
    agree = e1[2][0][:32] == h1[2][0][:32]

    bandwidth = read_bandwidth()
    weights, cache = read_bytes_per_token(cfg, args.prompt_len + n // 2)
    floor = (weights + cache) / bandwidth
    b, p = args.batch, args.prompt_len
    rows = [
        ("decode ms/token, batch 1", f"{e1[1] * 1e3:.2f}", f"{h1[1] * 1e3:.1f}", h1[1] / e1[1]),
        (f"decode tokens/s, batch {b}", f"{b / eb[1]:.0f}", f"{b / hb[1]:.0f}", hb[1] / eb[1]),
        (f"prefill tokens/s, 1 × {p}", f"{p / e1[0]:.0f}", f"{p / h1[0]:.0f}", h1[0] / e1[0]),
        (f"prefill tokens/s, {b} × {p}", f"{b * p / eb[0]:.0f}", f"{b * p / hb[0]:.0f}", hb[0] / eb[0]),
    ]
    table = ["| metric | Eva (JAX, latent cache) | transformers | Eva speedup |", "|---|---|---|---|"]
    table += [f"| {name} | {ours} | {theirs} | {ratio:.1f}× |" for name, ours, theirs, ratio in rows]
    table += [
        "",
        f"- weights-read floor at batch 1: {weights / 1e6:.1f} MB of weights (fp32; K={mc.num_experts_per_tok} of "
        f"{mc.n_routed_experts} experts, one embedding row) + {cache / 1e6:.1f} MB of latent cache per token, at "
        f"{bandwidth / 1e9:.1f} GB/s measured read bandwidth (1 GiB summed by {os.cpu_count()} threads) = "
        f"{floor * 1e3:.2f} ms/token; Eva decodes at "
        f"{e1[1] / floor:.1f}× the floor.",
        f"- greedy outputs of both agree on the first 32 tokens: {'yes' if agree else 'no'}.",
        f"- load average before/after the run: {load_before:.1f} / {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores (other jobs on the machine slow both sides; ratios are steadier than times).",
        f"- the peer's batch-{b} figures come from {args.peer_batch_tokens} new tokens (its steps are slow); "
        f"Eva's from {n}. Prompts are {p} random ids; decode = (time for {n}+1 tokens − prefill time) / {n}.",
        *[f"- bench shape {line}" for line in accounting(mc, "bfloat16").lines()],
        *[f"- DeepSeek-V3 {line}" for line in accounting(eva_jax.load_config("v3_671b").model, "bfloat16").lines()],
    ]
    title = f"Decode vs transformers on the benchmark shape ({mc.num_layers} layers, {mc.n_routed_experts} experts)"
    if args.no_write:
        print("\n".join(table))
    else:
        append_section(title, table)


if __name__ == "__main__":
    main()
