"""A progress bar on stderr: tqdm's when it is installed, else a plain line rewritten at most twice a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO

try:
    from tqdm import tqdm
except ImportError:  # tqdm is optional; the plain line says the same
    tqdm = None


class Progress:
    """`update(n)` after each unit of work; `close()` (or the `with` block's end) finishes the line."""

    def __init__(self, total: int, desc: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.total, self.desc, self.done = total, desc, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self._bar = tqdm(total=total, desc=desc, file=self.stream, leave=True) if enabled and tqdm else None
        self._start = self._shown = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and (time.monotonic() - self._shown > 0.5 or self.done >= self.total):
            self._show("\r")

    def _show(self, end: str) -> None:
        self._shown = time.monotonic()
        self.stream.write(f"{end}{self.desc}: {self.done}/{self.total} ({self._shown - self._start:.0f} s)")
        self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled:
            self._show("\r")
            self.stream.write("\n")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
