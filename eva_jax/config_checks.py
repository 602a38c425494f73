"""How config sections check themselves: one sentence naming the field and what was expected (ConfigError)."""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Literal

Dtype = Literal["float32", "bfloat16", "float16"]


class ConfigError(ValueError):
    """A configuration that cannot describe a working model."""


def require(condition: bool, sentence: str) -> None:
    if not condition:
        raise ConfigError(sentence)


@functools.cache
def choices(cls: type) -> dict[str, tuple]:
    """The Literal-typed fields of a config dataclass and their allowed values."""
    hints = typing.get_type_hints(cls)
    return {f.name: typing.get_args(hints[f.name]) for f in dataclasses.fields(cls)
            if typing.get_origin(hints[f.name]) is Literal}


def check_choices(section: str, owner: object) -> None:
    """Each Literal field of `owner` holds one of its values, else a sentence naming the field and the options."""
    for name, allowed in choices(type(owner)).items():
        value = getattr(owner, name)
        require(value in allowed, f"{section}.{name}={value!r}: expected one of {allowed}")


def fraction(name: str, value: float) -> None:
    require(0.0 <= value <= 1.0, f"{name}={value} must be a fraction of the run's tokens in [0, 1]")


def non_negative(name: str, value: float, positive: bool = False) -> None:
    """A finite rate or weight (nan and inf compare false, so they fail too)."""
    ok = math.isfinite(value) and (value > 0 if positive else value >= 0)
    require(ok, f"{name}={value} must be a finite number {'> 0' if positive else '>= 0'}")
