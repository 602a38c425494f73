"""Start N local processes that form one JAX multi-controller job (CPU + gloo), for tests and laptops:

    python -m eva_jax.parallel.launch --processes=2 --devices=4 -- -m eva_jax.train --config=v3_tiny

Each child sees `--devices` simulated CPU devices and the EVA_* variables that eva_jax.parallel.distributed
reads; the job has processes × devices devices in all."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys

from eva_jax.parallel.distributed import COORDINATOR, NUM_PROCESSES, PROCESS_ID


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(argv: list[str], processes: int, devices: int, env: dict | None = None, **popen) -> list[subprocess.Popen]:
    """Popen of `python <argv>` once per process; the caller waits on them."""
    port = free_port()
    base = {**(env if env is not None else os.environ), "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
            COORDINATOR: f"localhost:{port}", NUM_PROCESSES: str(processes)}
    return [subprocess.Popen([sys.executable, *argv], env={**base, PROCESS_ID: str(i)}, **popen)
            for i in range(processes)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--devices", type=int, default=4, help="simulated CPU devices per process")
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="arguments for python after --")
    args = parser.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    procs = launch(argv, args.processes, args.devices)
    return max(p.wait() for p in procs)


if __name__ == "__main__":
    sys.exit(main())
