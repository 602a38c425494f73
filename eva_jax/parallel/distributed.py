"""Multi-host start-up: jax.distributed.initialize driven by the environment, and helpers that need every
process (exchanging small host values, process-local batch rows)."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils

# Set by eva_jax.parallel.launch (or by hand, e.g. on GPU clusters without a scheduler JAX detects).
COORDINATOR, NUM_PROCESSES, PROCESS_ID = "EVA_COORDINATOR", "EVA_NUM_PROCESSES", "EVA_PROCESS_ID"


def _cluster_detectable() -> bool:
    """TPU VMs/pods and GKE TPU jobs: JAX finds coordinator and ranks itself (initialize() with no arguments)."""
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    return ("," in hosts or int(os.environ.get("MEGASCALE_NUM_SLICES", "1")) > 1
            or os.environ.get("EVA_DISTRIBUTED") == "auto")


def initialize() -> bool:
    """Joins the multi-controller runtime when this process is one of several; a no-op otherwise and when
    already initialized. Must run before anything touches a JAX backend. Returns True when distributed."""
    if jax.distributed.is_initialized():
        return True
    if os.environ.get(COORDINATOR):
        if os.environ.get("JAX_PLATFORMS", "") == "cpu":
            # CPU collectives across processes go through gloo (none are built in).
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=os.environ[COORDINATOR],
                                   num_processes=int(os.environ[NUM_PROCESSES]),
                                   process_id=int(os.environ[PROCESS_ID]))
        return True
    if _cluster_detectable():
        jax.distributed.initialize()
        return True
    return False


def allgather_json(value) -> list:
    """Every process's JSON-serialisable `value`, in process order (e.g. data-iterator states)."""
    if jax.process_count() == 1:
        return [value]
    blob = np.frombuffer(json.dumps(value).encode(), np.uint8)
    lengths = np.asarray(multihost_utils.process_allgather(np.array([blob.size], np.int32))).reshape(-1)
    padded = np.zeros((int(lengths.max()),), np.uint8)
    padded[: blob.size] = blob
    rows = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(lengths), -1)
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(rows, lengths)]


def barrier(name: str) -> None:
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
