"""gcp-setup/configs: each environment's tfvars describe a real slice
(accelerator type, topology and chip count agree), and the env file the
scripts read names the same project, zone, bucket and machines."""

from __future__ import annotations

import re

import pytest

from .helpers import CONFIGS, ENVIRONMENTS, TF_DIR, accelerator_chips, env_file, tfvars, topology_chips

# Keys the scripts need that Terraform does not know about.
TRAINING_KEYS = {"EVA_CONFIG", "EVA_RUN_NAME", "EVA_TRAIN_SETS"}
EVA_CONFIGS = {"v3_671b", "v3_small", "v3_tiny", "v2_lite"}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_each_environment_has_tfvars_and_env_file(env):
    assert (CONFIGS / f"{env}.tfvars").is_file()
    assert (CONFIGS / f"{env}.env").is_file()


def test_v5p_128_is_64_chips_in_a_4x4x4_slice():
    tpu = tfvars("v5p-128")["tpu_slice"]
    assert tpu["generation"] == "v5p" and tpu["accelerator_type"] == "v5p-128"
    assert tpu["topology"] == "4x4x4"
    assert accelerator_chips(tpu["accelerator_type"]) == topology_chips(tpu["topology"]) == 64
    assert tpu["provisioning"] in {"spot", "reserved", "on-demand"}


def test_v6e_256_is_256_chips_in_a_16x16_slice():
    (pool,) = tfvars("v6e-256")["gke"]["tpu_pools"]
    assert pool["generation"] == "v6e" and pool["topology"] == "16x16"
    assert topology_chips(pool["topology"]) == 256 == accelerator_chips(env_file("v6e-256")["EVA_TPU_ACCELERATOR"])
    assert topology_chips(pool["topology"]) % 4 == 0  # 4 chips per ct6e-standard-4t host


def test_h200_16_is_two_a3_ultra_nodes():
    gpu = tfvars("h200-16")["gke"]["gpu_pool"]
    assert gpu["machine_type"] == "a3-ultragpu-8g"
    assert gpu["accelerator_type"] == "nvidia-h200-141gb"
    assert gpu["node_count"] * gpu["gpus_per_node"] == 16


def test_dev_matches_the_seed():
    dev = tfvars("dev")["dev_instance"]
    assert dev["enabled"] is True and dev["machine_type"] == "n1-standard-4"
    assert dev["preemptible"] is True
    assert dev["idle_shutdown_minutes"] == 30 and dev["jupyter_port"] == 8888


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_env_file_matches_tfvars(env):
    tv, ev = tfvars(env), env_file(env)
    name = f"eva-{env}"
    assert ev["EVA_ENVIRONMENT"] == tv["environment"] == env
    assert ev["EVA_PROJECT"] == tv["project_id"]
    assert ev["EVA_REGION"] == tv["region"] and ev["EVA_ZONE"] == tv["zone"]
    assert ev["EVA_ZONE"].startswith(ev["EVA_REGION"] + "-")
    assert ev["EVA_BUCKET"] == tv["bucket_name"]
    assert ev["EVA_REPO_URL"] == tv["eva_repo_url"] and ev["EVA_GIT_REF"] == tv["eva_git_ref"]
    assert ev["EVA_SERVICE_ACCOUNT"] == f"{name}@{tv['project_id']}.iam.gserviceaccount.com"
    assert ev["EVA_CONFIG"] in EVA_CONFIGS
    assert re.fullmatch(r"[a-z][a-z0-9-]{0,38}", ev["EVA_RUN_NAME"])
    if "tpu_slice" in tv:
        assert ev["EVA_TARGET"] == "tpu-vm"
        assert ev["EVA_TPU_NAME"] == tv["tpu_slice"]["name"]
        assert ev["EVA_TPU_ACCELERATOR"] == tv["tpu_slice"]["accelerator_type"]
        assert ev["EVA_TPU_TOPOLOGY"] == tv["tpu_slice"]["topology"]
    elif "gke" in tv:
        assert ev["EVA_GKE_CLUSTER"] == name
        pools = tv["gke"].get("tpu_pools", [])
        if pools:
            assert ev["EVA_TARGET"] == "gke-tpu"
            assert ev["EVA_TPU_TOPOLOGY"] == pools[0]["topology"]
            assert int(ev["EVA_NUM_SLICES"]) == pools[0].get("num_slices", 1)
        else:
            gpu = tv["gke"]["gpu_pool"]
            assert ev["EVA_TARGET"] == "gke-gpu"
            assert int(ev["EVA_GPU_NODES"]) == gpu["node_count"]
            assert int(ev["EVA_GPUS_PER_NODE"]) == gpu["gpus_per_node"]
            assert ev["EVA_GPU_ACCELERATOR"] == gpu["accelerator_type"]
    else:
        assert ev["EVA_TARGET"] == "dev"
        assert ev["EVA_DEV_INSTANCE"] == name
        assert ev["EVA_DEV_USER"] == tv["dev_instance"]["user"]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_env_file_keys_are_what_terraform_writes(env):
    """provision.sh --write-env saves Terraform's eva_env output; the example
    files must use the same keys so both kinds of file work with the scripts."""
    template_keys = set(re.findall(r"^(EVA_[A-Z0-9_]+)=", (TF_DIR / "templates" / "eva.env.tftpl").read_text(), re.M))
    keys = set(env_file(env))
    assert keys - TRAINING_KEYS <= template_keys, keys - TRAINING_KEYS - template_keys


@pytest.mark.parametrize("env", [e for e in ENVIRONMENTS if e != "dev"])
def test_mesh_axes_multiply_to_the_device_count(env):
    ev = env_file(env)
    product = 1
    for kv in ev["EVA_TRAIN_SETS"].split():
        key, value = kv.split("=")
        assert key.startswith("mesh."), kv
        product *= int(value)
    if "EVA_TPU_TOPOLOGY" in ev:
        devices = topology_chips(ev["EVA_TPU_TOPOLOGY"]) * int(ev.get("EVA_NUM_SLICES", "1"))
    else:
        devices = int(ev["EVA_GPU_NODES"]) * int(ev["EVA_GPUS_PER_NODE"])
    assert product == devices
