"""Rule-based rewards for GRPO, as a registry: a reward is a function (completion text, reference answer) -> float.

Built in: `exact` — the completion's final answer equals the reference's (eva_jax/data/answers.py: after "####"
if present, else the last number, else the stripped text; GSM8K's convention), and `format` — the completion gives
its answer in the requested form ("#### N"). Any other name is a dotted path to a Python callable
(`mypackage.rewards.brevity`) called the same way. A spec combines several with weights: "exact" or
"exact:1.0,format:0.1" (weight 1 when left out); the total is the weighted sum and each component is reported.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import numbers
from collections.abc import Callable

from eva_jax.config import ConfigError
from eva_jax.data.answers import final_answer, strict_answer

Reward = Callable[[str, str], float]


def exact(completion: str, answer: str) -> float:
    """1 when the completion's final answer is the reference's, else 0."""
    return float(final_answer(completion) == final_answer(answer))


def format_reward(completion: str, answer: str) -> float:
    """1 when the completion states its answer as "#### N" (the form the prompts ask for), else 0."""
    return float(strict_answer(completion) is not None)


BUILT_IN: dict[str, Reward] = {"exact": exact, "format": format_reward}


def resolve(name: str) -> Reward:
    """A built-in reward by name, or the callable a dotted path names; a sentence when it is neither."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    module_name, _, attribute = name.rpartition(".")
    if not module_name:
        raise ConfigError(f"--reward={name}: no such reward; built in are {', '.join(BUILT_IN)}, or give the "
                          f"dotted path of a Python function (module.function)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"--reward={name}: cannot import {module_name} ({err})") from None
    fn = getattr(module, attribute, None)
    if not callable(fn):
        raise ConfigError(f"--reward={name}: {module_name} has no function {attribute}")
    return fn


@dataclasses.dataclass(frozen=True)
class Rewards:
    """Named, weighted reward functions; `score` gives the total and each component of one completion."""

    names: tuple[str, ...]
    weights: tuple[float, ...]
    fns: tuple[Reward, ...]

    @classmethod
    def parse(cls, spec: str | list[str] | tuple[str, ...]) -> Rewards:
        parts = [p.strip() for s in ([spec] if isinstance(spec, str) else spec) for p in s.split(",") if p.strip()]
        if not parts:
            raise ConfigError("--reward is empty; give e.g. exact or exact:1.0,format:0.1")
        names, weights = [], []
        for part in parts:
            name, _, weight = part.partition(":")
            try:
                w = float(weight) if weight else 1.0
            except ValueError:
                raise ConfigError(f"--reward={part}: the weight after ':' must be a number") from None
            if not math.isfinite(w):
                raise ConfigError(f"--reward={part}: the weight must be finite")
            if name in names:
                raise ConfigError(f"--reward names {name} twice")
            names.append(name)
            weights.append(w)
        return cls(tuple(names), tuple(weights), tuple(resolve(n) for n in names))

    @property
    def spec(self) -> str:
        return ",".join(f"{n}:{w:g}" for n, w in zip(self.names, self.weights))

    def score(self, completion: str, answer: str) -> tuple[float, dict[str, float]]:
        parts = {}
        for name, fn in zip(self.names, self.fns):
            value = fn(completion, answer)
            if not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"the reward {name} returned {value!r}; a reward must be a finite number")
            parts[name] = float(value)
        return sum(w * parts[n] for n, w in zip(self.names, self.weights)), parts
