"""Named configurations: each module here exports `CONFIG`; `resolve(name)` finds it by name."""

from __future__ import annotations

import importlib
import pkgutil

from eva_jax.config import Config, ConfigError


def available() -> list[str]:
    """Names of every config module in this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def resolve(name: str) -> Config:
    """The `CONFIG` of `configs/<name>.py`, or an error that lists the known names."""
    if name not in available():
        raise ConfigError(f"unknown config {name!r}; known configs: {', '.join(available())}")
    return importlib.import_module(f"{__name__}.{name}").CONFIG
