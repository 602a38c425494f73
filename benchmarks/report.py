"""Appends a dated benchmark section (machine, command, table) to docs/performance.md."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

PERFORMANCE_MD = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import jax

    return f"{cpu}, {os.cpu_count()} cores, jax {jax.__version__} on {jax.default_backend()}"


def append_section(title: str, lines: list[str]) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python " + " ".join(sys.argv)
    body = [f"\n## {title}\n", f"- date: {stamp}", f"- machine: {machine()}", f"- command: `{command}`", "", *lines, ""]
    PERFORMANCE_MD.parent.mkdir(parents=True, exist_ok=True)
    if not PERFORMANCE_MD.exists():
        PERFORMANCE_MD.write_text("# Performance\n\nFigures with how they were obtained; newest sections last.\n")
    with PERFORMANCE_MD.open("a") as f:
        f.write("\n".join(body))
    print("\n".join(body))
