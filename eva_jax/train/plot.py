"""`python -m eva_jax.train.plot WORKDIR [--out PNG]`: the loss curves of a run (training, MTP, held-out) and its
learning rate, rendered from WORKDIR/metrics.jsonl."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_metrics(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; train first with python -m eva_jax.train --workdir={workdir}")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def render(workdir: Path, out: Path) -> Path:
    # local import: matplotlib is heavy and only plotting needs it; the Agg backend must be chosen before pyplot
    # is imported.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # local import: after matplotlib.use("Agg") above

    records = read_metrics(workdir)
    tokens = [r["tokens"] / 1e6 for r in records]
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot(tokens, [r["loss"] for r in records], label="train loss", lw=1)
    ax.plot(tokens, [r["mtp_loss"] for r in records], label="MTP loss (mean over depths)", lw=1, alpha=0.7)
    held = [(r["tokens"] / 1e6, r["heldout_loss"]) for r in records if "heldout_loss" in r]
    if held:
        ax.plot(*zip(*held), "o-", label="held-out loss", ms=3)
    ax.set_ylabel("cross-entropy (nats)")
    ax.set_title(f"{workdir.name}: {records[-1]['step']} steps")
    ax.grid(alpha=0.3)
    ax.legend()
    ax_lr.plot(tokens, [r["lr"] for r in records], color="gray")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("tokens (millions)")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eva_jax.train.plot", description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default WORKDIR/loss_curves.png)")
    args = parser.parse_args(argv)
    try:
        out = render(args.workdir, args.out or args.workdir / "loss_curves.png")
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
