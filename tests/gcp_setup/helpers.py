"""Shared paths and loaders for the gcp-setup tests (offline: no cloud, no
Terraform providers, no eva_jax import)."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import subprocess
from pathlib import Path

import hcl2

REPO = Path(__file__).resolve().parents[2]
GCP = REPO / "gcp-setup"
TF_DIR = GCP / "terraform"
CONFIGS = GCP / "configs"
SCRIPTS = GCP / "scripts"
K8S = GCP / "k8s"
GOLDEN = Path(__file__).resolve().parent / "golden"

ENVIRONMENTS = ("dev", "v5p-128", "v6e-256", "h200-16")
TF_FILES = sorted(TF_DIR.glob("*.tf"))
SCRIPT_FILES = sorted(SCRIPTS.glob("*.sh"))


def _clean(value):
    """python-hcl2 8 keeps quotes and adds __comments__/__is_block__ markers;
    older releases did not. Normalise to plain values so tests read the same
    either way."""
    if isinstance(value, dict):
        return {_unquote(k): _clean(v) for k, v in value.items() if not str(k).startswith("__")}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, str):
        return _unquote(value)
    return value


def _unquote(s: str) -> str:
    if len(s) >= 2 and s[0] == s[-1] == '"':
        return s[1:-1]
    return s


@functools.lru_cache(maxsize=None)
def load_hcl(path: Path) -> dict:
    """Parsed once per test session; callers must not mutate the result."""
    options = getattr(hcl2, "SerializationOptions", None)
    names = {f.name for f in dataclasses.fields(options)} if options is not None else set()
    with open(path) as f:
        if "strip_string_quotes" in names:
            opts = hcl2.SerializationOptions(with_comments=False, strip_string_quotes=True)
            return _clean(hcl2.load(f, serialization_options=opts))
        return _clean(hcl2.load(f))


def resources(kind: str | None = None):
    """Yield (type, name, body) for every resource in the Terraform root."""
    for path in TF_FILES:
        for block in load_hcl(path).get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    if kind is None or rtype == kind:
                        yield rtype, name, body


def tfvars(env: str) -> dict:
    return load_hcl(CONFIGS / f"{env}.tfvars")


def env_file(env: str) -> dict[str, str]:
    """Parse configs/<env>.env the way lib.sh's load_env_file does."""
    out = {}
    for line in (CONFIGS / f"{env}.env").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key] = value
    return out


def topology_chips(topology: str) -> int:
    assert re.fullmatch(r"\d+(x\d+){1,2}", topology), topology
    chips = 1
    for d in topology.split("x"):
        chips *= int(d)
    return chips


def accelerator_chips(accelerator_type: str) -> int:
    """v5p-N counts TensorCores (2 per chip); v6e-N counts chips."""
    gen, n = accelerator_type.split("-")
    return int(n) // 2 if gen == "v5p" else int(n)


def run_script(name: str, *args: str, env: dict | None = None, env_name: str | None = None,
               dry_run: bool = True) -> subprocess.CompletedProcess:
    """Run a script with a clean environment so nothing from the caller's
    shell (EVA_* variables) leaks into the output."""
    clean = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "LANG": "C.UTF-8"}
    clean.update(env or {})
    cmd = ["bash", str(SCRIPTS / name)]
    if dry_run:
        cmd.append("--dry-run")
    if env_name:
        cmd += ["--env-file", str(CONFIGS / f"{env_name}.env")]
    cmd += list(args)
    return subprocess.run(cmd, env=clean, capture_output=True, text=True, timeout=60)
