"""Stopping a run that has diverged: the train step skips a step whose loss, gradient norm or updated
parameters are not finite (eva_jax/train/step.py); this counts the skips in a row and stops the run after
`train.max_bad_steps` of them, with a sentence naming the step, what was not finite and the last good
checkpoint."""

from __future__ import annotations

import math

from eva_jax.config import Config


class Diverged(RuntimeError):
    """The run stopped because its steps kept producing non-finite values."""


class BadSteps:
    def __init__(self, cfg: Config) -> None:
        self.cfg, self.in_row = cfg, 0

    def observe(self, record: dict, last_checkpoint: int | None) -> str | None:
        """A warning line for a skipped step (None for an applied one); raises Diverged after too many."""
        if record["applied"]:
            self.in_row = 0
            return None
        self.in_row += 1
        what = ", ".join(f"{name} {record[name]}" for name in ("loss", "grad_norm") if not math.isfinite(record[name]))
        what = what or "the updated parameters"
        if self.in_row < self.cfg.train.max_bad_steps:
            return f"step {record['step']}: {what} not finite; the step was skipped ({self.in_row} in a row)"
        saved = (f"the newest checkpoint (step {last_checkpoint}) is finite" if last_checkpoint
                 else "no checkpoint was written")
        raise Diverged(
            f"step {record['step']}: {what} not finite for {self.in_row} steps in a row (train.max_bad_steps="
            f"{self.cfg.train.max_bad_steps}); the run diverged and stopped, {saved}. The usual cause is a "
            f"learning rate too high for this model and batch (optim.lr_peak={self.cfg.optim.lr_peak:g}); lower "
            f"it or raise optim.warmup_frac, then resume.")
