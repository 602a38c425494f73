# A Cloud TPU VM slice requested through the queued-resources API, which
# waits for capacity instead of failing on a stockout. google-beta only.
# The runtime version follows the generation unless the tfvars override it.
resource "google_tpu_v2_queued_resource" "slice" {
  provider = google-beta
  count    = local.tpu_enabled ? 1 : 0
  name     = var.tpu_slice.name
  zone     = var.zone
  project  = var.project_id

  tpu {
    node_spec {
      parent  = "projects/${var.project_id}/locations/${var.zone}"
      node_id = var.tpu_slice.name
      node {
        accelerator_type = var.tpu_slice.accelerator_type
        runtime_version  = coalesce(var.tpu_slice.runtime_version, local.tpu_runtime_versions[var.tpu_slice.generation])
        description      = "Eva ${var.environment}: ${var.tpu_slice.accelerator_type} (${var.tpu_slice.topology})"
        network_config {
          network             = google_compute_network.eva.id
          subnetwork          = google_compute_subnetwork.eva.id
          enable_external_ips = false # reached through IAP, egress through NAT
          can_ip_forward      = false
        }
      }
    }
  }

  # spot -> SPOT, reserved -> RESERVATION_BOUND, on-demand -> STANDARD.
  provisioning_model = local.tpu_provisioning_models[var.tpu_slice.provisioning]

  depends_on = [google_project_service.apis, google_compute_router_nat.eva]
}
