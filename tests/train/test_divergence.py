"""A run never loses its good state: non-finite steps are skipped and a diverged run stops with a sentence
(exit 3), every checkpoint it leaves is finite, inference refuses a planted non-finite checkpoint, and config
validation rejects rates no run can use."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eva_jax
from eva_jax.checkpoints import workdir as workdir_reader
from eva_jax.config import ConfigError
from eva_jax.infer.loading import load_checkpoint
from eva_jax.train import __main__ as train_cli
from eva_jax.train.checkpoint import RunCheckpoints
from eva_jax.train.divergence import Diverged
from eva_jax.train.loop import run

# One MoE and one dense layer, no MTP; one device's worth of rows (micro_batch 2 on 2 of the 8 devices).
RUN = {"train.steps": 2, "train.checkpoint_every": 1, "train.keep_checkpoints": 2, "train.eval_batches": 0,
       "train.seq_len": 32, "train.micro_batch": 2, "train.batch_start": 2, "train.global_batch": 2,
       "model.num_layers": 2, "model.num_mtp_layers": 0, "data.bpe_train_bytes": 20_000}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for i in range(40):
        (root / f"mod_{i}.py").write_text(f"def f_{i}(x):\n    return x * {i} + {i % 7}\n" * (3 + i % 5))
    return str(root)


def settings(corpus, **more):
    return {**RUN, "data.source": corpus, **more}


def all_finite(tree) -> bool:
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(x).dtype, np.inexact))


@pytest.mark.filterwarnings("ignore:train.micro_batch")
def test_a_diverging_run_stops_with_a_sentence_and_keeps_finite_checkpoints(corpus, tmp_path, capsys):
    good = run(eva_jax.load_config("v3_tiny", **settings(corpus)), tmp_path)
    assert [r["applied"] for r in good.history] == [True, True]
    # The same workdir continued with a learning rate no model survives (a schedule edit: allowed, warned).
    wild = settings(corpus, **{"train.steps": 12, "optim.lr_peak": 1e9, "optim.warmup_frac": 0.0})
    with pytest.warns(UserWarning), pytest.raises(Diverged) as err:
        run(eva_jax.load_config("v3_tiny", **wild), tmp_path)
    message = str(err.value)
    assert "not finite for 3 steps in a row (train.max_bad_steps=3)" in message
    assert "optim.lr_peak=1e+09" in message
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    applied = [r["applied"] for r in records]  # a huge but finite step may pass before the NaNs start
    assert applied[:2] == [True, True] and applied[-3:] == [False] * 3 and applied.count(False) == 3
    assert "skipped (1 in a row)" in capsys.readouterr().out
    # Every checkpoint left behind (the rotation kept 2) holds a finite state.
    checkpoints = RunCheckpoints(tmp_path / "checkpoints", 2)
    steps = checkpoints.manager.all_steps()
    assert steps and max(steps) >= 2
    for step in steps:
        state, _, _ = checkpoints.restore(step, good.state)
        assert all_finite(state.params) and all_finite(state.opt_state)
    checkpoints.close()
    # The CLI says it in one sentence and exits 3.
    argv = ["--config=v3_tiny", f"--workdir={tmp_path}", *[f"--set={k}={v}" for k, v in wild.items()]]
    assert train_cli.main(argv) == 3
    assert "error: step" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:train.micro_batch")
def test_inference_refuses_a_non_finite_checkpoint(corpus, tmp_path):
    cfg = eva_jax.load_config("v3_tiny", **settings(corpus, **{"train.steps": 1}))
    result = run(cfg, tmp_path)
    poisoned = result.state.replace(params=jax.tree.map(lambda x: x, result.state.params))
    poisoned.params["embed"] = poisoned.params["embed"].at[0, 0].set(jnp.nan)
    checkpoints = RunCheckpoints(tmp_path / "checkpoints", 3)
    checkpoints.save(2, poisoned, {}, {"step": 2}, None, cfg)
    checkpoints.close()
    with pytest.raises(workdir_reader.NonFinite, match=r"checkpoint step 2: 1 parameter arrays hold NaN"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("overrides, sentence", [
    ({"optim.lr_peak": "nan"}, "optim.lr_peak=nan must be a finite number > 0"),
    ({"optim.lr_peak": -1e-3}, "optim.lr_peak=-0.001 must be a finite number > 0"),
    ({"optim.lr_final": "inf"}, "optim.lr_final=inf must be a finite number >= 0"),
    ({"optim.b2": 1.0}, "optim.b2=1.0 must be in [0, 1)"),
    ({"train.bias_gamma": -0.1}, "train.bias_gamma=-0.1 must be a finite number >= 0"),
    ({"train.max_bad_steps": 0}, "train.max_bad_steps=0 must be positive"),
    ({"train.seq_len": 1024}, "train.seq_len=1024 exceeds model.max_position_embeddings=512"),
])
def test_rates_and_lengths_no_run_can_use_are_refused(overrides, sentence):
    with pytest.raises(ConfigError) as err:
        eva_jax.load_config("v3_tiny", **overrides)
    assert sentence in str(err.value)
