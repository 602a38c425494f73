"""Document sources: random-access lists of texts, split into train and held-out by file."""

from __future__ import annotations

import glob
import hashlib
import sysconfig
from collections.abc import Sequence
from pathlib import Path

from eva_jax.data.jsonl import read_jsonl

TEXT_SUFFIXES = (".py", ".txt", ".md", ".rst", ".c", ".h", ".cc", ".cpp", ".js", ".ts", ".go", ".rs", ".java",
                 ".json", ".toml", ".yaml", ".yml", ".sh", ".html", ".css", ".tex")


class DataError(ValueError):
    """A data source that cannot be read as configured."""


def _read_text(path: str) -> str:
    # Keep the valid UTF-8 and drop the rest: real code trees contain stray Latin-1 bytes.
    with open(path, "rb") as f:
        return f.read().decode("utf-8", errors="ignore")


class FileDocuments(Sequence):
    """One document per file."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> str:
        return _read_text(self.paths[i])

    def keys(self) -> list[str]:
        return self.paths


class ListDocuments(Sequence):
    """Documents already in memory (JSONL / Parquet rows), keyed by their row number."""

    def __init__(self, texts: list[str], origin: str) -> None:
        self.texts, self.origin = texts, origin

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> str:
        return self.texts[i]

    def keys(self) -> list[str]:
        return [f"{self.origin}:{i}" for i in range(len(self.texts))]


def stdlib_files() -> list[str]:
    """The running interpreter's standard library (~30 MB of real Python): the embedded default corpus."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return sorted(str(p) for p in root.rglob("*.py") if "site-packages" not in p.parts)


def _files(spec: str) -> list[str]:
    path = Path(spec)
    if path.is_dir():
        found = [p for p in path.rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES]
    else:
        found = [Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file()]
    return sorted(str(p) for p in found)


def _jsonl(path: Path, field: str) -> list[str]:
    rows = read_jsonl(path, DataError, [field], " (set data.text_field)", errors="ignore")
    return [str(row[field]) for row in rows]


def _parquet(path: Path, field: str) -> list[str]:
    try:
        import pyarrow.parquet as pq  # local import: optional dependency, needed only for .parquet sources
    except ImportError:
        raise DataError("reading Parquet needs pyarrow (pip install pyarrow)") from None
    table = pq.read_table(path, columns=None)
    if field not in table.column_names:
        raise DataError(f"{path} has no column {field!r}; columns: {table.column_names} (set data.text_field)")
    return [str(t) for t in table.column(field).to_pylist()]


def open_source(spec: str, text_field: str = "text") -> FileDocuments | ListDocuments:
    """The documents named by `data.source`."""
    if spec == "stdlib":
        return FileDocuments(stdlib_files())
    path = Path(spec)
    if path.suffix == ".jsonl" and path.is_file():
        docs = ListDocuments(_jsonl(path, text_field), str(path))
    elif path.suffix == ".parquet" and path.is_file():
        docs = ListDocuments(_parquet(path, text_field), str(path))
    else:
        docs = FileDocuments(_files(spec))
    if len(docs) == 0:
        raise DataError(f"data.source={spec!r} matched no documents (expected 'stdlib', a directory, a glob, "
                        f"a .jsonl or a .parquet file)")
    return docs


def is_heldout(key: str, fraction: float) -> bool:
    """A stable per-document coin: the same file is held out on every machine and every run."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split(docs: FileDocuments | ListDocuments, fraction: float) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices); each side gets at least one document."""
    held = [i for i, k in enumerate(docs.keys()) if is_heldout(k, fraction)]
    train = [i for i, k in enumerate(docs.keys()) if not is_heldout(k, fraction)]
    if not held:
        held, train = train[-1:], train[:-1]
    if not train:
        raise DataError(f"data.source has only {len(docs)} document(s): too few to split train and held-out")
    return train, held
