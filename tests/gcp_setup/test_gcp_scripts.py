"""gcp-setup/scripts: shellcheck-clean, strict mode, --help, a clear message
for a missing variable, and --dry-run output that matches the golden files.

Regenerate the goldens after an intended change with
    UPDATE_GOLDEN=1 pytest tests/gcp_setup
and review the diff like any other code change."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time

import pytest

from .helpers import GOLDEN, SCRIPT_FILES, SCRIPTS, env_file, run_script

RUNNABLE = [p.name for p in SCRIPT_FILES if p.name != "lib.sh"]
# Scripts whose every input has a default (they run on the dev VM itself).
NO_REQUIRED_VARS = {"dev-services.sh", "idle-check.sh"}
IDLE_INPUTS = {"EVA_IDLE_NOW": "1700000000", "EVA_IDLE_CONNECTIONS": "0", "EVA_IDLE_LOAD": "0.01",
               "EVA_IDLE_STATE_DIR": "/nonexistent/eva-idle"}

# (golden name, script, env file, extra args, extra environment)
CASES = [
    ("provision--dev", "provision.sh", "dev", ["--write-env", "/tmp/eva-dev.env"], {}),
    ("provision--v5p-128", "provision.sh", "v5p-128", ["--yes"], {}),
    ("teardown--v5p-128-tpu", "teardown.sh", "v5p-128", ["--only", "tpu"], {}),
    ("teardown--dev", "teardown.sh", "dev", [], {}),
    ("bootstrap-host--dev", "bootstrap-host.sh", "dev", ["--keep-checkout", "--owner", "eva"], {}),
    ("bootstrap-host--v5p-128", "bootstrap-host.sh", "v5p-128", ["--accelerator", "tpu"], {}),
    ("dev-services--dev", "dev-services.sh", "dev", [], {}),
    ("idle-check--dev", "idle-check.sh", "dev", [], IDLE_INPUTS),
    ("tpu-bootstrap--v5p-128", "tpu-bootstrap.sh", "v5p-128", [], {}),
    ("launch-tpu-train--v5p-128", "launch-tpu-train.sh", "v5p-128", [], {}),
    # 32 hosts: two batches of 16.
    ("launch-tpu-train--v5p-256-batched", "launch-tpu-train.sh", "v5p-128", ["--set", "train.steps=10"],
     {"EVA_TPU_ACCELERATOR": "v5p-256", "EVA_TPU_TOPOLOGY": "4x4x8", "EVA_TRAIN_SETS": "mesh.data=8 mesh.expert=16"}),
    ("gke-install-jobset--v6e-256", "gke-install-jobset.sh", "v6e-256", [], {}),
    ("gke-submit--v6e-256", "gke-submit.sh", "v6e-256", [], {}),
    ("gke-submit--h200-16", "gke-submit.sh", "h200-16", [], {}),
    ("status--dev", "status.sh", "dev", [], {}),
    ("status--v5p-128", "status.sh", "v5p-128", [], {}),
    ("status--v6e-256", "status.sh", "v6e-256", [], {}),
    ("logs--v5p-128", "logs.sh", "v5p-128", ["--follow"], {}),
    ("logs--h200-16", "logs.sh", "h200-16", ["--worker", "1", "--lines", "50"], {}),
    ("stop--dev", "stop.sh", "dev", [], {}),
    ("stop--v5p-128", "stop.sh", "v5p-128", [], {}),
    ("stop--h200-16", "stop.sh", "h200-16", [], {}),
]


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed (apt-get install shellcheck)")
def test_shellcheck_passes():
    proc = subprocess.run(["shellcheck", "--external-sources", *map(str, SCRIPT_FILES)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", RUNNABLE)
def test_strict_mode_and_shared_lib(name):
    text = (SCRIPTS / name).read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert 'source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"' in text
    assert os.access(SCRIPTS / name, os.X_OK), f"{name} is not executable"


@pytest.mark.parametrize("name", RUNNABLE)
def test_help(name):
    proc = run_script(name, "--help", dry_run=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: ")
    assert "--dry-run" in proc.stdout and "--env-file" in proc.stdout


@pytest.mark.parametrize("name", [n for n in RUNNABLE if n not in NO_REQUIRED_VARS])
def test_missing_required_variable_is_named(name):
    proc = run_script(name)  # --dry-run, no env file, empty environment
    assert proc.returncode != 0
    assert re.search(r"^error: missing required variable EVA_[A-Z0-9_]+ \(set it in the --env-file",
                     proc.stderr, re.M), proc.stderr


@pytest.mark.parametrize("name", RUNNABLE)
def test_unknown_option_fails(name):
    proc = run_script(name, "--no-such-option")
    assert proc.returncode != 0 and "unknown option: --no-such-option" in proc.stderr


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_dry_run_matches_golden(case):
    golden_name, script, env, args, extra_env = case
    proc = run_script(script, *args, env=extra_env, env_name=env)
    assert proc.returncode == 0, proc.stderr
    golden = GOLDEN / f"{golden_name}.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(proc.stdout)
    assert golden.exists(), f"missing {golden}; run with UPDATE_GOLDEN=1"
    assert proc.stdout == golden.read_text()


def test_every_script_has_a_golden_case():
    assert {c[1] for c in CASES} == set(RUNNABLE)


def test_no_stale_goldens():
    assert {p.stem for p in GOLDEN.glob("*.txt")} == {c[0] for c in CASES}


def _commands(stdout: str) -> list[list[str]]:
    return [shlex.split(line) for line in stdout.splitlines() if line.startswith("gcloud ")]


def test_launch_kills_stale_runs_then_starts_the_same_command_everywhere():
    ev = env_file("v5p-128")
    kill, start = _commands(run_script("launch-tpu-train.sh", env_name="v5p-128").stdout)
    for cmd in (kill, start):
        assert cmd[:6] == ["gcloud", "alpha", "compute", "tpus", "tpu-vm", "ssh"]
        assert "--worker=all" in cmd and "--tunnel-through-iap" in cmd
    kill_cmd = next(a for a in kill if a.startswith("--command="))
    start_cmd = next(a for a in start if a.startswith("--command="))
    assert "pkill" in kill_cmd and "libtpu_lockfile" in kill_cmd and "pkill" not in start_cmd
    expected = (f"python -m eva_jax.train --config={ev['EVA_CONFIG']} "
                f"--workdir=gs://{ev['EVA_BUCKET']}/runs/{ev['EVA_RUN_NAME']} --set mesh.data=4 --set mesh.expert=16")
    assert expected in start_cmd


def test_started_run_detaches_from_the_ssh_session(tmp_path):
    """Run the launcher's real remote start command locally against a stub
    python that sleeps: the shell must return at once (or gcloud ssh would
    block for the whole run) while the stub keeps running."""
    start = _commands(run_script("launch-tpu-train.sh", env_name="v5p-128").stdout)[1]
    remote = next(a for a in start if a.startswith("--command=")).split("=", 1)[1]
    stub = tmp_path / "python"
    stub.write_text(f"#!/bin/sh\necho $$ > {tmp_path}/pid\nexec sleep 5\n")
    stub.chmod(0o755)
    remote = (remote.replace("sudo ", "").replace("/opt/conda/envs/eva/bin/python", str(stub))
              .replace("/opt/eva/src", str(tmp_path)).replace("/var/tmp/eva", str(tmp_path / "logs")))
    begin = time.monotonic()
    subprocess.run(f"bash -c {shlex.quote(remote)} | cat", shell=True, check=True, timeout=4)
    assert time.monotonic() - begin < 2.5
    for _ in range(50):
        if (tmp_path / "pid").exists() and (tmp_path / "pid").read_text().strip():
            break
        time.sleep(0.05)
    pid = int((tmp_path / "pid").read_text())
    os.kill(pid, 0)  # still alive
    os.kill(pid, signal.SIGTERM)


def test_stop_pattern_never_matches_its_own_shell():
    """pkill -f must kill training, not the remote shell that carries the
    pattern (and, in launch, the start command)."""
    kill_cmd = next(a for a in _commands(run_script("stop.sh", env_name="v5p-128").stdout)[0]
                    if a.startswith("--command="))
    pattern = re.search(r'pkill -TERM -f "([^"]+)"', kill_cmd).group(1)
    assert re.search(pattern, "/opt/conda/envs/eva/bin/python -m eva_jax.train --config=v3_671b")
    assert not re.search(pattern, kill_cmd)


@pytest.mark.parametrize("topology,hosts,batches", [("4x4x4", 16, ["all"]), ("4x4x8", 32, ["0-15", "16-31"]),
                                                   ("8x8x8", 128, [f"{i}-{i + 15}" for i in range(0, 128, 16)])])
def test_fan_out_is_batched_beyond_16_hosts(topology, hosts, batches):
    proc = run_script("stop.sh", env={"EVA_TPU_TOPOLOGY": topology}, env_name="v5p-128")
    workers = [a.split("=", 1)[1] for cmd in _commands(proc.stdout) for a in cmd if a.startswith("--worker=")]
    assert workers == batches
    proc = run_script("tpu-bootstrap.sh", env={"EVA_TPU_TOPOLOGY": topology}, env_name="v5p-128")
    assert f"{hosts} hosts" in proc.stderr


def test_internal_ssh_mode_uses_ga_gcloud():
    cmd = _commands(run_script("stop.sh", env={"EVA_SSH_MODE": "internal"}, env_name="v5p-128").stdout)[0]
    assert cmd[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] and "--internal-ip" in cmd


def test_environment_overrides_env_file():
    proc = run_script("tpu-bootstrap.sh", env={"EVA_GIT_REF": "feature-x"}, env_name="v5p-128")
    assert "--ref feature-x" in proc.stdout and "--ref main" not in proc.stdout


def test_bad_run_name_is_rejected():
    proc = run_script("launch-tpu-train.sh", "--run-name", "Bad_Name", env_name="v5p-128")
    assert proc.returncode != 0 and "EVA_RUN_NAME must match" in proc.stderr


@pytest.mark.parametrize("age_s,conns,load,uptime,expect", [
    (None, "0", "0.0", "99999", "touch"),        # first check: start the clock
    (600, "1", "0.0", "99999", "touch"),         # someone connected: still active
    (600, "0", "2.5", "99999", "touch"),         # busy CPU: still active
    (600, "0", "0.0", "99999", None),            # idle 10 of 30 minutes: nothing
    (1800, "0", "0.0", "99999", "systemctl poweroff"),
    (7200, "0", "0.0", "300", None),             # stale stamp from before a restart 5 min ago
])
def test_idle_check_decisions(tmp_path, age_s, conns, load, uptime, expect):
    now = 1_700_000_000
    stamp = tmp_path / "last-active"
    if age_s is not None:
        stamp.touch()
        os.utime(stamp, (now - age_s, now - age_s))
    proc = run_script("idle-check.sh", "--minutes", "30", env={
        "EVA_IDLE_NOW": str(now), "EVA_IDLE_CONNECTIONS": conns, "EVA_IDLE_LOAD": load,
        "EVA_IDLE_UPTIME": uptime, "EVA_IDLE_STATE_DIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    if expect is None:
        assert proc.stdout == ""
    else:
        assert expect in proc.stdout
        assert ("poweroff" in proc.stdout) == (expect == "systemctl poweroff")


def test_dry_run_prints_commands_that_parse():
    """Every golden line outside heredocs must be valid shell words."""
    for golden in GOLDEN.glob("*.txt"):
        in_heredoc = False
        for line in golden.read_text().splitlines():
            if in_heredoc:
                in_heredoc = line != "EOF"
                continue
            if line.startswith("cat > ") and line.endswith("<<'EOF'"):
                in_heredoc = True
                continue
            shlex.split(line)


# Scripts whose external commands all go through lib.sh's run(): executing
# them against recording stubs must run exactly what --dry-run printed.
REAL_MODE_CASES = [c for c in CASES if c[1] in {
    "status.sh", "stop.sh", "logs.sh", "launch-tpu-train.sh", "tpu-bootstrap.sh",
    "gke-install-jobset.sh", "teardown.sh"}] + [c for c in CASES if c[0] == "provision--v5p-128"]


@pytest.mark.parametrize("case", REAL_MODE_CASES, ids=[c[0] for c in REAL_MODE_CASES])
def test_dry_run_prints_exactly_what_runs(case, tmp_path):
    golden_name, script, env, args, extra_env = case
    log = tmp_path / "argv.jsonl"
    for tool in ("gcloud", "kubectl", "terraform"):
        stub = tmp_path / tool
        stub.write_text("#!/usr/bin/env python3\nimport json, os, sys\n"
                        "with open(os.environ['STUB_LOG'], 'a') as f:\n"
                        "    f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + '\\n')\n")
        stub.chmod(0o755)
    env_vars = {**extra_env, "PATH": f"{tmp_path}:{os.environ['PATH']}", "STUB_LOG": str(log)}
    real = run_script(script, *args, env=env_vars, env_name=env, dry_run=False)
    assert real.returncode == 0, real.stderr
    ran = [json.loads(line) for line in log.read_text().splitlines()]
    printed = [shlex.split(line) for line in (GOLDEN / f"{golden_name}.txt").read_text().splitlines()]
    assert ran == printed
