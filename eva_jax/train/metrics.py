"""Run metrics: one JSON object per optimizer step in WORKDIR/metrics.jsonl, TensorBoard event files in
WORKDIR/tensorboard, and a live progress line on the terminal."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jax

from eva_jax.config import Config
from eva_jax.counts import param_counts

# Dense bf16 peak per device in FLOP/s, for MFU.
PEAK_FLOPS = {"TPU v5p": 459e12, "TPU v5 lite": 197e12, "TPU v6 lite": 918e12, "TPU v4": 275e12,
              "H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12}


def cpu_peak_flops() -> float:
    """Cores × clock × 32 fp32 FLOP/cycle (two 8-wide FMA units): the stated peak of an AVX2 core."""
    mhz = 2500.0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                mhz = float(line.split(":")[1])
                break
    except OSError:
        pass
    return (os.cpu_count() or 1) * mhz * 1e6 * 32


def peak_flops(cfg: Config) -> float:
    """Peak of the whole set of devices this process drives."""
    if cfg.train.peak_flops:
        return cfg.train.peak_flops * jax.device_count()
    device = jax.devices()[0]
    if device.platform == "cpu":
        return cpu_peak_flops()
    for kind, flops in PEAK_FLOPS.items():
        if kind in device.device_kind:
            return flops * jax.device_count()
    return 0.0


def train_flops_per_token(cfg: Config) -> float:
    """6·(activated parameters except the embedding lookup) + attention's 6·layers·H·(d_qk + d_v)·T."""
    m = cfg.model
    counts = param_counts(cfg)
    embed = m.vocab_size * m.hidden_size
    active = counts["activated"] - embed  # the lookup is not a matmul; the head is
    if m.num_mtp_layers:  # MTP modules' own weights, plus the shared head once per depth
        active += counts["mtp_activated"] - 2 * embed + m.num_mtp_layers * embed
    layers = m.num_layers + m.num_mtp_layers
    return float(6 * active + 6 * layers * m.num_heads * (m.qk_head_dim + m.v_head_dim) * cfg.train.seq_len)


class MetricsLog:
    def __init__(self, workdir: Path, resume_step: int, total_steps: int) -> None:
        self.path = workdir / "metrics.jsonl"
        self._truncate_after(resume_step)
        self.file = self.path.open("a")
        self.total_steps, self.start_time, self.start_step = total_steps, time.perf_counter(), resume_step
        self.tty = sys.stdout.isatty()
        try:
            # local import: tensorboardX imports torch (~1.3 s); only a run that writes logs pays for it, and
            # without it the JSON log still works.
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step + 1)
        except ImportError:
            self.tb = None

    def _truncate_after(self, step: int) -> None:
        """A resumed run rewrites the steps after its checkpoint, so drop their old lines."""
        if not self.path.exists():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept))

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(key, value, record["step"])
                elif isinstance(value, list):
                    for i, v in enumerate(value):
                        self.tb.add_scalar(f"{key}/{i}", v, record["step"])
        self.progress(record)

    def progress(self, record: dict) -> None:
        step = record["step"]
        done = step - self.start_step
        elapsed = time.perf_counter() - self.start_time
        eta = elapsed / max(done, 1) * (self.total_steps - step)
        line = (f"step {step}/{self.total_steps}  loss {record['loss']:.4f}  "
                f"{record.get('tokens_per_s', 0):,.0f} tok/s  ETA {eta / 60:.1f} min")
        if "reward_mean" in record:  # GRPO
            line += f"  reward {record['reward_mean']:.3f}  kl {record['kl']:.4f}"
        if "heldout_loss" in record:
            line += f"  held-out {record['heldout_loss']:.4f}"
        if "heldout_reward" in record:
            line += f"  held-out reward {record['heldout_reward']:.3f}"
        held_out = "heldout_loss" in record or "heldout_reward" in record
        if self.tty:
            print("\r" + line.ljust(100), end="\n" if held_out or step == self.total_steps else "", flush=True)
        elif held_out or step % 10 == 0 or step == self.total_steps:
            print(line, flush=True)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
