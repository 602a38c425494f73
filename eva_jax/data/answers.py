"""Final answers of free-form completions, GSM8K's convention: the number after "#### " if there is one, else the
last number, else the stripped text; commas, "$" and a trailing period removed before comparing. Shared by the
evaluation harness (eva_jax/eval/gsm8k.py) and the GRPO rewards (eva_jax/post/rewards.py)."""

from __future__ import annotations

import re

NUMBER = r"-?\$?-?\d[\d,]*(?:\.\d+)?"
STRICT = re.compile(r"#### *(" + NUMBER + ")")
FLEXIBLE = re.compile(NUMBER)


def normalize(answer: str) -> str:
    """Commas and dollar signs removed, one trailing period dropped, surrounding space stripped."""
    s = answer.strip().replace(",", "").replace("$", "").strip()
    return s[:-1] if s.endswith(".") else s


def strict_answer(completion: str) -> str | None:
    """The number after "#### ", or None when the completion does not give its answer in that form."""
    match = STRICT.search(completion)
    return normalize(match.group(1)) if match else None


def flexible_answer(completion: str) -> str | None:
    found = FLEXIBLE.findall(completion)
    return normalize(found[-1]) if found else None


def final_answer(text: str) -> str:
    """The number after "#### " if present, else the last number, else the whole text, normalised."""
    if "####" in text:
        after = text.split("####")[-1]
        return strict_answer("####" + after) or normalize(after)
    found = flexible_answer(text)
    return found if found is not None else normalize(text)
