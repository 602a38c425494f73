"""The default training run's first ten minutes on this machine: held-out loss at the start and at the
10-minute mark, tokens seen, and the loss-curve PNG in docs/. Run the default command first, e.g.

    rm -rf workdirs/v3_small && timeout --signal=INT 630 python -m eva_jax.train --set train.eval_every=5
    python benchmarks/ten_minute_run.py [--workdir workdirs/v3_small] [--minutes 10]

(`elapsed_s` in metrics.jsonl counts from the start of `run`, tokenizer training and compilation included.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def summary(records: list[dict], minutes: float) -> list[str]:
    within = [r for r in records if r["elapsed_s"] <= minutes * 60]
    if not within:
        raise SystemExit(f"no step finished within {minutes} minutes")
    evals = [r for r in within if "heldout_loss" in r]
    first, last = records[0], within[-1]
    last_eval = evals[-1] if evals else None
    lines = ["| | step | elapsed | tokens seen | train loss | held-out loss |", "|---|---|---|---|---|---|"]
    lines.append(f"| first step | {first['step']} | {first['elapsed_s']:.0f} s | {first['tokens']:,} | "
                 f"{first['loss']:.3f} | {evals[0]['heldout_loss']:.3f} (step {evals[0]['step']}) |" if evals else
                 f"| first step | {first['step']} | {first['elapsed_s']:.0f} s | {first['tokens']:,} | "
                 f"{first['loss']:.3f} | – |")
    if last_eval:
        lines.append(f"| last held-out within {minutes:g} min | {last_eval['step']} | {last_eval['elapsed_s']:.0f} s | "
                     f"{last_eval['tokens']:,} | {last_eval['loss']:.3f} | {last_eval['heldout_loss']:.3f} |")
    lines.append(f"| at {minutes:g} min | {last['step']} | {last['elapsed_s']:.0f} s | {last['tokens']:,} | "
                 f"{last['loss']:.3f} | – |")
    rates = sorted(r["tokens_per_s"] for r in within[1:]) or [first["tokens_per_s"]]
    lines += ["", f"Median train speed {rates[len(rates) // 2]:,.0f} tokens/s after the first (compiling) step."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default=str(ROOT / "workdirs" / "v3_small"))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--png", default=str(ROOT / "docs" / "v3_small_loss_curves.png"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    from benchmarks.report import append_section
    from eva_jax.train import plot

    lines = summary(records, args.minutes)
    png = plot.render(workdir, Path(args.png).resolve())
    rel = lambda path: os.path.relpath(path, ROOT)  # noqa: E731
    lines += [f"Curves: `{rel(png)}` (`python -m eva_jax.train.plot {rel(workdir)} --out {rel(png)}`)."]
    append_section(f"Default training run (v3_small, stdlib corpus): the first {args.minutes:g} minutes", lines)


if __name__ == "__main__":
    main()
