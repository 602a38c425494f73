# GKE with two a3-ultragpu-8g nodes: 16 NVIDIA H200 GPUs, and JobSet.
# A3 Ultra capacity is zonal and usually needs a reservation or Spot; check
# availability with: gcloud compute machine-types list --filter=name=a3-ultragpu-8g
project_id   = "eva-example-project"
environment  = "h200-16"
region       = "europe-west1"
zone         = "europe-west1-b"
eva_repo_url = "https://github.com/your-org/eva.git"
eva_git_ref  = "main"
bucket_name  = "eva-example-project-h200-16"

gke = {
  gpu_pool = {
    machine_type     = "a3-ultragpu-8g"
    accelerator_type = "nvidia-h200-141gb"
    gpus_per_node    = 8
    node_count       = 2
    provisioning     = "spot" # or "reserved" with reservation = "<name>"
  }
}
