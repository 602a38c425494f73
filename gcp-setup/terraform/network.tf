# One VPC per environment. No public IPs anywhere: SSH and Jupyter come in
# through IAP only, outbound traffic (pip, git, image pulls) leaves via NAT.
resource "google_compute_network" "eva" {
  name                    = local.name
  auto_create_subnetworks = false
  # 8896 = jumbo frames; recommended for TPU multi-slice and GPU traffic.
  mtu        = var.network_mtu
  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "eva" {
  name          = local.name
  network       = google_compute_network.eva.id
  region        = var.region
  ip_cidr_range = var.subnet_cidr
  # Hosts without public IPs still reach GCS and Google APIs.
  private_ip_google_access = true

  # Used only by GKE (pods and services ranges).
  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = var.pods_cidr
  }
  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = var.services_cidr
  }
}

resource "google_compute_router" "eva" {
  name    = local.name
  network = google_compute_network.eva.id
  region  = var.region
}

resource "google_compute_router_nat" "eva" {
  name                               = local.name
  router                             = google_compute_router.eva.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"
}

# SSH to every VM (dev instance, TPU workers) only from IAP.
resource "google_compute_firewall" "iap_ssh" {
  name          = "${local.name}-iap-ssh"
  network       = google_compute_network.eva.id
  direction     = "INGRESS"
  source_ranges = [local.iap_range]
  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
}

# Jupyter Lab on the dev instance only, only from IAP.
resource "google_compute_firewall" "iap_jupyter" {
  name          = "${local.name}-iap-jupyter"
  network       = google_compute_network.eva.id
  direction     = "INGRESS"
  source_ranges = [local.iap_range]
  target_tags   = [local.dev_tag]
  allow {
    protocol = "tcp"
    ports    = [tostring(var.dev_instance.jupyter_port)]
  }
}

# Hosts and pods talk to each other freely: jax.distributed coordinator,
# TPU megascale (DCN) and NCCL all use dynamic ports.
resource "google_compute_firewall" "internal" {
  name          = "${local.name}-internal"
  network       = google_compute_network.eva.id
  direction     = "INGRESS"
  source_ranges = [var.subnet_cidr, var.pods_cidr]
  allow {
    protocol = "all"
  }
}
