# GKE with one TPU v6e-256 slice (256 chips = 16x16, 64 hosts of
# ct6e-standard-4t) and JobSet. Raise num_slices for multi-slice training
# (and EVA_NUM_SLICES in v6e-256.env to match).
project_id   = "eva-example-project"
environment  = "v6e-256"
region       = "us-east5"
zone         = "us-east5-b"
eva_repo_url = "https://github.com/your-org/eva.git"
eva_git_ref  = "main"
bucket_name  = "eva-example-project-v6e-256"

gke = {
  tpu_pools = [
    {
      name         = "v6e"
      generation   = "v6e"
      topology     = "16x16"
      num_slices   = 1
      provisioning = "spot"
    },
  ]
}
