"""The training CLI's user-facing behaviour: refusing impossible runs clearly, plotting a run."""

import json

import pytest

from eva_jax.train import __main__ as train_cli
from eva_jax.train import plot


def test_v3_671b_without_dry_run_stops_at_once_naming_the_hardware(capsys):
    assert train_cli.main(["--config=v3_671b"]) == 2
    err = capsys.readouterr().err
    assert "671" in err and "--dry-run" in err and "TPU" in err


@pytest.mark.parametrize("args, message", [
    (["--config=v9"], "unknown config 'v9'"),
    (["--config=v3_tiny", "--set", "train.micro_batch=3"], "not a multiple of train.micro_batch=3"),
    (["--config=v3_tiny", "--set", "data.source=/nonexistent/*.txt"], "matched no documents"),
])
def test_bad_settings_get_a_sentence(args, message, capsys, tmp_path):
    assert train_cli.main([*args, f"--workdir={tmp_path}"]) == 2
    assert message in capsys.readouterr().err


def test_plot_renders_png(tmp_path):
    records = [{"step": i, "loss": 5 - i * 0.1, "mtp_loss": 5.2 - i * 0.1, "lr": 1e-3, "tokens": 1000 * i}
               for i in range(1, 6)]
    records[-1]["heldout_loss"] = 4.7
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = plot.render(tmp_path, tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert plot.main([str(tmp_path / "missing")]) == 2
