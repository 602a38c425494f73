"""`python -m eva_jax.eval --checkpoint=DIR --tasks=perplexity,gsm8k,humaneval,mmlu`: benchmark a checkpoint.

DIR is a training workdir (its newest complete checkpoint) or a Hugging Face checkpoint directory; without
--checkpoint the default training run is evaluated. Writes the results as JSON (--out) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from eva_jax.eval.context import EvalContext
from eva_jax.eval.errors import EvalError
from eva_jax.eval.multiple_choice import CHOICE_MODES
from eva_jax.eval.tasks import TASKS, resolve
from eva_jax.infer.loading import CheckpointNotFound, default_checkpoint, load_checkpoint


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eva_jax.eval", description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    p.add_argument("--checkpoint", default=None, help="training workdir or Hugging Face checkpoint directory "
                                                      "(default: the default training run)")
    p.add_argument("--tasks", default="perplexity", help=f"comma-separated, of: {', '.join(TASKS)}")
    p.add_argument("--limit", type=int, default=None, help="examples per task (per subject for mmlu; documents for "
                                                           "perplexity; problems for humaneval)")
    p.add_argument("--shots", type=int, default=None, help="few-shot examples (default: gsm8k 8, mmlu 5)")
    p.add_argument("--batch", type=int, default=8, help="rows per forward / requests decoded together")
    p.add_argument("--out", default="results.json", help="where the results JSON goes")
    p.add_argument("--max-length", type=int, default=None, help="tokens per forward (default: the model's window)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", help="parameter dtype of a Hugging Face checkpoint")
    p.add_argument("--log-samples", action="store_true", help="keep every example's output in the results JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    data = p.add_argument_group("data")
    data.add_argument("--perplexity-data", default=None, help="text file, directory, glob, .jsonl (field text) or "
                                                              ".parquet (default: the stdlib held-out files)")
    data.add_argument("--gsm8k", default=None, help="directory with train.jsonl and test.jsonl, or a test .jsonl")
    data.add_argument("--mmlu", default=None, help="directory in MMLU's layout: dev/ and test/<subject>_*.csv")
    tasks = p.add_argument_group("task settings")
    tasks.add_argument("--stride", type=int, default=None, help="perplexity: targets per rolling window after the "
                                                                "first (default: half the window)")
    tasks.add_argument("--max-tokens", type=int, default=None, help="gsm8k/humaneval: new tokens per answer")
    tasks.add_argument("--mmlu-choices", choices=CHOICE_MODES, default=None,
                       help="mmlu: score the letters (default) or the choice texts")
    tasks.add_argument("--samples", default=None, help="humaneval: score completions from this JSONL "
                                                       "(task_id, completion) instead of generating them")
    tasks.add_argument("--n-samples", type=int, default=None, help="humaneval: completions per problem")
    tasks.add_argument("--temperature", type=float, default=None, help="humaneval: sampling temperature")
    tasks.add_argument("--workers", type=int, default=None, help="humaneval: sandboxed programs run at once")
    tasks.add_argument("--timeout", type=float, default=None, help="humaneval: seconds per program")
    return p


def table(results: dict[str, dict[str, Any]]) -> str:
    rows = [(task, name, f"{value:.6g}" if isinstance(value, float) else str(value))
            for task, out in results.items() for name, value in out.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)]
    widths = [max(len(r[i]) for r in [("task", "metric", "value"), *rows]) for i in range(3)]
    lines = [("task", "metric", "value"), *rows]
    return "\n".join(f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in lines)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        chosen = resolve(args.tasks)
        if args.batch < 1:
            raise EvalError(f"--batch={args.batch} must be at least 1")
        if args.limit is not None and args.limit < 1:
            raise EvalError(f"--limit={args.limit} must be at least 1")
        for flag, path in (("--gsm8k", args.gsm8k), ("--mmlu", args.mmlu)):
            if path is not None and not Path(path).exists():
                raise EvalError(f"{flag}={path}: no such file or directory")
        path = args.checkpoint or default_checkpoint()
        cfg, params, tokenizer = load_checkpoint(path, dtype=args.dtype)
        if tokenizer is None:
            raise EvalError(f"{path} has no tokenizer (tokenizer.json), so text cannot be encoded")
        ctx = EvalContext(cfg, params, tokenizer, batch=args.batch, limit=args.limit, shots=args.shots,
                          max_length=args.max_length, seed=args.seed, log_samples=args.log_samples,
                          show_progress=not args.no_progress,
                          data={"perplexity": args.perplexity_data, "gsm8k": args.gsm8k, "mmlu": args.mmlu},
                          options={"stride": args.stride, "max_tokens": args.max_tokens,
                                   "mmlu_choices": args.mmlu_choices, "samples": args.samples,
                                   "n_samples": args.n_samples, "temperature": args.temperature,
                                   "workers": args.workers, "timeout": args.timeout})
        for task in chosen:  # every task's data is found before any task runs
            if task.check is not None:
                task.check(ctx)
        results, seconds = {}, {}
        record = {"checkpoint": str(path), "model": cfg.name, "tasks": [t.name for t in chosen],
                  "settings": {"limit": args.limit, "shots": args.shots, "batch": args.batch,
                               "max_length": ctx.scorer.window, "seed": args.seed, "dtype": args.dtype},
                  "results": results, "seconds": seconds}
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        for task in chosen:
            start = time.monotonic()
            results[task.name] = task.run(ctx)
            seconds[task.name] = round(time.monotonic() - start, 3)
            out.write_text(json.dumps(record, indent=2) + "\n")  # after each task: a later failure keeps these
    except (CheckpointNotFound, ValueError, OSError) as err:  # EvalError, ConfigError, DataError are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(table(results))
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
