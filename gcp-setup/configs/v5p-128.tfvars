# One TPU v5p-128 slice (64 chips = 4x4x4, 16 hosts) as a Spot queued
# resource in a v5p zone, with its bucket in the same region.
# v5p-N counts TensorCores: 2 per chip, so v5p-128 is 64 chips.
project_id   = "eva-example-project"
environment  = "v5p-128"
region       = "us-east5"
zone         = "us-east5-a"
eva_repo_url = "https://github.com/your-org/eva.git"
eva_git_ref  = "main"
bucket_name  = "eva-example-project-v5p-128"

tpu_slice = {
  name             = "eva-v5p-128"
  generation       = "v5p"
  accelerator_type = "v5p-128"
  topology         = "4x4x4"
  provisioning     = "spot" # or "reserved" / "on-demand"
}
