"""JSON Lines files read one way everywhere: gzipped when the name ends in .gz, blank lines skipped, and a bad
line answered with a sentence naming the file and the line (in the caller's error type)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any


def read_jsonl(path: str | Path, error: type[Exception], required: Collection[str] = (), hint: str = "",
               errors: str = "strict") -> list[dict[str, Any]]:
    """The objects of the file; each must hold the keys `required` (`hint` says what to do when one does not).
    `errors="ignore"` drops undecodable bytes (corpora scraped from anywhere) instead of refusing the file."""
    return [row for _, row in numbered_jsonl(path, error, required, hint, errors)]


def numbered_jsonl(path: str | Path, error: type[Exception], required: Collection[str] = (), hint: str = "",
                   errors: str = "strict") -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line, for callers whose later checks name the line too."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: no such file")
    opened = gzip.open(path, "rt", encoding="utf-8", errors=errors) if path.suffix == ".gz" else \
        path.open(encoding="utf-8", errors=errors)
    rows = []
    with opened as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}:{number} is not valid JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise error(f"{path}:{number} is not a JSON object")
            missing = [k for k in required if k not in row]
            if missing:
                raise error(f"{path}:{number} needs the field{'s' if len(missing) > 1 else ''} "
                            f"{', '.join(map(repr, missing))}{hint}")
            rows.append((number, row))
    return rows
