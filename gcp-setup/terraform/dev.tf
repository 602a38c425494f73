# The development instance: n1-standard-4, preemptible (Spot, stopped rather
# than deleted on preemption so the disk and checkout survive), no public IP.
# The startup script installs Eva in the conda env "eva", runs Jupyter Lab and
# the 30-minute idle-shutdown timer; SSH and Jupyter arrive through IAP.
resource "google_compute_instance" "dev" {
  count                     = var.dev_instance.enabled ? 1 : 0
  name                      = local.name
  machine_type              = var.dev_instance.machine_type
  zone                      = var.zone
  tags                      = [local.dev_tag]
  labels                    = local.labels
  allow_stopping_for_update = true

  boot_disk {
    initialize_params {
      image = var.dev_instance.image
      size  = var.dev_instance.disk_size_gb
      type  = "pd-balanced"
    }
  }

  network_interface {
    subnetwork = google_compute_subnetwork.eva.id
    # No access_config block: no external IP.
  }

  scheduling {
    preemptible                 = var.dev_instance.preemptible
    provisioning_model          = var.dev_instance.preemptible ? "SPOT" : "STANDARD"
    automatic_restart           = !var.dev_instance.preemptible
    on_host_maintenance         = var.dev_instance.preemptible ? "TERMINATE" : "MIGRATE"
    instance_termination_action = var.dev_instance.preemptible ? "STOP" : null
  }

  service_account {
    email  = google_service_account.eva.email
    scopes = ["cloud-platform"] # access is limited by the account's IAM roles
  }

  shielded_instance_config {
    enable_secure_boot = true
  }

  metadata = {
    # Instance-level SSH keys for the fixed user var.dev_instance.user, so VS
    # Code Remote-SSH can log in as that user (OS Login would impose
    # per-person user names). Only principals allowed to set instance metadata
    # can add keys; project-wide keys are ignored.
    enable-oslogin         = "FALSE"
    block-project-ssh-keys = "TRUE"
  }

  metadata_startup_script = templatefile("${path.module}/templates/dev-startup.sh.tftpl", {
    repo_url     = var.eva_repo_url
    git_ref      = var.eva_git_ref
    bucket       = local.bucket
    dev_user     = var.dev_instance.user
    jupyter_port = var.dev_instance.jupyter_port
    idle_minutes = var.dev_instance.idle_shutdown_minutes
  })

  lifecycle {
    # gcloud compute ssh adds keys here; Terraform must not remove them.
    ignore_changes = [metadata["ssh-keys"]]
  }

  depends_on = [google_compute_router_nat.eva]
}
