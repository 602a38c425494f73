"""Lazy safetensors reading (memory-mapped, one tensor at a time) and sharded writing.

Reading parses the format directly because the `safetensors` numpy backend has no float8 type; values are
views on a memory map, so loading a checkpoint never holds it twice. Writing uses the `safetensors` library.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint directory or file that cannot be read as expected."""


def read_json(path: Path) -> dict:
    """A JSON file's object, or a CheckpointError naming the file and where its text stops being JSON."""
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err.msg} at line {err.lineno}, "
                              f"column {err.colno}") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not valid JSON: it is not UTF-8 text") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} is not valid JSON: expected an object, found {type(value).__name__}")
    return value


class SafetensorsFile:
    """One .safetensors file: its header, and tensors as read-only memory-mapped numpy arrays."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise CheckpointError(f"{path} is not a safetensors file (shorter than its 8-byte header size)")
            (size,) = struct.unpack("<Q", raw)
            try:
                header = json.loads(f.read(size))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise CheckpointError(f"{path} has an unreadable safetensors header: {err}") from None
        header.pop("__metadata__", None)
        self.header: dict[str, dict] = header
        self.data_start = 8 + size
        self._check_length()
        self._map = np.memmap(path, dtype=np.uint8, mode="r")

    def _check_length(self) -> None:
        """A copy cut short (an interrupted download or transfer) is named here, not as a bad tensor later."""
        try:
            needed = max((info["data_offsets"][1] for info in self.header.values()), default=0)
        except (KeyError, TypeError, IndexError):
            raise CheckpointError(f"{self.path} has a malformed safetensors header (a tensor without "
                                  f"data_offsets)") from None
        have = self.path.stat().st_size - self.data_start
        if have < needed:
            raise CheckpointError(f"{self.path} is truncated: its header describes {needed:,} bytes of tensor "
                                  f"data, the file holds {max(have, 0):,}; copy or download it again")

    def keys(self) -> list[str]:
        return list(self.header)

    def get(self, name: str) -> np.ndarray:
        info = self.header[name]
        if info["dtype"] not in DTYPES:
            raise CheckpointError(f"tensor {name} in {self.path.name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        raw = self._map[self.data_start + begin: self.data_start + end]
        return raw.view(DTYPES[info["dtype"]]).reshape(info["shape"])


class CheckpointReader:
    """All tensors of a Hugging Face checkpoint directory (single file or sharded with an index)."""

    def __init__(self, directory: Path) -> None:
        index = directory / INDEX_NAME
        if index.exists():
            weight_map = read_json(index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{index} has no weight_map object")
            missing = sorted({f for f in weight_map.values() if not (directory / f).is_file()})
            if missing:
                raise CheckpointError(f"{index} lists {len(missing)} file(s) that are not in {directory}, "
                                      f"e.g. {missing[0]}")
            files = {f: SafetensorsFile(directory / f) for f in sorted(set(weight_map.values()))}
            self.location = {name: files[f] for name, f in weight_map.items()}
        else:
            paths = sorted(directory.glob("*.safetensors"))
            if not paths:
                raise CheckpointError(f"{directory} has no {SINGLE_NAME}, {INDEX_NAME} or other .safetensors file")
            self.location = {}
            for path in paths:
                shard = SafetensorsFile(path)
                self.location.update({name: shard for name in shard.keys()})

    def __contains__(self, name: str) -> bool:
        return name in self.location

    def names(self) -> list[str]:
        return list(self.location)

    def get(self, name: str) -> np.ndarray:
        return self.location[name].get(name)


class ShardedWriter:
    """Writes tensors into model-0000i-of-0000n.safetensors shards of at most `max_shard_bytes`, plus the index."""

    def __init__(self, directory: Path, max_shard_bytes: int) -> None:
        self.directory, self.max_bytes = directory, max_shard_bytes
        self.pending: dict[str, np.ndarray] = {}
        self.pending_bytes = 0
        self.shards: list[list[str]] = []
        self.total_bytes = 0

    def add(self, name: str, value: np.ndarray) -> None:
        if self.pending and self.pending_bytes + value.nbytes > self.max_bytes:
            self._flush()
        self.pending[name] = np.ascontiguousarray(value)
        self.pending_bytes += value.nbytes
        self.total_bytes += value.nbytes

    def _flush(self) -> None:
        save_file(self.pending, str(self.directory / f"shard-{len(self.shards):05d}.tmp"))
        self.shards.append(list(self.pending))
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> None:
        if self.pending or not self.shards:
            self._flush()
        count = len(self.shards)
        if count == 1:
            (self.directory / "shard-00000.tmp").rename(self.directory / SINGLE_NAME)
            return
        weight_map = {}
        for i, names in enumerate(self.shards):
            final = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            (self.directory / f"shard-{i:05d}.tmp").rename(self.directory / final)
            weight_map.update({n: final for n in names})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.directory / INDEX_NAME).write_text(json.dumps(index, indent=2))
