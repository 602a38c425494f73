"""MTP speculative decoding on a trained small model: acceptance of the MTP drafts, tokens per main-model
forward, and generation tokens/s with and without drafting, greedy and sampled, on held-out text.
Appends a section to docs/performance.md.

    python benchmarks/speculative.py [--checkpoint workdirs/v3_small] [--prompts 8] [--prompt-len 64]
                                     [--new-tokens 64] [--no-write] [--smoke]

Prompts are the first held-out documents of the run's own data split (eva_jax.data.sources.split, the files
its held-out loss is measured on), tokenized as training saw them (BOS + text) and cut to --prompt-len.
`--smoke` checks the script end to end on a random v3_tiny (UTF-8 bytes as token ids), writing nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.report import append_section  # noqa: E402

# DeepSeek-V3 report §5.4.3: the 2nd-token acceptance rate of MTP drafts and the resulting decode speed-up.
PAPER = "DeepSeek-V3 (671B, 1 MTP depth) reports 85–90% acceptance of the 2nd token and 1.8× tokens/s"


def heldout_prompts(cfg, encode: Callable[[str], list[int]], count: int, length: int) -> list[list[int]]:
    """The first `count` held-out documents with at least `length` tokens, each cut to its first `length`."""
    from eva_jax.data import sources

    docs = sources.open_source(cfg.data.source, cfg.data.text_field)
    _, held = sources.split(docs, cfg.data.heldout_fraction)
    prompts = []
    for i in held:
        tokens = encode(docs[i])
        if len(tokens) >= length:
            prompts.append(tokens[:length])
        if len(prompts) == count:
            return prompts
    raise SystemExit(f"only {len(prompts)} of {len(held)} held-out documents have {length} tokens; "
                     f"ask for fewer --prompts or a shorter --prompt-len")


def load_trained(workdir: Path):
    """(Config, params, encode, one-line description) of a training workdir's newest checkpoint."""
    from eva_jax.checkpoints.workdir import newest_step
    from eva_jax.infer.loading import load_checkpoint

    cfg, params, tokenizer = load_checkpoint(workdir)
    if tokenizer is None:
        raise SystemExit(f"{workdir} has no saved tokenizer, so held-out text cannot be encoded")
    manager, step = newest_step(workdir)
    manager.close()
    return cfg, params, lambda text: tokenizer.encode(text, bos=True), describe(cfg, step, workdir)


def describe(cfg, step: int, workdir: Path) -> str:
    """Config, steps trained and the latest held-out loss the run logged (metrics.jsonl)."""
    heldout = None
    metrics = workdir / "metrics.jsonl"
    if metrics.exists():
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        heldout = next((r for r in reversed(records) if "heldout_loss" in r and r["step"] <= step), None)
    loss = (f"held-out loss {heldout['heldout_loss']:.3f} (step {heldout['step']})" if heldout
            else "no held-out loss logged")
    m = cfg.model
    return (f"model: {cfg.name} ({m.num_layers} layers, {m.n_routed_experts} experts, {m.num_mtp_layers} MTP "
            f"depth, {m.dtype}) from `{workdir}`, {step} steps trained, {loss}")


def load_random():
    """--smoke: a random v3_tiny with one MTP depth; its 256-id vocabulary takes UTF-8 bytes as tokens."""
    import eva_jax

    cfg = eva_jax.load_config("v3_tiny", **{"model.num_mtp_layers": 1})
    params = eva_jax.init_params(cfg, seed=0)
    return cfg, params, lambda text: list(text.encode()), "model: random v3_tiny (smoke run)"


def measure(cfg, params, prompts: list[list[int]], new_tokens: int, sampling, speculative: bool) -> dict:
    """One warm-up generation (compiles every step shape), then a timed one with fresh engine statistics.
    Built like eva_jax.generate (same EngineConfig), but on the Engine directly for its stats(); no stop
    tokens, so every row makes exactly `new_tokens` and both ways do the same work."""
    from eva_jax.infer.batching import Engine
    from eva_jax.infer.requests import EngineConfig, bucket

    config = EngineConfig(max_batch=bucket(len(prompts)), speculative=speculative,
                          max_seq_len=max(map(len, prompts)) + new_tokens)

    def run() -> tuple[float, list[list[int]], dict]:
        engine = Engine(cfg, params, config)
        requests = [engine.submit(p, new_tokens, sampling, (), stream=i) for i, p in enumerate(prompts)]
        start = time.perf_counter()
        engine.run()
        return time.perf_counter() - start, [r.output for r in requests], engine.stats()

    run()
    seconds, outputs, stats = run()
    return {"tps": sum(map(len, outputs)) / seconds, "outputs": outputs,
            "acceptance": stats.get("acceptance_rate"), "per_forward": stats.get("tokens_per_main_step", 1.0)}


def agreement(plain: list[list[int]], spec: list[list[int]]) -> str:
    """A sentence on whether greedy speculative decoding reproduced plain greedy decoding token for token."""
    diverged = [(i, next(j for j, (a, b) in enumerate(zip(p, s)) if a != b))
                for i, (p, s) in enumerate(zip(plain, spec)) if p != s]
    if not diverged:
        return f"greedy outputs token-identical with and without drafting: yes (all {len(plain)} prompts)"
    where = ", ".join(f"prompt {i} at token {j}" for i, j in diverged)
    return (f"greedy outputs token-identical with and without drafting: NO — {len(diverged)} of {len(plain)} "
            f"prompts differ ({where})")


def row(name: str, plain: dict, spec: dict) -> str:
    return (f"| {name} | {plain['tps']:.1f} | {spec['tps']:.1f} | {spec['tps'] / plain['tps']:.2f}× | "
            f"{spec['acceptance']:.1%} | {spec['per_forward']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None, help="training workdir (default workdirs/v3_small)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--no-write", action="store_true", help="print, do not append to docs/performance.md")
    parser.add_argument("--smoke", action="store_true", help="random v3_tiny, 2 prompts × 8 tokens, no write")
    args = parser.parse_args()
    if args.smoke:
        args.prompts, args.prompt_len, args.new_tokens, args.no_write = 2, 16, 8, True

    load_before = os.getloadavg()[0]
    from eva_jax.infer.loading import DEFAULT_WORKDIR
    from eva_jax.infer.sampling import SamplingParams

    workdir = args.checkpoint or ROOT / DEFAULT_WORKDIR
    cfg, params, encode, model_line = load_random() if args.smoke else load_trained(workdir)
    if cfg.model.num_mtp_layers == 0:
        raise SystemExit(f"{cfg.name} has no MTP modules (model.num_mtp_layers=0): nothing drafts")
    prompts = heldout_prompts(cfg, encode, args.prompts, args.prompt_len)
    n = args.new_tokens

    greedy, sampled = SamplingParams(), SamplingParams(temperature=1.0, top_p=0.95, seed=0)
    g_plain, g_spec = [measure(cfg, params, prompts, n, greedy, speculative) for speculative in (False, True)]
    s_plain, s_spec = [measure(cfg, params, prompts, n, sampled, speculative) for speculative in (False, True)]

    lines = [
        f"- {model_line}.",
        f"- {len(prompts)} prompts: the first held-out documents ({cfg.data.source}, split by file) with ≥ "
        f"{args.prompt_len} tokens, cut to {args.prompt_len}; {n} new tokens each, no early stop, batched together.",
        "",
        "| decoding | plain tokens/s | speculative tokens/s | speed-up | MTP draft acceptance | "
        "tokens per main forward |",
        "|---|---|---|---|---|---|",
        row("greedy", g_plain, g_spec),
        row("sampled, T=1.0, top-p 0.95", s_plain, s_spec),
        "",
        f"- {agreement(g_plain['outputs'], g_spec['outputs'])}.",
        f"- tokens/s = new tokens / wall time of one whole generation (prefill included), second of two runs. "
        f"Tokens per main forward counts decode steps (the prefill's first token excluded); acceptance = accepted "
        f"/ drafted MTP tokens. For context: {PAPER}.",
        f"- load average before/after: {load_before:.1f} / {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
    ]
    if args.no_write:
        print("\n".join(lines))
    else:
        append_section(f"MTP speculative decoding on a trained {cfg.name}", lines)


if __name__ == "__main__":
    main()
