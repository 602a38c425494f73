"""`python -m eva_jax.grpo --init=DIR --data=FILE.jsonl [--config=NAME] [--reward=exact[:W],...] [--workdir=DIR]
[--set K=V ...]`

GRPO (DeepSeekMath §4.1, DeepSeek-V3 §5.2.2) from the weights in DIR (a training workdir or a Hugging Face
checkpoint directory) on the prompts of FILE (JSON Lines: {"prompt": ..., "answer": ...} or GSM8K's
{"question": ..., "answer": "... #### N"}): G completions per prompt from the engine, rule-based rewards,
group-normalised advantages, the clipped ratio and a k3 KL to the frozen --init weights. Settings are the
grpo.* config keys (grpo.group_size, grpo.clip_eps, grpo.kl_beta, grpo.inner_steps, ...). Re-running the same
command resumes exactly.
"""

from __future__ import annotations

import argparse
import sys

from eva_jax.api import load_config
from eva_jax.infer.loading import CheckpointNotFound
from eva_jax.overrides import parse_sets
from eva_jax.post.grpo import DEFAULT_REWARD, GRPOResult, grpo
from eva_jax.train.outcome import finish, use_compile_cache
from eva_jax.train.run_dir import finished_steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eva_jax.grpo", description=__doc__.split("\n\n")[1])
    parser.add_argument("--init", required=True, help="the weights to start from (and the KL reference): a "
                                                      "training workdir or a Hugging Face checkpoint directory")
    parser.add_argument("--data", required=True, help="prompts with answers, one JSON object per line")
    parser.add_argument("--config", default=None, help="a name from configs/ for everything but the model "
                                                       "(default: the config --init holds)")
    parser.add_argument("--reward", action="append", default=None, metavar="NAME[:WEIGHT],...",
                        help="exact, format or a dotted path module.function(completion, answer) -> float; "
                             f"repeatable or comma-separated (default {DEFAULT_REWARD})")
    parser.add_argument("--workdir", default=None, help="run directory (default workdirs/<config>_grpo)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    args = parser.parse_args(argv)
    use_compile_cache()
    results: list[GRPOResult] = []

    def train() -> GRPOResult:
        config = load_config(args.config) if args.config else None
        results.append(grpo(args.init, args.data, config, parse_sets(args.set), args.workdir,
                            args.reward or DEFAULT_REWARD))
        return results[-1]

    return finish(train, lambda: finished_steps(results[-1].workdir), errors=(CheckpointNotFound,))


if __name__ == "__main__":
    sys.exit(main())
