"""A synthetic verifiable task for post-training demos and tests: small sums ("What is 3 + 5?" -> "8").

`prompts` gives GRPO lines ({"prompt", "answer"}); `sft_rows` gives SFT lines whose completions are right only
`correct` of the time (otherwise another number): a model fine-tuned on them puts about that much probability on
the right answer, a policy GRPO can sharpen with the `exact` reward — the effect DeepSeekMath reports (RL
lifts the probability of answers the model could already sample). Everything is seeded.
"""

from __future__ import annotations

import numpy as np


def problems(n: int, seed: int, digits: int = 1) -> list[tuple[int, int]]:
    """`n` distinct (a, b) pairs with `digits`-digit operands, in a seeded order."""
    top = 10**digits
    pairs = [(a, b) for a in range(top) for b in range(top)]
    if n > len(pairs):
        raise ValueError(f"only {len(pairs)} distinct {digits}-digit sums exist; asked for {n}")
    order = np.random.default_rng(seed).permutation(len(pairs))[:n]
    return [pairs[i] for i in order]


def question(a: int, b: int) -> str:
    return f"What is {a} + {b}?"


def prompts(pairs: list[tuple[int, int]]) -> list[dict]:
    return [{"prompt": question(a, b), "answer": str(a + b)} for a, b in pairs]


def sft_rows(pairs: list[tuple[int, int]], copies: int, correct: float, seed: int, digits: int = 1) -> list[dict]:
    """`copies` completions per pair, each the right sum with probability `correct`, else a wrong one drawn
    from the answers' range."""
    rng = np.random.default_rng(seed)
    top = 2 * 10**digits - 1
    rows = []
    for _ in range(copies):
        for a, b in pairs:
            answer = a + b
            if rng.uniform() >= correct:
                answer = int(rng.choice([x for x in range(top) if x != a + b]))
            rows.append({"prompt": question(a, b), "completion": str(answer)})
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def corpus(pairs: list[tuple[int, int]]) -> list[str]:
    """Text to train a tokenizer for the task on (every question and number it uses)."""
    return [f"{question(a, b)} {a + b}" for a, b in pairs] + [str(x) for x in range(200)]
