"""How a training command ends, the same for pre-training and post-training: a user mistake is one `error:`
line (exit 2), a diverged run exit 3, a preempted one 128 + the signal, success a `done:` line (exit 0)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import jax

from eva_jax.checkpoints.safetensors_io import CheckpointError
from eva_jax.config import ConfigError
from eva_jax.data.sources import DataError
from eva_jax.data.tokenizer import TokenizerError
from eva_jax.train import guard
from eva_jax.train.checkpoint import NoReadableCheckpoint
from eva_jax.train.divergence import Diverged
from eva_jax.train.loop import RunResult
from eva_jax.train.preemption import Preempted

# FileNotFoundError: a named input (--init, --data) that is not there, with the path in its message.
USER_ERRORS = (ConfigError, DataError, TokenizerError, guard.TooLarge, NoReadableCheckpoint, CheckpointError,
               FileNotFoundError)


def finish(train: Callable[[], RunResult], steps: Callable[[], int], errors: tuple[type, ...] = ()) -> int:
    """Runs `train` and says how it ended; `steps()` is the run's length (for a run with nothing left to do);
    `errors` are further exception types that are the user's to fix."""
    try:
        result = train()
    except USER_ERRORS + errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Diverged as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    except Preempted as err:
        print(err, file=sys.stderr)
        return 128 + err.signum  # what a shell reports for a process the signal ended
    except KeyboardInterrupt:
        # A second Ctrl-C: the loop's `finally` has waited for any save in flight.
        print("\ninterrupted: completed checkpoints are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    last = result.history[-1] if result.history else None
    if last:
        reward = f", reward {last['reward_mean']:.3f}" if "reward_mean" in last else ""  # GRPO
        print(f"done: step {last['step']}, loss {last['loss']:.4f}{reward}; workdir {result.workdir}")
    else:
        print(f"nothing to do: {result.workdir} already holds all {steps()} steps")
    return 0


def use_compile_cache() -> None:
    """Re-running a command (resume, a second run of the same shape) reuses compiled programs."""
    jax.config.update("jax_compilation_cache_dir",
                      os.environ.get("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/eva_jax/xla")))
