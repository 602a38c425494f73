"""Two source trees of Eva, measured alternately in one run: the train step (tokens/s) and generation
(batch-1 decode ms/token, batch-32 decode tokens/s, prefill tokens/s) on ../shared/bench_shape.json. For a
refactor that must be no slower: the trees take turns, each in a fresh process, so machine load falls on both.

    git worktree add /tmp/before <commit>
    python benchmarks/revisions.py --before /tmp/before [--after .] [--rounds 2]

Each tree is measured with its own benchmarks/train_throughput.py and benchmarks/decode.py functions; the
best of the rounds is kept. Appends a section to docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.report import append_section  # noqa: E402

PROBE = r"""
import json, sys
import numpy as np
tree = sys.argv[1]
sys.path.insert(0, tree)
from benchmarks.train_throughput import eva_config, time_eva
from benchmarks.decode import eva_run
import eva_jax
out = {"train_bf16": time_eva("bfloat16", 5)}
cfg = eva_config("float32")
params = eva_jax.init_params(cfg, seed=0)
rng = np.random.default_rng(0)
prompts = [[int(t) for t in rng.integers(2, cfg.model.vocab_size, 512)] for _ in range(32)]
engine_cfg = cfg if hasattr(cfg, "compute") else cfg.model  # trees before the config split took a ModelConfig
p1, d1, _ = eva_run(engine_cfg, params, prompts[:1], 64)
pb, db, _ = eva_run(engine_cfg, params, prompts, 32)
out.update(decode_ms=d1 * 1e3, batch_tokens_s=32 / db, prefill_tokens_s=512 / p1)
print("RESULT " + json.dumps(out))
"""

METRICS = (("train_bf16", "train step tokens/s (bf16 compute)", max),
           ("decode_ms", "decode ms/token, batch 1 (fp32)", min),
           ("batch_tokens_s", "decode tokens/s, batch 32 (fp32)", max),
           ("prefill_tokens_s", "prefill tokens/s, 1 × 512 (fp32)", max))


def measure(tree: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(tree)], env=env, capture_output=True, text=True,
                          check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"measuring {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="source tree before the change")
    parser.add_argument("--after", type=Path, default=ROOT, help="source tree after the change (default: this)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--label", default="", help="what changed, for the section title")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(args.rounds):
        for name in ("before", "after"):
            runs[name].append(measure(getattr(args, name).resolve()))
    best = {name: {key: pick(r[key] for r in rs) for key, _, pick in METRICS} for name, rs in runs.items()}
    lines = ["| metric | before | after | after / before |", "|---|---|---|---|"]
    for key, title, _ in METRICS:
        b, a = best["before"][key], best["after"][key]
        lines.append(f"| {title} | {b:,.2f} | {a:,.2f} | {a / b:.3f} |")
    lines += ["", f"Best of {args.rounds} alternating rounds per tree, each a fresh process; before = "
              f"`{args.before}`, after = `{args.after}`. Decode: 64 new tokens after a 512-token prompt (batch 1), "
              f"32 new tokens (batch 32). For ms/token lower is better; for the rest higher is."]
    append_section(f"Before / after{': ' + args.label if args.label else ''}", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
