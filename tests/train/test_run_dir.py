"""The workdir is checked before any work: a file, a place that cannot be created and a read-only directory are
one sentence each; a finished run in a read-only workdir is "nothing to do" (exit 0). Read-only is real: the
check runs inside a bubblewrap namespace that mounts the filesystem read-only (root ignores permission bits)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eva_jax.config import ConfigError
from eva_jax.train.run_dir import PROBE, check_workdir, finished_steps

REPO = Path(__file__).resolve().parents[2]
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")


def _read_only(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run python `code` with every mount read-only."""
    cmd = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--chdir", str(REPO),
           sys.executable, "-c", code]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if "bwrap:" in done.stderr and "Operation not permitted" in done.stderr:
        pytest.skip(f"bubblewrap cannot create a namespace here: {done.stderr.strip()}")
    return done


def test_a_writable_workdir_is_created_and_left_clean(tmp_path):
    workdir = tmp_path / "a" / "run"
    assert check_workdir(workdir, steps=10) is True
    assert workdir.is_dir() and not list(workdir.glob(f"{PROBE}*"))


def test_a_file_as_workdir_is_one_sentence(tmp_path):
    (tmp_path / "run").write_text("")
    with pytest.raises(ConfigError, match=rf"the workdir {tmp_path / 'run'} is a file, not a directory"):
        check_workdir(tmp_path / "run", steps=10)


def test_finished_steps_reads_the_step_directories(tmp_path):
    assert finished_steps(tmp_path) == 0
    for step in ("4", "12", "tmp_99"):
        (tmp_path / "checkpoints" / step).mkdir(parents=True)
    assert finished_steps(tmp_path) == 12


@needs_bwrap
def test_read_only_workdir_and_place_that_cannot_be_created(tmp_path):
    (tmp_path / "run").mkdir()
    code = ("from pathlib import Path\nfrom eva_jax.config import ConfigError\nfrom eva_jax.train.run_dir import "
            "check_workdir\nfor p in ['run', 'new/run']:\n    try:\n        check_workdir(Path(%r) / p, 10)\n"
            "    except ConfigError as e:\n        print(e)\n") % str(tmp_path)
    done = _read_only(code, tmp_path)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 2, done.stderr
    assert lines[0].startswith(f"the workdir {tmp_path / 'run'} is not writable (Read-only file system)")
    assert lines[1].startswith(f"cannot create the workdir {tmp_path / 'new/run'}: Read-only file system")


@needs_bwrap
def test_a_finished_run_in_a_read_only_workdir_has_nothing_to_do(tmp_path):
    (tmp_path / "checkpoints" / "5").mkdir(parents=True)  # what a finished 5-step run leaves (for this check)
    code = ("import sys\nfrom eva_jax.train.__main__ import main\nsys.exit(main(['--config=v3_tiny', "
            "'--workdir=%s', '--set', 'train.steps=5']))") % tmp_path
    done = _read_only(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"nothing to do: {tmp_path} already holds all 5 steps" in done.stdout
