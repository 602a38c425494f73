# GKE Standard cluster for JobSet workloads: a small system pool (JobSet
# controller, kube-system), one node pool per TPU slice (COMPACT placement
# with the slice topology, as GKE requires for multi-host TPUs) and an H200
# pool of a3-ultragpu-8g nodes.
locals {
  # Expand each TPU pool spec into num_slices node pools: GKE maps one
  # multi-host node pool to exactly one slice.
  gke_tpu_slices = local.gke_enabled ? {
    for s in flatten([
      for p in var.gke.tpu_pools : [
        for i in range(p.num_slices) : merge(p, {
          key   = "${p.name}-${i}"
          chips = length(split("x", p.topology)) == 3 ? tonumber(split("x", p.topology)[0]) * tonumber(split("x", p.topology)[1]) * tonumber(split("x", p.topology)[2]) : tonumber(split("x", p.topology)[0]) * tonumber(split("x", p.topology)[1])
        })
      ]
    ]) : s.key => s
  } : {}
  gke_gpu_pool = local.gke_enabled ? var.gke.gpu_pool : null
}

resource "google_container_cluster" "eva" {
  count      = local.gke_enabled ? 1 : 0
  name       = local.name
  location   = var.region
  network    = google_compute_network.eva.id
  subnetwork = google_compute_subnetwork.eva.id
  # All node pools in the one zone that holds the accelerators.
  node_locations = [var.zone]

  # Node pools are managed below; GKE insists on a default pool at creation.
  remove_default_node_pool = true
  initial_node_count       = 1
  deletion_protection      = var.gke.deletion_protection
  resource_labels          = local.labels

  release_channel {
    channel = var.gke.release_channel
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = "pods"
    services_secondary_range_name = "services"
  }

  # Nodes get no public IPs; the API endpoint stays public but can be
  # limited to gke.master_authorized_cidrs.
  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.gke_master_cidr
  }

  dynamic "master_authorized_networks_config" {
    for_each = length(var.gke.master_authorized_cidrs) > 0 ? [1] : []
    content {
      dynamic "cidr_blocks" {
        for_each = var.gke.master_authorized_cidrs
        content {
          cidr_block = cidr_blocks.value
        }
      }
    }
  }

  depends_on = [google_project_service.apis, google_compute_router_nat.eva]
}

resource "google_container_node_pool" "system" {
  count      = local.gke_enabled ? 1 : 0
  name       = "system"
  cluster    = google_container_cluster.eva[0].id
  location   = var.region
  node_count = var.gke.system_node_count

  node_config {
    machine_type    = var.gke.system_machine_type
    service_account = google_service_account.eva.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = local.labels
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_container_node_pool" "tpu" {
  for_each   = local.gke_tpu_slices
  name       = each.key
  cluster    = google_container_cluster.eva[0].id
  location   = var.region
  node_count = each.value.chips / local.chips_per_host

  placement_policy {
    type         = "COMPACT"
    tpu_topology = each.value.topology
  }

  node_config {
    machine_type    = local.gke_tpu_machine_types[each.value.generation]
    spot            = each.value.provisioning == "spot"
    service_account = google_service_account.eva.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = local.labels
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    dynamic "reservation_affinity" {
      for_each = each.value.provisioning == "reserved" ? [each.value.reservation] : []
      content {
        consume_reservation_type = "SPECIFIC_RESERVATION"
        key                      = "compute.googleapis.com/reservation-name"
        values                   = [reservation_affinity.value]
      }
    }
  }

  management {
    auto_repair  = true
    auto_upgrade = true # required by release channels; use maintenance exclusions for long runs
  }
}

resource "google_container_node_pool" "gpu" {
  count      = local.gke_gpu_pool == null ? 0 : 1
  name       = local.gke_gpu_pool.name
  cluster    = google_container_cluster.eva[0].id
  location   = var.region
  node_count = local.gke_gpu_pool.node_count

  node_config {
    machine_type = local.gke_gpu_pool.machine_type
    # A3 Ultra boots only from Hyperdisk.
    disk_type       = "hyperdisk-balanced"
    spot            = local.gke_gpu_pool.provisioning == "spot"
    service_account = google_service_account.eva.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
    labels          = local.labels

    guest_accelerator {
      type  = local.gke_gpu_pool.accelerator_type
      count = local.gke_gpu_pool.gpus_per_node
      gpu_driver_installation_config {
        gpu_driver_version = "LATEST"
      }
    }

    # The machine type's bundled local SSDs, used as pod ephemeral storage
    # (pip caches, /tmp, XLA autotune files).
    ephemeral_storage_local_ssd_config {
      local_ssd_count = 32
    }

    gvnic {
      enabled = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    dynamic "reservation_affinity" {
      for_each = local.gke_gpu_pool.provisioning == "reserved" ? [local.gke_gpu_pool.reservation] : []
      content {
        consume_reservation_type = "SPECIFIC_RESERVATION"
        key                      = "compute.googleapis.com/reservation-name"
        values                   = [reservation_affinity.value]
      }
    }
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }
}
