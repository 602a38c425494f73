"""The short version of benchmarks/grpo_learning.py: GRPO moves a policy toward its reward. From the tiny random
model, with a dense reward a random policy already earns a little of (the share of digits in the completion,
tests/post/rewards_for_tests.py), a few GRPO steps raise the mean held-out reward — prompts GRPO never trained
on, 8 samples each at the rollout temperature — while the KL to the reference stays small."""

import jax

from eva_jax.infer.loading import load_checkpoint
from eva_jax.post.grpo import grpo, grpo_config
from eva_jax.post.grpo_data import read_prompts, split
from eva_jax.post.grpo_rollout import heldout_scores
from eva_jax.post.rewards import Rewards
from tests.post.conftest import sums, write_jsonl

REWARD = "tests.post.rewards_for_tests.digits"
SETS = {"grpo.prompts": 4, "grpo.group_size": 8, "grpo.max_new_tokens": 6, "grpo.heldout_prompts": 8,
        "grpo.heldout_samples": 8, "train.steps": 12, "train.seq_len": 40, "train.micro_batch": 16,
        "train.eval_every": 12, "train.checkpoint_every": 1000, "optim.lr_peak": 1e-3, "optim.lr_decayed": 1e-3,
        "optim.lr_final": 1e-3}


def test_grpo_raises_the_held_out_reward(hf_init, tmp_path):
    rows = [{"prompt": r["prompt"], "answer": r["completion"].split("####")[-1].strip()} for r in sums(40, 9)]
    data = write_jsonl(tmp_path / "prompts.jsonl", rows)
    cfg0, params, tokenizer = load_checkpoint(hf_init)
    cfg = grpo_config(cfg0, {**SETS, "data.source": data})
    rewards = Rewards.parse(REWARD)
    _, held = split(read_prompts(data, tokenizer, cfg), 8, cfg.data.seed)
    before = heldout_scores(cfg, jax.device_put(params), tokenizer, held, rewards)["heldout_reward"]
    result = grpo(hf_init, data, sets=SETS, workdir=tmp_path / "run", rewards=REWARD)
    after = result.history[-1]["heldout_reward"]
    print(f"held-out digits reward {before:.3f} -> {after:.3f}; kl {[round(r['kl'], 4) for r in result.history]}")
    assert after > before + 0.02, (before, after)  # measured: 0.218 -> 0.257
    assert max(r["kl"] for r in result.history) < 1.0
