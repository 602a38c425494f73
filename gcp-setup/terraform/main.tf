# Names, per-generation facts and the APIs every environment needs.
locals {
  name = "${var.name_prefix}-${var.environment}"

  # Google's fixed source range for IAP TCP forwarding: the only range that
  # may reach SSH and Jupyter.
  iap_range = "35.235.240.0/20"
  dev_tag   = "${local.name}-dev"

  # TPU software per generation (Cloud TPU "runtime version").
  tpu_runtime_versions = {
    v5p = "v2-alpha-tpuv5"
    v6e = "v2-alpha-tpuv6e"
  }
  # GKE: machine type and node label of a multi-host slice, 4 chips per host.
  gke_tpu_machine_types = {
    v5p = "ct5p-hightpu-4t"
    v6e = "ct6e-standard-4t"
  }
  gke_tpu_accelerator_labels = {
    v5p = "tpu-v5p-slice"
    v6e = "tpu-v6e-slice"
  }
  chips_per_host = 4

  tpu_provisioning_models = {
    spot        = "SPOT"
    reserved    = "RESERVATION_BOUND"
    "on-demand" = "STANDARD"
  }

  gke_enabled = var.gke != null
  tpu_enabled = var.tpu_slice != null

  labels = merge(var.labels, {
    app         = "eva"
    environment = var.environment
    managed-by  = "terraform"
  })

  apis = concat(
    [
      "compute.googleapis.com",
      "iam.googleapis.com",
      "iap.googleapis.com",
      "logging.googleapis.com",
      "monitoring.googleapis.com",
      "storage.googleapis.com",
    ],
    local.tpu_enabled ? ["tpu.googleapis.com"] : [],
    local.gke_enabled ? ["container.googleapis.com"] : [],
  )
}

# disable_on_destroy = false: environments share the project, so destroying
# one must not switch an API off under another.
resource "google_project_service" "apis" {
  for_each           = toset(local.apis)
  service            = each.value
  disable_on_destroy = false
}
