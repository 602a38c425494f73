"""Training throughput on ../shared/bench_shape.json: Eva's jitted train step vs Hugging Face transformers'
DeepseekV3ForCausalLM (torch CPU, 2 threads, sdpa attention), same shape, same optimizer, same machine, one run.

    python benchmarks/train_throughput.py [--steps 6]

Both train the main model (no MTP) with AdamW(lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1) on random tokens;
the first step (compilation / warm-up) is excluded. Writes a section to docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHAPE = json.loads((ROOT.parent / "shared" / "bench_shape.json").read_text())


def eva_config(dtype: str):
    import eva_jax
    from eva_jax.checkpoints.hf_config import model_config_from_hf

    hf = {**SHAPE["model"], "model_type": "deepseek_v3", "num_nextn_predict_layers": 0}
    model = model_config_from_hf(hf)
    import dataclasses

    from eva_jax.config import ComputeConfig, Config

    # No remat and a fully unrolled layer scan: the fastest settings for a 6-layer model on CPU.
    compute = ComputeConfig(dtype=dtype, remat_policy="none", scan_unroll=model.num_layers)
    train = SHAPE["train"]
    return Config(
        name="bench", model=model, compute=compute,
        optim=dataclasses.replace(eva_jax.load_config("v3_small").optim, lr_peak=1e-4, warmup_frac=0.0),
        train=dataclasses.replace(eva_jax.load_config("v3_small").train, seq_len=train["seq_len"],
                                  global_batch=train["batch"], batch_start=train["batch"],
                                  micro_batch=train["batch"], steps=100))


def time_eva(dtype: str, steps: int) -> float:
    import jax
    import jax.numpy as jnp

    import eva_jax
    from eva_jax.train import schedules
    from eva_jax.train.optim import make_optimizer
    from eva_jax.train.state import init_state
    from eva_jax.train.step import make_train_step

    cfg = eva_config(dtype)
    plan = schedules.plan(cfg)
    params = eva_jax.init_params(cfg, seed=0)
    tx = make_optimizer(cfg, plan.lr, params)
    state = init_state(params, tx)
    step = make_train_step(cfg, tx)
    b, t = SHAPE["train"]["batch"], SHAPE["train"]["seq_len"]
    rng = np.random.default_rng(0)
    times = []
    for _ in range(steps + 1):
        toks = rng.integers(0, cfg.model.vocab_size, (1, b, t + 1))
        batch = {"inputs": toks[..., :-1], "targets": toks[..., 1:], "target_mask": np.ones((1, b, t), bool)}
        start = time.perf_counter()
        state, metrics = step(state, batch, jnp.float32(0.0), jnp.float32(0.001))
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - start)
    return b * t / float(np.median(times[1:]))


def time_hf(steps: int) -> float:
    import torch
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM

    torch.set_num_threads(2)
    m = SHAPE["model"]
    config = DeepseekV3Config(**m, num_key_value_heads=m["num_attention_heads"], num_mtp_layers=0,
                              attn_implementation="sdpa")
    model = DeepseekV3ForCausalLM(config).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    b, t = SHAPE["train"]["batch"], SHAPE["train"]["seq_len"]
    times = []
    for _ in range(steps + 1):
        ids = torch.randint(0, m["vocab_size"], (b, t + 1))
        start = time.perf_counter()
        out = model(input_ids=ids[:, :-1], labels=ids[:, 1:])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return b * t / float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    from benchmarks.report import append_section
    from eva_jax.train.metrics import cpu_peak_flops, train_flops_per_token

    flops = train_flops_per_token(eva_config("float32"))
    peak = cpu_peak_flops()
    rows = [("Hugging Face transformers (torch fp32, sdpa, 2 threads)", time_hf(args.steps)),
            ("Eva (jax, fp32 compute)", time_eva("float32", args.steps)),
            ("Eva (jax, bf16 compute, fp32 master)", time_eva("bfloat16", args.steps))]
    peer = rows[0][1]
    lines = ["| implementation | tokens/s | vs peer | MFU |", "|---|---|---|---|"]
    lines += [f"| {name} | {tps:,.0f} | {tps / peer:.2f}× | {flops * tps / peak:.1%} |" for name, tps in rows]
    lines += ["", f"Batch {SHAPE['train']['batch']}×{SHAPE['train']['seq_len']} tokens, median of {args.steps} steps "
              f"after a warm-up step; MFU against a stated peak of {peak / 1e9:.0f} GFLOP/s (cores × clock × 32 "
              f"fp32 FLOP/cycle) with {flops / 1e6:.0f} MFLOP/token (6·activated + attention)."]
    append_section("Train step throughput vs transformers (bench_shape.json)", lines)


if __name__ == "__main__":
    main()
