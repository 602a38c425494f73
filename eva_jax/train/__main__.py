"""`python -m eva_jax.train [--config=NAME] [--set key=value ...] [--workdir=DIR] [--dry-run]`

With no arguments trains v3_small on the Python standard library on this machine. Re-running the same command
in the same workdir resumes exactly where it stopped.
"""

from __future__ import annotations

import argparse
import sys

from eva_jax.api import load_config
from eva_jax.config import Config
from eva_jax.overrides import parse_sets
from eva_jax.parallel import distributed
from eva_jax.train import guard
from eva_jax.train.dry_run import dry_run
from eva_jax.train.loop import RunResult, run
from eva_jax.train.outcome import USER_ERRORS, finish, use_compile_cache


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eva_jax.train", description=__doc__.split("\n\n")[1])
    parser.add_argument("--config", default="v3_small", help="a name from configs/ (default v3_small)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    parser.add_argument("--workdir", default=None, help="run directory (default workdirs/<config>)")
    parser.add_argument("--dry-run", action="store_true", help="compile the train step abstractly and report memory")
    parser.add_argument("--devices", type=int, default=None, metavar="N",
                        help="with --dry-run: simulated device count (default 256, or the most the config fits)")
    args = parser.parse_args(argv)

    use_compile_cache()

    if args.dry_run:
        try:
            print(dry_run(load_config(args.config, **parse_sets(args.set)), args.devices))
            return 0
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    configs: list[Config] = []

    def train() -> RunResult:
        configs.append(load_config(args.config, **parse_sets(args.set)))
        distributed.initialize()  # before anything touches a backend; a no-op on one host
        guard.ensure_fits(configs[0])
        return run(configs[0], args.workdir)

    return finish(train, lambda: configs[0].train.steps)


if __name__ == "__main__":
    sys.exit(main())
