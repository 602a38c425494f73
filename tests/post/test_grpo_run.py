"""GRPO end to end on the tiny model: the engine's log-probabilities of the sampled tokens equal the trainer's
(fp32, 1e-4 relative), every metric is logged, the reference never changes while the policy does, losing the
newest checkpoints and re-running reproduces the run exactly, and bad input is one error line."""

import json
import shutil

import jax
import numpy as np
import pytest

from eva_jax.grpo import main
from eva_jax.infer.loading import load_checkpoint
from eva_jax.parallel.mesh import make_mesh
from eva_jax.post.grpo import grpo, grpo_config
from eva_jax.post.grpo_data import read_prompts
from eva_jax.post.grpo_rollout import rollout
from eva_jax.post.grpo_step import rows_logprobs
from eva_jax.post.rewards import Rewards
from tests.post.conftest import sums, write_jsonl

SETS = {"grpo.prompts": 2, "grpo.group_size": 4, "grpo.max_new_tokens": 8, "grpo.temperature": 0.8,
        "grpo.inner_steps": 2, "grpo.heldout_prompts": 4, "train.steps": 4, "train.seq_len": 40,
        "train.micro_batch": 4, "train.checkpoint_every": 1, "train.eval_every": 2, "optim.lr_peak": 3e-3,
        "optim.lr_decayed": 3e-3, "optim.lr_final": 3e-3}
REWARD = "exact,tests.post.rewards_for_tests.digits:0.5"
TIMING = ("tokens_per_s", "rollout_s", "train_s", "elapsed_s")


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    rows = [{"prompt": r["prompt"], "answer": r["completion"].split("####")[-1].strip()} for r in sums(24, 5)]
    return write_jsonl(tmp_path_factory.mktemp("grpo") / "prompts.jsonl", rows)


@pytest.fixture(scope="module")
def finished(hf_init, prompts_file, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("grpo_run") / "run"
    result = grpo(hf_init, prompts_file, sets=SETS, workdir=workdir, rewards=REWARD)
    return result, jax.tree_util.tree_map(np.asarray, result.state.params)


def test_engine_log_probabilities_equal_the_trainers(hf_init, prompts_file):
    init_cfg, params, tokenizer = load_checkpoint(hf_init)
    cfg = grpo_config(init_cfg, SETS)
    prompts = read_prompts(prompts_file, tokenizer, cfg)[:2]
    params = jax.jit(lambda p: p)(params)
    ro = rollout(cfg, params, tokenizer, prompts, Rewards.parse(REWARD), step=0)
    trainer = rows_logprobs(params, ro.rows, cfg, make_mesh(cfg.mesh, jax.devices()[:1]))
    mask = ro.rows["mask"] > 0
    assert mask.sum() == ro.lengths.sum() >= 8
    engine = ro.rows["behaviour_logp"][mask]
    np.testing.assert_allclose(trainer[mask], engine, rtol=1e-4, atol=1e-6)
    assert len({tuple(r) for r in ro.rows["targets"]}) > 1  # the group's samples differ


def test_a_run_logs_every_metric_and_keeps_its_reference(finished, hf_init):
    result, _ = finished
    _, init_params, _ = load_checkpoint(hf_init)
    for got, want in zip(jax.tree_util.tree_leaves(result.reference), jax.tree_util.tree_leaves(init_params)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    moved = [float(np.abs(np.asarray(a) - np.asarray(b)).max())
             for a, b in zip(jax.tree_util.tree_leaves(result.state.params), jax.tree_util.tree_leaves(init_params))]
    assert max(moved) > 1e-4
    history = result.history
    keys = {"loss", "reward_mean", "reward_std", "reward_exact", "reward_tests.post.rewards_for_tests.digits", "kl",
            "clip_fraction", "entropy", "response_length", "tokens_per_s", "logprob_mismatch_rel",
            "importance_weight", "grad_norm"}
    assert [r["step"] for r in history] == [1, 2, 3, 4] and all(keys <= set(r) for r in history)
    assert "heldout_reward" in history[1] and "heldout_reward" in history[3] and "heldout_reward" not in history[0]
    assert all(r["applied"] and r["logprob_mismatch_rel"] <= 1e-4 for r in history)
    assert history[-1]["kl"] > 0 and max(r["clip_fraction"] for r in history) > 0  # μ = 2: the second step clips
    lines = [json.loads(s) for s in (result.workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]


def test_losing_the_newest_checkpoints_and_rerunning_is_exact(finished, hf_init, prompts_file):
    result, params = finished
    for step in (3, 4):
        shutil.rmtree(result.workdir / "checkpoints" / str(step))
    again = grpo(hf_init, prompts_file, sets=SETS, workdir=result.workdir, rewards=REWARD)
    assert [r["step"] for r in again.history] == [3, 4]
    for got, want in zip(again.history, result.history[2:]):
        assert {k: v for k, v in got.items() if k not in TIMING} == {k: v for k, v in want.items() if k not in TIMING}
    for got, want in zip(jax.tree_util.tree_leaves(again.state.params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(got), want)
    lines = [json.loads(s) for s in (result.workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3, 4]


@pytest.mark.parametrize("args,message", [
    (["--reward=exactly"], "no such reward"),
    (["--set", "grpo.group_size=1"], "grpo.group_size=1 must be at least 2"),
    (["--set", "grpo.prompts=3", "--set", "train.micro_batch=5"], "24 rows does not split into micro-batches of "
                                                                  "train.micro_batch=5"),
    (["--set", "grpo.heldout_prompts=30"], "grpo.heldout_prompts=30 leaves none of the 24 prompts"),
])
def test_bad_input_is_one_error_line(hf_init, prompts_file, tmp_path, capsys, args, message):
    rc = main(["--init", str(hf_init), "--data", prompts_file, "--workdir", str(tmp_path / "w"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_a_bad_prompt_line_is_named(hf_init, tmp_path, capsys):
    data = tmp_path / "p.jsonl"
    data.write_text('{"prompt": "What is 1 + 2?", "answer": "3"}\n{"prompt": "What is 2 + 2?"}\n')
    rc = main(["--init", str(hf_init), "--data", str(data), "--workdir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert rc == 2 and "p.jsonl:2" in err and "answer" in err
