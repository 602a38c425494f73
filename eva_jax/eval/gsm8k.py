"""GSM8K (grade-school math): n-shot prompts from the train split, greedy generation through the engine, the
answer extracted two ways and compared exactly.

Prompts follow lm-evaluation-harness's `gsm8k` task: "Question: …\nAnswer: <full worked answer>" shots joined
by blank lines, then "Question: …\nAnswer:". The shots are one seeded sample of the train split, the same for
every question. Generation stops at "Question:" or a blank line (GSM8K's answers contain neither).
- strict: the number after "#### " (the format the shots teach);
- flexible: the last number in the completion.
Both sides are normalised by removing commas, "$" and a trailing period before the exact comparison.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from eva_jax.data import jsonl
from eva_jax.data.answers import flexible_answer, normalize, strict_answer
from eva_jax.eval.context import EvalContext
from eva_jax.eval.errors import EvalError
from eva_jax.eval.generation import generate_until

DEFAULT_SHOTS = 8
DEFAULT_MAX_TOKENS = 256
STOP = ("Question:", "\n\n")
SHOT_SEED = 1234
def target(answer: str) -> str:
    """The reference number of a GSM8K answer: what follows its "#### "."""
    if "####" not in answer:
        raise EvalError(f"a GSM8K answer has no '#### N' line: {answer[-80:]!r}")
    return normalize(answer.split("####")[-1])


def read_jsonl(path: Path) -> list[dict[str, str]]:
    return jsonl.read_jsonl(path, EvalError, ("question", "answer"), " (GSM8K's format)")


def load(spec: str | Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train rows, test rows) from a directory holding train.jsonl and test.jsonl, or from a test file (shots
    then come from the train.jsonl beside it)."""
    path = Path(spec)
    if path.is_dir():
        test, train = path / "test.jsonl", path / "train.jsonl"
    elif path.is_file():
        test, train = path, path.parent / "train.jsonl"
    else:
        raise EvalError(f"--gsm8k={spec}: no such file or directory (give a directory with train.jsonl and "
                        f"test.jsonl, or a test .jsonl file)")
    if not test.is_file():
        raise EvalError(f"--gsm8k={spec}: {test} does not exist")
    return (read_jsonl(train) if train.is_file() and train != test else []), read_jsonl(test)


def shots(train: list[dict[str, str]], k: int, seed: int = SHOT_SEED) -> list[dict[str, str]]:
    if k > len(train):
        raise EvalError(f"gsm8k: {k} shots asked for, but the train split has {len(train)} examples "
                        f"(put train.jsonl beside the test file, or pass --shots 0)")
    return random.Random(seed).sample(train, k)


def prompt(examples: list[dict[str, str]], question: str) -> str:
    context = "".join(f"Question: {e['question']}\nAnswer: {e['answer']}\n\n" for e in examples)
    return f"{context}Question: {question}\nAnswer:"


def score(completions: list[str], answers: list[str]) -> dict[str, Any]:
    """Exact-match rates of both extractions, and each example's details."""
    samples = []
    for completion, answer in zip(completions, answers):
        gold, strict, flexible = target(answer), strict_answer(completion), flexible_answer(completion)
        samples.append({"target": gold, "completion": completion, "strict": strict, "flexible": flexible,
                        "strict_match": strict == gold, "flexible_match": flexible == gold})
    n = max(len(samples), 1)
    return {"exact_match_strict": sum(s["strict_match"] for s in samples) / n,
            "exact_match_flexible": sum(s["flexible_match"] for s in samples) / n, "n": len(samples),
            "samples": samples}


def default_data() -> Path | None:
    """The project's copy of GSM8K, when this checkout sits next to it (../shared/data/gsm8k)."""
    candidate = Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k"
    return candidate if candidate.is_dir() else None


def data(ctx: EvalContext) -> tuple[str | Path, list[dict[str, str]], list[dict[str, str]], int]:
    """(where the data is, the shots, the test rows, k), or the EvalError that says what is missing."""
    spec = ctx.data.get("gsm8k") or default_data()
    if spec is None:
        raise EvalError("gsm8k needs its data: --gsm8k=DIR with train.jsonl and test.jsonl (openai/grade-school-math "
                        "format: one {\"question\", \"answer\"} object per line)")
    train, test = load(spec)
    test = test[: ctx.limit] if ctx.limit is not None else test
    k = DEFAULT_SHOTS if ctx.shots is None else ctx.shots
    return spec, shots(train, k, ctx.option("shot_seed", SHOT_SEED)), test, k


def check(ctx: EvalContext) -> None:
    data(ctx)


def run(ctx: EvalContext) -> dict[str, Any]:
    spec, examples, test, k = data(ctx)
    prompts = ctx.tokenizer.encode_batch([prompt(examples, row["question"]) for row in test])
    with ctx.progress(len(prompts), "gsm8k") as bar:
        completions = generate_until(ctx.cfg, ctx.params, ctx.tokenizer, prompts,
                                     ctx.option("max_tokens", DEFAULT_MAX_TOKENS), STOP, batch=ctx.batch,
                                     max_length=ctx.max_length, progress=bar.update)
    out = score(completions, [row["answer"] for row in test])
    if ctx.log_samples:
        for s, row in zip(out["samples"], test):
            s["question"] = row["question"]
    else:
        del out["samples"]
    return {**out, "shots": k, "source": str(spec)}
