"""gcp-setup/k8s JobSet templates: the rendered manifests parse as YAML, fit
the node pools Terraform creates, and run Eva's real training command."""

from __future__ import annotations

import shlex

import pytest
import yaml

from .helpers import SCRIPTS, env_file, run_script, topology_chips


def _render(env: str, **overrides: str) -> list[dict]:
    proc = run_script("gke-submit.sh", "--render-only", env=overrides, env_name=env, dry_run=False)
    assert proc.returncode == 0, proc.stderr
    assert "${" not in proc.stdout, "unfilled placeholder"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _jobset(docs: list[dict]) -> dict:
    (js,) = [d for d in docs if d["kind"] == "JobSet"]
    assert js["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
    return js


def _train_argv(pod_spec: dict) -> list[str]:
    (container,) = pod_spec["containers"]
    assert container["command"][:2] == ["bash", "-c"]
    script = container["command"][2]
    (line,) = [ln for ln in script.splitlines() if "eva_jax.train" in ln]
    argv = shlex.split(line)
    assert argv[0] == "exec"
    return argv[1:]


def _expected_argv(env: str) -> list[str]:
    ev = env_file(env)
    argv = ["python", "-m", "eva_jax.train", f"--config={ev['EVA_CONFIG']}",
            f"--workdir=gs://{ev['EVA_BUCKET']}/runs/{ev['EVA_RUN_NAME']}"]
    for kv in ev["EVA_TRAIN_SETS"].split():
        argv += ["--set", kv]
    return argv


@pytest.mark.parametrize("env", ["v6e-256", "h200-16"])
def test_manifest_runs_the_real_train_command(env):
    js = _jobset(_render(env))
    pod = js["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    assert _train_argv(pod) == _expected_argv(env)
    script = pod["containers"][0]["command"][2]
    assert "gcp-setup/scripts/bootstrap-host.sh --no-conda" in script
    assert (SCRIPTS / "bootstrap-host.sh").is_file()
    assert script.startswith("set -euo pipefail\n")


def test_tpu_manifest_fits_the_slice_node_pools():
    ev = env_file("v6e-256")
    docs = _render("v6e-256")
    js = _jobset(docs)
    annotations = js["metadata"]["annotations"]
    assert annotations["alpha.jobset.sigs.k8s.io/exclusive-topology"] == "cloud.google.com/gke-nodepool"
    (rj,) = js["spec"]["replicatedJobs"]
    assert rj["replicas"] == int(ev["EVA_NUM_SLICES"])
    job = rj["template"]["spec"]
    hosts = topology_chips(ev["EVA_TPU_TOPOLOGY"]) // 4
    assert job["parallelism"] == job["completions"] == hosts == 64
    assert job["completionMode"] == "Indexed"
    pod = job["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu-accelerator": "tpu-v6e-slice",
                                   "cloud.google.com/gke-tpu-topology": "16x16"}
    assert pod["containers"][0]["resources"]["limits"]["google.com/tpu"] == 4
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert sa["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == ev["EVA_SERVICE_ACCOUNT"]


def test_multi_slice_sets_one_replica_per_slice():
    js = _jobset(_render("v6e-256", EVA_NUM_SLICES="4"))
    assert js["spec"]["replicatedJobs"][0]["replicas"] == 4


def test_v5p_labels_follow_the_generation():
    js = _jobset(_render("v6e-256", EVA_TPU_ACCELERATOR="v5p-128", EVA_TPU_TOPOLOGY="4x4x4",
                         EVA_TRAIN_SETS="mesh.data=4 mesh.expert=16"))
    job = js["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["parallelism"] == 16
    assert job["template"]["spec"]["nodeSelector"]["cloud.google.com/gke-tpu-accelerator"] == "tpu-v5p-slice"


def test_gpu_manifest_fits_the_h200_pool_and_lets_jax_find_peers():
    ev = env_file("h200-16")
    docs = _render("h200-16")
    job = _jobset(docs)["spec"]["replicatedJobs"][0]["template"]["spec"]
    assert job["parallelism"] == job["completions"] == int(ev["EVA_GPU_NODES"])
    assert job["completionMode"] == "Indexed"
    pod = job["template"]["spec"]
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h200-141gb"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == int(ev["EVA_GPUS_PER_NODE"])
    assert "--accelerator cuda" in pod["containers"][0]["command"][2]
    # jax's Kubernetes cluster detection lists pods and reads the Job.
    (role,) = [d for d in docs if d["kind"] == "Role"]
    verbs = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert {"get", "list"} <= verbs[(("",), ("pods",))] and "get" in verbs[(("batch",), ("jobs",))]
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"] == ev["EVA_K8S_SA"]


def test_missing_value_fails_instead_of_rendering_blank():
    proc = run_script("gke-submit.sh", "--render-only", env={"EVA_TARGET": "gke-tpu"}, dry_run=False)
    assert proc.returncode != 0 and "missing required variable" in proc.stderr
