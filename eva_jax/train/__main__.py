"""`python -m eva_jax.train [--config=NAME] [--set key=value ...] [--workdir=DIR] [--dry-run]`

With no arguments trains v3_small on the Python standard library on this machine. Re-running the same command
in the same workdir resumes exactly where it stopped.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax

from eva_jax.api import load_config
from eva_jax.config import ConfigError
from eva_jax.data.sources import DataError
from eva_jax.data.tokenizer import TokenizerError
from eva_jax.overrides import parse_sets
from eva_jax.parallel import distributed
from eva_jax.train import guard
from eva_jax.train.checkpoint import NoReadableCheckpoint
from eva_jax.train.divergence import Diverged
from eva_jax.train.dry_run import dry_run
from eva_jax.train.loop import run
from eva_jax.train.preemption import Preempted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eva_jax.train", description=__doc__.split("\n\n")[1])
    parser.add_argument("--config", default="v3_small", help="a name from configs/ (default v3_small)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    parser.add_argument("--workdir", default=None, help="run directory (default workdirs/<config>)")
    parser.add_argument("--dry-run", action="store_true", help="compile the train step abstractly and report memory")
    parser.add_argument("--devices", type=int, default=None, metavar="N",
                        help="with --dry-run: simulated device count (default 256, or the most the config fits)")
    args = parser.parse_args(argv)

    # Re-running a command (resume, a second run of the same shape) reuses compiled programs.
    jax.config.update("jax_compilation_cache_dir",
                      os.environ.get("JAX_COMPILATION_CACHE_DIR", os.path.expanduser("~/.cache/eva_jax/xla")))

    try:
        cfg = load_config(args.config, **parse_sets(args.set))
        if args.dry_run:
            print(dry_run(cfg, args.devices))
            return 0
        distributed.initialize()  # before anything touches a backend; a no-op on one host
        guard.ensure_fits(cfg)
        result = run(cfg, args.workdir)
    except (ConfigError, DataError, TokenizerError, guard.TooLarge, NoReadableCheckpoint) as err:
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
        print(f"done: step {last['step']}, loss {last['loss']:.4f}; workdir {result.workdir}")
    else:
        print(f"nothing to do: {result.workdir} already holds all {cfg.train.steps} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
