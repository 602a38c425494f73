"""Multiple choice in MMLU's format, scored by log-likelihood.

Data: MMLU's standard layout, read from a local directory: `dev/<subject>_dev.csv` (the shots) and
`test/<subject>_test.csv`, rows `question,A,B,C,D,answer` without a header (answer is a letter A-D).

The prompt is MMLU's (Hendrycks et al.): "The following are multiple choice questions (with answers) about
<subject>.\n\n", k dev shots "<question>\nA. …\nB. …\nC. …\nD. …\nAnswer: <letter>\n\n", then the question
ending in "Answer:". Each choice is a continuation of that prompt, scored by its log-likelihood:
- choices="letter" (default, the standard MMLU metric): the continuations " A" … " D";
- choices="text": the continuations " <choice text>" (lm-evaluation-harness's `mmlu_continuation` style).
acc picks the most likely continuation; acc_norm the most likely per character of the choice (as
lm-evaluation-harness normalises; the same as acc for letters, which are all one character long).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from eva_jax.data.tokenizer import Tokenizer
from eva_jax.eval.context import EvalContext
from eva_jax.eval.errors import EvalError
from eva_jax.eval.loglik import Scorer, encode_pair

LETTERS = ("A", "B", "C", "D")
DEFAULT_SHOTS = 5
CHOICE_MODES = ("letter", "text")


class Question(NamedTuple):
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # index into LETTERS


def read_csv(path: Path) -> list[Question]:
    rows = []
    with path.open(encoding="utf-8", newline="") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            if len(row) != 6 or row[5].strip() not in LETTERS:
                raise EvalError(f"{path}:{number} is not an MMLU row (question,A,B,C,D,answer with answer one of "
                                f"A-D): {row[:1]!r}…")
            rows.append(Question(row[0], tuple(row[1:5]), LETTERS.index(row[5].strip())))
    return rows


def subjects(root: str | Path) -> list[str]:
    """The subjects with a test file, in name order."""
    test = Path(root) / "test"
    if not Path(root).is_dir():
        raise EvalError(f"--mmlu={root}: no such directory (MMLU's layout: dev/<subject>_dev.csv and "
                        f"test/<subject>_test.csv)")
    found = sorted(p.name[: -len("_test.csv")] for p in test.glob("*_test.csv")) if test.is_dir() else []
    if not found:
        raise EvalError(f"--mmlu={root}: no test/<subject>_test.csv files there (MMLU's layout)")
    return found


def header(subject: str) -> str:
    return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"


def format_question(q: Question) -> str:
    lines = [q.question.strip(), *(f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices))]
    return "\n".join(lines) + "\nAnswer:"


def prompt(subject: str, shots: list[Question], q: Question) -> str:
    return header(subject) + "".join(f"{format_question(s)} {LETTERS[s.answer]}\n\n" for s in shots) + \
        format_question(q)


def continuations(q: Question, mode: str) -> list[str]:
    return [f" {letter}" for letter in LETTERS] if mode == "letter" else [f" {c}" for c in q.choices]


def score(scorer: Scorer, tokenizer: Tokenizer, items: list[tuple[str, Question]], mode: str = "letter",
          progress: Any = None) -> list[dict[str, Any]]:
    """For each (prompt, question): the choices' log-likelihoods, the picks by acc and acc_norm, correctness."""
    if mode not in CHOICE_MODES:
        raise EvalError(f"choices={mode!r}: expected one of {CHOICE_MODES}")
    requests, conts = [], []
    for text, q in items:
        c = continuations(q, mode)
        conts.append(c)
        requests += [encode_pair(tokenizer, text, cont) for cont in c]
    lls = [ll for ll, _ in scorer.loglikelihood(requests, progress=progress)]
    out = []
    for i, ((_, q), c) in enumerate(zip(items, conts)):
        ll = np.asarray(lls[4 * i: 4 * i + 4])
        chars = np.array([max(len(s.strip()), 1) for s in c])
        pick, pick_norm = int(np.argmax(ll)), int(np.argmax(ll / chars))
        out.append({"loglikelihoods": ll.tolist(), "pick": pick, "pick_norm": pick_norm, "answer": q.answer,
                    "acc": pick == q.answer, "acc_norm": pick_norm == q.answer})
    return out


def data(ctx: EvalContext) -> tuple[str, int, list[tuple[str, Question]], list[str]]:
    """(root, k, (prompt, question) items, each item's subject), or the EvalError that says what is missing."""
    root = ctx.data.get("mmlu")
    if root is None:
        raise EvalError("mmlu needs its data: --mmlu=DIR in MMLU's layout (dev/<subject>_dev.csv, "
                        "test/<subject>_test.csv; rows question,A,B,C,D,answer)")
    k = DEFAULT_SHOTS if ctx.shots is None else ctx.shots
    items, owner = [], []
    for subject in subjects(root):
        test = read_csv(Path(root) / "test" / f"{subject}_test.csv")[: ctx.limit]
        dev_path = Path(root) / "dev" / f"{subject}_dev.csv"
        dev = read_csv(dev_path) if dev_path.is_file() else []
        if len(dev) < k:
            raise EvalError(f"mmlu: {k} shots asked for, but {dev_path} has {len(dev)} rows (--shots 0 uses none)")
        items += [(prompt(subject, dev[:k], q), q) for q in test]
        owner += [subject] * len(test)
    return root, k, items, owner


def check(ctx: EvalContext) -> None:
    data(ctx)


def run(ctx: EvalContext) -> dict[str, Any]:
    root, k, items, owner = data(ctx)
    mode = ctx.option("mmlu_choices", "letter")
    with ctx.progress(4 * len(items), "mmlu") as bar:
        results = score(ctx.scorer, ctx.tokenizer, items, mode, progress=bar.update)
    per_subject: dict[str, dict[str, Any]] = {}
    for subject, r in zip(owner, results):
        s = per_subject.setdefault(subject, {"acc": 0.0, "acc_norm": 0.0, "n": 0})
        s["acc"], s["acc_norm"], s["n"] = s["acc"] + r["acc"], s["acc_norm"] + r["acc_norm"], s["n"] + 1
    for s in per_subject.values():
        s["acc"], s["acc_norm"] = s["acc"] / s["n"], s["acc_norm"] / s["n"]
    n = max(len(results), 1)
    out = {"acc": sum(r["acc"] for r in results) / n, "acc_norm": sum(r["acc_norm"] for r in results) / n,
           "n": len(results), "shots": k, "choices": mode, "subjects": per_subject, "source": str(root)}
    if ctx.log_samples:
        out["samples"] = [{"subject": s, **r} for s, r in zip(owner, results)]
    return out
