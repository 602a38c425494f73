"""Refuse, before allocating anything, to train a model the local devices cannot hold."""

from __future__ import annotations

import os

import jax

from eva_jax.config import Config
from eva_jax.counts import param_counts

# fp32 master weights + fp32 gradients + two AdamW moments.
BYTES_PER_PARAM = 16


class TooLarge(RuntimeError):
    pass


def device_memory_bytes() -> int:
    total = 0
    for device in jax.local_devices():
        stats = device.memory_stats() if hasattr(device, "memory_stats") else None
        if stats and "bytes_limit" in stats:
            total += stats["bytes_limit"]
    if total:
        return total
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # CPU: host RAM


def ensure_fits(cfg: Config) -> None:
    counts = param_counts(cfg)
    params = counts["total"] + counts["mtp"]
    need, have = params * BYTES_PER_PARAM, device_memory_bytes()
    if need > have:
        raise TooLarge(
            f"config {cfg.name} has {params / 1e9:.1f}B parameters and needs about {need / 2**40:.1f} TiB for "
            f"weights, gradients and AdamW state before activations; these {jax.local_device_count()} "
            f"{jax.devices()[0].platform} device(s) hold {have / 2**30:.0f} GiB. Train it on a TPU/GPU slice "
            f"(e.g. 256 TPU v5p chips, see gcp-setup/README.md), or check the compiled memory first with "
            f"--dry-run.")
