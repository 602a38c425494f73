"""`python -m eva_jax.describe [--config=NAME] [--set key=value ...] [--forward]`

Prints a config's parameter accounting (from abstract shapes: nothing is allocated, so v3_671b works on a
laptop) and, with --forward (the default for configs under 1B parameters), runs the model once on a random
batch and reports the loss of the untrained model next to ln(vocab).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from eva_jax.api import init_params, load_config
from eva_jax.api import logits as model_logits
from eva_jax.config import ConfigError
from eva_jax.counts import param_counts
from eva_jax.overrides import parse_sets

FORWARD_LIMIT = 1_000_000_000


def forward_report(cfg, batch: int, seq: int) -> str:
    params = init_params(cfg, seed=0)
    tokens = np.random.default_rng(0).integers(0, cfg.model.vocab_size, (batch, seq))
    start = time.perf_counter()
    logits = jax.block_until_ready(model_logits(cfg, params, tokens))
    first = time.perf_counter() - start
    start = time.perf_counter()
    logits = jax.block_until_ready(model_logits(cfg, params, tokens))
    steady = time.perf_counter() - start
    logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
    loss = -jnp.take_along_axis(logp, jnp.asarray(tokens[:, 1:, None]), -1).mean()
    return (f"forward [{batch}, {seq}] -> logits {tuple(logits.shape)} {logits.dtype}; "
            f"compile+run {first:.1f}s, run {steady * 1e3:.0f} ms; "
            f"untrained loss {float(loss):.3f} (ln V = {math.log(cfg.model.vocab_size):.3f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eva_jax.describe", description=__doc__.split("\n\n")[1])
    parser.add_argument("--config", default="v3_small", help="a name from configs/ (default v3_small)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="dotted override")
    parser.add_argument("--forward", action=argparse.BooleanOptionalAction, default=None,
                        help="run one forward pass (default: on for configs under 1B parameters)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args(argv)

    try:
        cfg = load_config(args.config, **parse_sets(args.set))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = param_counts(cfg)
    print(f"config {cfg.name}: {cfg.model.num_layers} layers ({cfg.model.first_k_dense_replace} dense), "
          f"{cfg.model.n_routed_experts} routed experts, top-{cfg.model.num_experts_per_tok}, "
          f"{cfg.model.num_mtp_layers} MTP module(s)")
    print(f"parameters (main model): {counts['total']:,} ({counts['total'] / 1e9:.2f}B)")
    print(f"activated per token:     {counts['activated']:,} ({counts['activated'] / 1e9:.2f}B)")
    print(f"MTP modules:             {counts['mtp']:,} ({counts['mtp'] / 1e9:.2f}B)")
    run_forward = args.forward if args.forward is not None else counts["total"] + counts["mtp"] < FORWARD_LIMIT
    if run_forward:
        print(forward_report(cfg, args.batch, args.seq))
    return 0


if __name__ == "__main__":
    sys.exit(main())
