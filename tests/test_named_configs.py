"""Every named config runs its own CLI with no overrides, as a new user would try it: v3_tiny trains to the
end (and learns), v3_small opens its data and tokenizer, v2_lite's train step compiles in the dry run (it has
V2's softmax gate without a routing bias), v3_671b refuses this machine in one sentence and dry-runs (the
dry run itself is tests/parallel/test_rules.py's golden layout and the README's report)."""

import re
import subprocess
import sys

import pytest

import configs
import eva_jax
from eva_jax.data.pipeline import open_data
from eva_jax.train import __main__ as train_cli
from eva_jax.train.dry_run import default_devices, dry_run, fits_devices
from eva_jax.train.guard import TooLarge, ensure_fits


def test_the_named_configs_are_the_ones_tested_here():
    assert sorted(configs.available()) == ["v2_lite", "v3_671b", "v3_small", "v3_tiny"]


def test_v3_tiny_trains_to_its_end_with_no_overrides(tmp_path):
    done = subprocess.run([sys.executable, "-m", "eva_jax.train", "--config=v3_tiny", f"--workdir={tmp_path}"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = eva_jax.load_config("v3_tiny")
    assert f"done: step {cfg.train.steps}" in done.stdout
    heldout = [float(v) for v in re.findall(r"held-out ([\d.]+)", done.stdout)]
    assert len(heldout) == cfg.train.steps // cfg.train.eval_every
    assert heldout[-1] < heldout[0] - 0.2, done.stdout  # 6.04 -> 5.30 nats when measured


def test_v3_small_opens_its_data_and_fits_this_machine(tmp_path):
    cfg = eva_jax.load_config("v3_small")
    ensure_fits(cfg)
    tokenizer, train, _ = open_data(cfg, tmp_path, 0, 1)
    assert tokenizer.vocab_size == cfg.model.vocab_size
    batch = next(iter(train))
    assert batch["tokens"].shape == (cfg.train.micro_batch, cfg.train.seq_len + 1)
    assert int(batch["tokens"].max()) < cfg.model.vocab_size


def test_v2_lite_train_step_compiles_with_no_overrides():
    cfg = eva_jax.load_config("v2_lite")
    assert not cfg.model.uses_routing_bias and cfg.train.bias_update  # the bias update must skip, not fail
    devices = default_devices(cfg)
    assert fits_devices(cfg, devices) is None and devices == cfg.train.micro_batch
    report = dry_run(cfg)
    assert "dry run: v2_lite on mesh data=4 (4 simulated devices)" in report
    assert "15.7B total / 2.7B activated" in report


@pytest.mark.parametrize("name", ["v2_lite", "v3_671b"])
def test_configs_beyond_this_machine_refuse_in_one_sentence(name, capsys):
    with pytest.raises(TooLarge):
        ensure_fits(eva_jax.load_config(name))
    assert train_cli.main([f"--config={name}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config ") and "--dry-run" in err and "Traceback" not in err


def test_a_dry_run_that_cannot_lay_out_the_batch_says_so(capsys):
    assert train_cli.main(["--config=v3_small", "--dry-run", "--devices=8"]) == 2
    assert "train.micro_batch=4 sequences cannot split over the 8 data-parallel devices" in capsys.readouterr().err
