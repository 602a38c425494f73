"""gcp-setup/terraform: parses, uses the right resources and providers, opens
nothing to the internet, and every variable is typed, described and (where
it can be wrong) validated. Offline: no provider download, no cloud."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from .helpers import CONFIGS, ENVIRONMENTS, GCP, TF_DIR, TF_FILES, load_hcl, resources, tfvars

IAP_RANGE = "35.235.240.0/20"
TF_ENV = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_CLI_CONFIG_FILE": os.devnull}


def _all(key: str) -> dict:
    merged = {}
    for path in TF_FILES:
        for block in load_hcl(path).get(key, []):
            merged.update(block)
    return merged


def _locals() -> dict:
    return _all("locals")


@pytest.mark.parametrize("path", TF_FILES + sorted(CONFIGS.glob("*.tfvars")), ids=lambda p: p.name)
def test_every_terraform_file_parses(path):
    assert isinstance(load_hcl(path), dict)


def test_resource_types_cover_the_issue():
    used = {rtype for rtype, _, _ in resources()}
    expected = {
        "google_project_service",
        "google_compute_network", "google_compute_subnetwork", "google_compute_router",
        "google_compute_router_nat", "google_compute_firewall",
        "google_storage_bucket", "google_service_account", "google_project_iam_member",
        "google_storage_bucket_iam_member", "google_service_account_iam_member",
        "google_compute_instance",
        "google_tpu_v2_queued_resource",
        "google_container_cluster", "google_container_node_pool",
        "terraform_data",
    }
    assert expected <= used, expected - used


def test_both_providers_are_required():
    blocks = [b for p in TF_FILES for b in load_hcl(p).get("terraform", [])]
    providers = {}
    for b in blocks:
        for rp in b.get("required_providers", []):
            providers.update(rp)
    assert providers["google"]["source"] == "hashicorp/google"
    assert providers["google-beta"]["source"] == "hashicorp/google-beta"


def test_tpu_resources_use_google_beta():
    tpu = [(n, b) for t, n, b in resources() if t.startswith("google_tpu")]
    assert tpu, "no TPU resource"
    for name, body in tpu:
        assert body.get("provider") == "google-beta", name


def test_tpu_runtime_version_per_generation():
    versions = _locals()["tpu_runtime_versions"]
    assert versions == {"v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
    assert set(_locals()["tpu_provisioning_models"]) == {"spot", "reserved", "on-demand"}


def test_no_world_open_range_anywhere():
    for path in TF_FILES + sorted(CONFIGS.glob("*.tfvars")):
        text = path.read_text()
        assert "0.0.0.0/0" not in text and "::/0" not in text, path.name


def test_ssh_and_jupyter_only_from_iap():
    assert _locals()["iap_range"] == IAP_RANGE
    firewalls = list(resources("google_compute_firewall"))
    assert firewalls
    jupyter_port = "8888"
    for name, body in ((n, b) for _, n, b in firewalls):
        ranges = body.get("source_ranges", [])
        ranges = [IAP_RANGE if r == "${local.iap_range}" else r for r in ranges]
        for allow in body.get("allow", []):
            ports = [str(p) for p in allow.get("ports", [])]
            exposes = (allow["protocol"] == "all" or "22" in ports or jupyter_port in ports
                       or any("jupyter_port" in p for p in ports))
            if exposes:
                assert "0.0.0.0/0" not in ranges, name
                if allow["protocol"] == "tcp":
                    assert ranges == [IAP_RANGE], f"{name}: SSH/Jupyter must come from IAP only"
    names = {n for _, n, _ in firewalls}
    assert {"iap_ssh", "iap_jupyter"} <= names


def test_every_variable_is_typed_described_and_validated():
    variables = _all("variable")
    assert variables
    for name, body in variables.items():
        assert body.get("type"), f"{name}: no type"
        assert str(body.get("description", "")).strip(), f"{name}: no description"
        type_ = str(body["type"])
        if not re.search(r"\b(bool|map)\b", type_):
            assert body.get("validation"), f"{name}: no validation"


def test_tfvars_set_only_declared_variables_and_all_required_ones():
    variables = _all("variable")
    required = {n for n, b in variables.items() if "default" not in b}
    for env in ENVIRONMENTS:
        values = tfvars(env)
        assert set(values) <= set(variables), (env, set(values) - set(variables))
        assert required <= set(values), (env, required - set(values))


def test_dev_instance_matches_the_seed():
    dev = [b for _, _, b in resources("google_compute_instance")]
    assert len(dev) == 1
    body = dev[0]
    assert "access_config" not in body["network_interface"][0], "dev instance must have no public IP"
    assert "dev-startup.sh.tftpl" in body["metadata_startup_script"]
    assert body["scheduling"][0]["preemptible"] == "${var.dev_instance.preemptible}"
    default = _all("variable")["dev_instance"]["type"]
    assert 'optional(string, "n1-standard-4")' in default.replace("\\", "")
    assert all(f in default for f in ("optional(bool, true)", "optional(number, 30)", "optional(number, 8888)"))


def test_gke_pools_compact_topology_h200_and_jobset():
    pools = {n: b for _, n, b in resources("google_container_node_pool")}
    assert {"system", "tpu", "gpu"} <= set(pools)
    placement = pools["tpu"]["placement_policy"][0]
    assert placement["type"] == "COMPACT"
    assert "topology" in placement["tpu_topology"]
    gke_type = _all("variable")["gke"]["type"]
    assert '"a3-ultragpu-8g"' in gke_type and '"nvidia-h200-141gb"' in gke_type
    assert pools["gpu"]["node_config"][0]["guest_accelerator"][0]["count"] == "${local.gke_gpu_pool.gpus_per_node}"
    jobset = [b for _, n, b in resources("terraform_data") if n == "jobset"]
    assert jobset and "gke-install-jobset.sh" in jobset[0]["provisioner"][0]["local-exec"]["command"]


def test_bucket_is_private_versioned_and_cleaned_up():
    (_, _, bucket), = resources("google_storage_bucket")
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["versioning"][0]["enabled"] is True
    actions = {r["action"][0]["type"] for r in bucket["lifecycle_rule"]}
    assert {"Delete", "AbortIncompleteMultipartUpload"} <= actions


def test_service_account_least_privilege():
    text = "\n".join(p.read_text() for p in TF_FILES)
    for broad in ("roles/owner", "roles/editor", "roles/storage.admin", "roles/iam.serviceAccountUser"):
        assert broad not in text, broad
    # Object access is granted on the bucket, never project-wide.
    for _, _, body in resources("google_project_iam_member"):
        assert "storage" not in body["role"]
    iam = (TF_DIR / "iam.tf").read_text()
    assert re.search(r'bucket_roles\s*=\s*\["roles/storage.objectAdmin", "roles/storage.legacyBucketReader"\]', iam)


@pytest.mark.skipif(not shutil.which("terraform"), reason="no terraform binary")
def test_terraform_fmt():
    proc = subprocess.run(["terraform", "fmt", "-check", "-recursive", "-diff", str(GCP)],
                          env=TF_ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def variables_only_root(tmp_path_factory):
    """variables.tf alone needs no provider, so `terraform plan` can run the
    real validation blocks against each tfvars file offline."""
    root = tmp_path_factory.mktemp("tfvars-check")
    shutil.copy(TF_DIR / "variables.tf", root)
    (root / "ok.tf").write_text('output "ok" {\n  value = true\n}\n')
    proc = subprocess.run(["terraform", f"-chdir={root}", "init", "-input=false", "-backend=false"],
                          env=TF_ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return root


def _plan(root, *args):
    return subprocess.run(["terraform", f"-chdir={root}", "plan", "-input=false", "-lock=false", *args],
                          env=TF_ENV, capture_output=True, text=True)


@pytest.mark.skipif(not shutil.which("terraform"), reason="no terraform binary")
def test_tfvars_pass_the_variable_validations(variables_only_root):
    for env in ENVIRONMENTS:
        proc = _plan(variables_only_root, f"-var-file={CONFIGS / f'{env}.tfvars'}")
        assert proc.returncode == 0, (env, proc.stderr)


@pytest.mark.skipif(not shutil.which("terraform"), reason="no terraform binary")
def test_validation_rejects_topology_that_does_not_match(variables_only_root):
    proc = _plan(variables_only_root, f"-var-file={CONFIGS / 'v5p-128.tfvars'}",
                 '-var=tpu_slice={name="x",generation="v5p",accelerator_type="v5p-128",topology="4x4x8"}')
    assert proc.returncode != 0
    assert "does not match" in proc.stderr


def test_dev_startup_template_renders_to_valid_bash(tmp_path):
    """Render the startup script as Terraform would (same variables as
    dev.tf, values from dev.tfvars) and check it with bash -n and shellcheck."""
    values = tfvars("dev")
    dev = values["dev_instance"]
    subst = {
        "repo_url": values["eva_repo_url"], "git_ref": values["eva_git_ref"], "bucket": values["bucket_name"],
        "dev_user": dev["user"], "jupyter_port": str(dev["jupyter_port"]),
        "idle_minutes": str(dev["idle_shutdown_minutes"]),
    }
    template = (TF_DIR / "templates" / "dev-startup.sh.tftpl").read_text()
    used = set(re.findall(r"(?<!\$)\$\{(\w+)\}", template))
    assert used == set(subst), used ^ set(subst)
    dev_tf = (TF_DIR / "dev.tf").read_text()
    for name in subst:
        assert re.search(rf"^\s*{name}\s*=", dev_tf, re.M), f"dev.tf does not pass {name}"
    rendered = re.sub(r"(?<!\$)\$\{(\w+)\}", lambda m: subst[m.group(1)], template).replace("$${", "${")
    script = tmp_path / "startup.sh"
    script.write_text(rendered)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert "bootstrap-host.sh --keep-checkout --accelerator cpu" in rendered
    assert "dev-services.sh" in rendered and "--idle-minutes '30'" in rendered
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout
