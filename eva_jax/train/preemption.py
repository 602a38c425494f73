"""Stopping a run cleanly on SIGTERM (a preemptible VM's notice, a scheduler) or SIGINT (Ctrl-C): the current
step finishes, a checkpoint of it is saved and waited for, and the run ends with a sentence; re-running the
command resumes from it exactly. In a multi-process run every process stops at the same step: each step the
processes share whether any of them was signalled (and Orbax's preemption sync point, where JAX's preemption
service runs, as on Cloud TPU). A second Ctrl-C interrupts at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import jax

from eva_jax.parallel import distributed


class Preempted(RuntimeError):
    """The run was stopped by a signal after saving its last completed step."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class StopRequests:
    """The signal received, if any; `agreed(step, manager)` tells every process whether to stop now."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def _handle(self, signum: int, _frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: do not wait for the step
        self.signum = signum
        print(f"\n{signal.Signals(signum).name} received: finishing this step, then saving a checkpoint "
              f"(Ctrl-C again to stop at once)", flush=True)

    def agreed(self, step: int, manager) -> int | None:
        """The signal number to stop for, the same on every process, or None to go on."""
        signals = distributed.allgather_json(self.signum)
        mine = next((s for s in signals if s is not None), None)
        if mine is None and jax.process_count() > 1 and manager.reached_preemption(step):
            mine = int(signal.SIGTERM)
        return mine


@contextmanager
def stop_requests() -> Iterator[StopRequests]:
    """Handlers for SIGTERM and SIGINT while the loop runs (only from the main thread, where Python delivers
    signals; elsewhere, e.g. a notebook's worker thread, nothing is installed and nothing stops early)."""
    requests = StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield requests
        return
    previous = {s: signal.signal(s, requests._handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield requests
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
