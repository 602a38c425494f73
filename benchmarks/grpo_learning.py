"""GRPO learns, on 2 CPU cores in minutes: a tiny DeepSeek-V3 (v3_tiny, 2 layers, fp32) with a BPE trained on the
task is fine-tuned (SFT, `eva_jax.post.sft`) on the synthetic sums task of `eva_jax.post.synthetic`, then GRPO
(`eva_jax.post.grpo`, reward `exact`) raises the policy's mean exact-match reward on held-out prompts — prompts
GRPO never trains on — with the KL to the SFT model bounded. The held-out reward is the mean over 8 samples per
prompt at the rollout temperature (the policy's expected reward, what GRPO maximises); the greedy answer's
accuracy is reported next to it. Writes docs/grpo_learning.png and a section of docs/performance.md.

    python benchmarks/grpo_learning.py [--steps 80] [--lr 1e-3] [--sft-epochs 12] [--out /tmp/grpo_learning]

`run(...)` is also the short version in tests/post/test_grpo_learning.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

import eva_jax  # noqa: E402
from eva_jax.data.tokenizer import train_bpe  # noqa: E402
from eva_jax.infer.loading import load_checkpoint  # noqa: E402
from eva_jax.overrides import apply_overrides  # noqa: E402
from eva_jax.post import synthetic  # noqa: E402
from eva_jax.post.grpo import grpo, grpo_config  # noqa: E402
from eva_jax.post.grpo_data import read_prompts, split  # noqa: E402
from eva_jax.post.grpo_rollout import heldout_scores  # noqa: E402
from eva_jax.post.rewards import Rewards  # noqa: E402
from eva_jax.post.sft import sft  # noqa: E402

MODEL = {"model.vocab_size": 320, "model.num_layers": 2, "compute.dtype": "float32", "model.remat_policy": "none"}
HELDOUT = 20


@dataclasses.dataclass
class Outcome:
    before: dict  # held-out rewards of the SFT model: sampled ("heldout_reward") and greedy
    after: dict
    history: list[dict]
    seconds: dict


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def grpo_sets(steps: int, lr: float) -> dict:
    return {"grpo.prompts": 8, "grpo.group_size": 8, "grpo.max_new_tokens": 4, "grpo.heldout_prompts": HELDOUT,
            "grpo.heldout_samples": 8, "grpo.kl_beta": 0.04, "train.seq_len": 32, "train.micro_batch": 16,
            "train.steps": steps, "train.eval_every": 10, "train.checkpoint_every": 1000,
            "optim.lr_peak": lr, "optim.lr_decayed": lr, "optim.lr_final": lr}


def _scores(cfg, params, tokenizer, held, rewards) -> dict:
    sampled = heldout_scores(cfg, params, tokenizer, held, rewards)["heldout_reward"]
    greedy_cfg = apply_overrides(cfg, {"grpo.heldout_samples": 1})
    greedy = heldout_scores(greedy_cfg, params, tokenizer, held, rewards)["heldout_reward"]
    return {"sampled": sampled, "greedy": greedy}


def run(out: Path, sft_epochs: int, steps: int, lr: float) -> Outcome:
    """SFT from a random init, then GRPO; everything under `out` (cleared first)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    began = time.perf_counter()
    pairs = synthetic.problems(100, 0)
    tokenizer = train_bpe(synthetic.corpus(pairs) + ["system user assistant"] * 5, 320, "sums")
    cfg = eva_jax.load_config("v3_tiny", **MODEL)
    init = eva_jax.to_hf(cfg, eva_jax.init_params(cfg, 0), out / "init", dtype="float32")
    tokenizer.save(init)
    sft_data = _write(out / "sft.jsonl", synthetic.sft_rows(pairs, 8, 1.0, 0))
    sft(init, sft_data, sets={"train.seq_len": 32, "train.micro_batch": 8, "train.global_batch": 8,
                              "optim.lr_peak": 3e-3, "optim.lr_decayed": 3e-4, "data.heldout_fraction": 0.01,
                              "train.checkpoint_every": 100_000, "train.eval_every": 100_000},
        workdir=out / "sft", epochs=sft_epochs)
    sft_s = time.perf_counter() - began
    prompts_file = _write(out / "prompts.jsonl", synthetic.prompts(pairs))
    sets = grpo_sets(steps, lr)
    sft_cfg, sft_params, tok = load_checkpoint(out / "sft")
    cfg = grpo_config(sft_cfg, {**sets, "data.source": str(prompts_file)})
    rewards = Rewards.parse("exact")
    _, held = split(read_prompts(prompts_file, tok, cfg), HELDOUT, cfg.data.seed)
    before = _scores(cfg, jax.device_put(sft_params), tok, held, rewards)
    result = grpo(out / "sft", prompts_file, sets=sets, workdir=out / "grpo")
    after = _scores(cfg, result.state.params, tok, held, rewards)
    seconds = {"sft": sft_s, "grpo": time.perf_counter() - began - sft_s}
    return Outcome(before, after, result.history, seconds)


def plot(outcome: Outcome, png: Path) -> Path:
    # local import: matplotlib only for the figure; Agg before pyplot
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # local import: after matplotlib.use("Agg")

    h = outcome.history
    fig, (ax, ax_kl) = plt.subplots(2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([r["step"] for r in h], [r["reward_mean"] for r in h], lw=1, alpha=0.6, label="rollout reward (train)")
    evals = [(0, outcome.before["sampled"])] + [(r["step"], r["heldout_reward"]) for r in h if "heldout_reward" in r]
    ax.plot(*zip(*evals), "o-", label="held-out reward (8 samples/prompt)")
    ax.set_ylabel("exact-match reward")
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("GRPO on the synthetic sums task (v3_tiny, 2 layers)")
    ax_kl.plot([r["step"] for r in h], [r["kl"] for r in h], lw=1, color="tab:red")
    ax_kl.set_ylabel("KL to ref (k3)")
    ax_kl.set_xlabel("GRPO step (8 prompts × 8 completions)")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--sft-epochs", type=int, default=12)
    parser.add_argument("--out", default="/tmp/grpo_learning")
    args = parser.parse_args()
    outcome = run(Path(args.out), args.sft_epochs, args.steps, args.lr)
    png = plot(outcome, ROOT / "docs" / "grpo_learning.png")
    kl = [r["kl"] for r in outcome.history]
    from benchmarks.report import append_section

    b, a = outcome.before, outcome.after
    append_section("GRPO learning on the synthetic sums task", [
        "| | held-out reward, 8 samples/prompt | held-out greedy accuracy |", "|---|---|---|",
        f"| SFT model (GRPO's start and reference) | {b['sampled']:.3f} | {b['greedy']:.3f} |",
        f"| after {args.steps} GRPO steps | {a['sampled']:.3f} | {a['greedy']:.3f} |",
        "", f"Gain {a['sampled'] - b['sampled']:+.3f} absolute on {HELDOUT} held-out prompts; KL to the reference "
        f"max {max(kl):.4f}, last {kl[-1]:.4f}; lr {args.lr:g}, β 0.04, ε 0.2, G 8, 8 prompts per step. "
        f"SFT {outcome.seconds['sft']:.0f} s, GRPO {outcome.seconds['grpo']:.0f} s (compilation included). "
        f"Curve: `{png.relative_to(ROOT)}`."])


if __name__ == "__main__":
    main()
