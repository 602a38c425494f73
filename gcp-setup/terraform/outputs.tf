# What the scripts and people need after an apply. eva_env is the env file
# the scripts read: provision.sh --write-env saves it.
locals {
  target = (
    local.tpu_enabled ? "tpu-vm" :
    length(local.gke_tpu_slices) > 0 ? "gke-tpu" :
    local.gke_gpu_pool != null ? "gke-gpu" : "dev"
  )
  first_gke_tpu_pool = local.gke_enabled ? try(var.gke.tpu_pools[0], null) : null
  first_gke_tpu_chips = local.first_gke_tpu_pool == null ? 0 : (
    tonumber(split("x", local.first_gke_tpu_pool.topology)[0]) *
    tonumber(split("x", local.first_gke_tpu_pool.topology)[1]) *
    try(tonumber(split("x", local.first_gke_tpu_pool.topology)[2]), 1)
  )
}

output "bucket" {
  description = "GCS bucket for checkpoints and data."
  value       = local.bucket
}

output "workdir_root" {
  description = "Prefix for --workdir: runs go to <workdir_root>/<run name>."
  value       = "gs://${local.bucket}/runs"
}

output "service_account" {
  description = "Least-privilege service account of this environment's workloads."
  value       = google_service_account.eva.email
}

output "dev_ssh_command" {
  description = "SSH to the dev instance through IAP (also installs your key for VS Code)."
  value       = var.dev_instance.enabled ? "gcloud compute ssh ${var.dev_instance.user}@${local.name} --zone=${var.zone} --project=${var.project_id} --tunnel-through-iap" : null
}

output "dev_jupyter_tunnel_command" {
  description = "Forward Jupyter Lab to http://localhost:8888 through IAP."
  value       = var.dev_instance.enabled ? "gcloud compute start-iap-tunnel ${local.name} ${var.dev_instance.jupyter_port} --local-host-port=localhost:8888 --zone=${var.zone} --project=${var.project_id}" : null
}

output "tpu_slice" {
  description = "TPU VM slice: name, zone, accelerator type, topology and host count."
  value = local.tpu_enabled ? {
    name             = var.tpu_slice.name
    zone             = var.zone
    accelerator_type = var.tpu_slice.accelerator_type
    topology         = var.tpu_slice.topology
    runtime_version  = google_tpu_v2_queued_resource.slice[0].tpu[0].node_spec[0].node[0].runtime_version
  } : null
}

output "gke_get_credentials_command" {
  description = "Point kubectl at the cluster."
  value       = local.gke_enabled ? "gcloud container clusters get-credentials ${google_container_cluster.eva[0].name} --location=${var.region} --project=${var.project_id}" : null
}

output "eva_env" {
  description = "KEY=VALUE settings for gcp-setup/scripts (--env-file); add EVA_CONFIG, EVA_RUN_NAME and EVA_TRAIN_SETS."
  value = templatefile("${path.module}/templates/eva.env.tftpl", {
    environment     = var.environment
    target          = local.target
    project         = var.project_id
    region          = var.region
    zone            = var.zone
    bucket          = local.bucket
    service_account = google_service_account.eva.email
    repo_url        = var.eva_repo_url
    git_ref         = var.eva_git_ref
    dev_instance    = var.dev_instance.enabled ? local.name : ""
    dev_user        = var.dev_instance.user
    jupyter_port    = var.dev_instance.jupyter_port
    idle_minutes    = var.dev_instance.idle_shutdown_minutes
    tpu_name        = local.tpu_enabled ? var.tpu_slice.name : ""
    tpu_accelerator = local.tpu_enabled ? var.tpu_slice.accelerator_type : (
      local.first_gke_tpu_pool == null ? "" :
      "${local.first_gke_tpu_pool.generation}-${local.first_gke_tpu_chips * (local.first_gke_tpu_pool.generation == "v5p" ? 2 : 1)}"
    )
    tpu_topology   = local.tpu_enabled ? var.tpu_slice.topology : try(local.first_gke_tpu_pool.topology, "")
    num_slices     = try(local.first_gke_tpu_pool.num_slices, 1)
    gke_cluster    = local.gke_enabled ? google_container_cluster.eva[0].name : ""
    jobset_version = local.gke_enabled ? var.gke.jobset_version : ""
    k8s_namespace  = local.gke_enabled ? var.gke.namespace : ""
    k8s_sa         = local.gke_enabled ? var.gke.k8s_service_account : ""
    gpu_nodes      = local.gke_gpu_pool == null ? 0 : local.gke_gpu_pool.node_count
    gpus_per_node  = local.gke_gpu_pool == null ? 0 : local.gke_gpu_pool.gpus_per_node
    gpu_type       = local.gke_gpu_pool == null ? "" : local.gke_gpu_pool.accelerator_type
  })
}
