"""What every task is given: the model, its tokenizer, the run's settings, one shared Scorer."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from eva_jax.config import Config
from eva_jax.data.tokenizer import Tokenizer
from eva_jax.eval.loglik import Scorer
from eva_jax.eval.progress import Progress


@dataclasses.dataclass
class EvalContext:
    cfg: Config
    params: Any
    tokenizer: Tokenizer
    batch: int = 8  # rows per forward, and requests decoded together
    limit: int | None = None  # examples per task (per subject for MMLU); None = all
    shots: int | None = None  # None = each task's default
    max_length: int | None = None  # tokens per forward; None = the model's max_position_embeddings
    seed: int = 0
    data: dict[str, str | None] = dataclasses.field(default_factory=dict)  # task name -> path given on the CLI
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # task-specific settings (see __main__)
    log_samples: bool = False  # keep each example's prompt, output and score in the results
    show_progress: bool = True

    @functools.cached_property
    def scorer(self) -> Scorer:
        return Scorer(self.cfg, self.params, batch_size=self.batch, max_length=self.max_length)

    def progress(self, total: int, desc: str) -> Progress:
        return Progress(total, desc, enabled=self.show_progress)

    def option(self, name: str, default: Any) -> Any:
        value = self.options.get(name)
        return default if value is None else value
