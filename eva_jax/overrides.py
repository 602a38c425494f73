"""Dotted overrides on frozen nested dataclasses: `{"model.num_layers": 4, "model.rope_scaling.factor": "40"}`.

Values may be Python objects or strings (as from `--set key=value`); strings are parsed by the field's type.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from eva_jax.config import ComputeConfig, ConfigError


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else typing.Union[tuple(rest)]), True
    return tp, False


def parse_value(key: str, raw: Any, tp: Any) -> Any:
    """Converts `raw` to the annotated type `tp`, with an error that names `key`."""
    inner, optional = _unwrap_optional(tp)
    if isinstance(raw, str):
        text = raw.strip()
        if optional and text.lower() in ("none", "null"):
            return None
        if inner is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ConfigError(f"{key}={raw!r}: expected true or false")
        if inner is int:
            try:
                return int(text)
            except ValueError:
                raise ConfigError(f"{key}={raw!r}: expected an integer") from None
        if inner is float:
            try:
                return float(text)
            except ValueError:
                raise ConfigError(f"{key}={raw!r}: expected a number") from None
        if inner is str:
            return text
        if dataclasses.is_dataclass(inner):
            try:
                raw = json.loads(text)
            except json.JSONDecodeError:
                raise ConfigError(f"{key}={raw!r}: expected a JSON object for {inner.__name__}") from None
    if raw is None:
        if optional:
            return None
        raise ConfigError(f"{key} cannot be None")
    if dataclasses.is_dataclass(inner) and isinstance(raw, dict):
        return from_dict(inner, raw, prefix=key)
    if inner is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if inner in (int, float, bool, str) and not isinstance(raw, inner):
        raise ConfigError(f"{key}={raw!r}: expected {inner.__name__}")
    if inner is int and isinstance(raw, bool):
        raise ConfigError(f"{key}={raw!r}: expected int")
    return raw


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Builds dataclass `cls` from a (possibly nested) dict, rejecting unknown keys by name."""
    types_ = _field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(prefix + '.' + u if prefix else u for u in unknown)}; "
                          f"{cls.__name__} has {', '.join(sorted(types_))}")
    kwargs = {k: parse_value(f"{prefix}.{k}" if prefix else k, v, types_[k]) for k, v in data.items()}
    return cls(**kwargs)


# `model.<field>` for the fields that moved to the compute section, so the names users know keep working
# (`--set model.matmul=fp8`, `model.attention_chunk`, `model.dtype`): each resolves to `compute.<field>`.
ALIASES = {f"model.{f.name}": f"compute.{f.name}" for f in dataclasses.fields(ComputeConfig)}


def canonical_key(key: str) -> str:
    return ALIASES.get(key, key)


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """A config record (config.json of a workdir) written before the compute section existed: its execution
    fields under `model` move to `compute`. A current record is returned unchanged."""
    model = record.get("model")
    if not isinstance(model, dict):
        return record
    moved = {k: model[k] for k in model if f"model.{k}" in ALIASES}
    if not moved:
        return record
    return {**record, "model": {k: v for k, v in model.items() if k not in moved},
            "compute": {**moved, **record.get("compute", {})}}


@dataclasses.dataclass
class _Node:
    """The overrides below one key: its own new value (if given) and the dotted keys below it."""

    value: Any = dataclasses.field(default=None)
    has_value: bool = False
    children: dict[str, _Node] = dataclasses.field(default_factory=dict)


def apply_overrides(root: Any, overrides: dict[str, Any]) -> Any:
    """Returns `root` with each dotted key replaced. Each dataclass is rebuilt once with all of its changes, so
    fields that are validated together (train.batch_start <= train.global_batch) may be changed together."""
    tree = _Node()
    for key, raw in overrides.items():
        node = tree
        for part in canonical_key(key).split("."):
            node = node.children.setdefault(part, _Node())
        node.value, node.has_value, node.children = raw, True, {}  # a whole value replaces earlier sub-keys
    return _rebuild(root, tree, [])


def _rebuild(node: Any, tree: _Node, path: list[str]) -> Any:
    if not tree.children:
        return node
    where = ".".join(path)
    if not dataclasses.is_dataclass(node):
        first = ".".join([*path, next(iter(tree.children))])
        raise ConfigError(f"cannot override {first!r}: {where} is below a value that is not a section")
    types_ = _field_types(type(node))
    changes = {}
    for head, child in tree.children.items():
        key = ".".join([*path, head])
        if head not in types_:
            raise ConfigError(f"unknown config key {key!r}: {type(node).__name__} has {', '.join(sorted(types_))}")
        value = parse_value(key, child.value, types_[head]) if child.has_value else getattr(node, head)
        if child.children and value is None:
            raise ConfigError(f"cannot override {key + '.' + next(iter(child.children))!r}: {head} is None; set it "
                              f"whole, e.g. {key}='{{...}}'")
        changes[head] = _rebuild(value, child, [*path, head])
    return dataclasses.replace(node, **changes)


def parse_sets(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {pair!r}")
        out[key.strip()] = value
    return out
