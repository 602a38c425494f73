"""`python -m eva_jax.sft --init=DIR --data=FILE.jsonl [--config=NAME] [--workdir=DIR] [--epochs=2] [--set K=V ...]`

Supervised fine-tuning of the weights in DIR (a training workdir or a Hugging Face checkpoint directory) on the
conversations of FILE (JSON Lines: {"messages": [...]} or {"prompt": ..., "completion": ...}), with DeepSeek-V3's
recipe: the chat template, loss on assistant tokens only, packed samples that never see each other, 2 epochs
with the learning rate a cosine from 5e-6 to 1e-6. Re-running the same command resumes exactly.
"""

from __future__ import annotations

import argparse
import sys

from eva_jax.api import load_config
from eva_jax.infer.loading import CheckpointNotFound
from eva_jax.overrides import parse_sets
from eva_jax.parallel import distributed
from eva_jax.post.sft import EPOCHS, sft
from eva_jax.train.loop import RunResult
from eva_jax.train.outcome import finish, use_compile_cache
from eva_jax.train.run_dir import finished_steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eva_jax.sft", description=__doc__.split("\n\n")[1])
    parser.add_argument("--init", required=True, help="the weights to start from: a training workdir or a "
                                                      "Hugging Face checkpoint directory")
    parser.add_argument("--data", required=True, help="conversations, one JSON object per line")
    parser.add_argument("--config", default=None, help="a name from configs/ for everything but the model "
                                                       "(default: the config --init holds)")
    parser.add_argument("--workdir", default=None, help="run directory (default workdirs/<config>_sft)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="passes over the data (default %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    args = parser.parse_args(argv)
    use_compile_cache()
    results: list[RunResult] = []

    def train() -> RunResult:
        distributed.initialize()
        config = load_config(args.config) if args.config else None
        results.append(sft(args.init, args.data, config, parse_sets(args.set), args.workdir, args.epochs))
        return results[-1]

    return finish(train, lambda: finished_steps(results[-1].workdir), errors=(CheckpointNotFound,))


if __name__ == "__main__":
    sys.exit(main())
