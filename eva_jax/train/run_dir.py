"""The workdir a run writes to, checked before any work: a file given as --workdir, a directory that cannot be
created, or one that is not writable (a read-only mount, another user's directory) are one sentence each, not
a traceback from deep inside a save. A finished run in a read-only workdir has nothing to write and is fine."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from eva_jax.config import ConfigError

PROBE = ".eva_write_probe"


def finished_steps(workdir: Path) -> int:
    """The newest step directory under checkpoints/ (0 when none), read without opening Orbax."""
    root = workdir / "checkpoints"
    steps = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
    return max(steps, default=0)


def check_workdir(workdir: Path, steps: int) -> bool:
    """True when the run can write `workdir`; False when it is read-only but already holds all `steps` (nothing
    to do). Otherwise a ConfigError naming the path and what to do."""
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"the workdir {workdir} is a file, not a directory; give --workdir a directory "
                          f"(it is created if missing)")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the workdir {workdir}: {err.strerror}; choose a writable place with "
                          f"--workdir") from None
    probe = workdir / f"{PROBE}.{socket.gethostname()}.{os.getpid()}"  # one per process: hosts may share it
    try:
        probe.write_text("")
        probe.unlink()
        return True
    except OSError as err:
        if finished_steps(workdir) >= steps:
            return False
        raise ConfigError(f"the workdir {workdir} is not writable ({err.strerror}): training writes its "
                          f"checkpoints and metrics there; make it writable or choose another with "
                          f"--workdir") from None
