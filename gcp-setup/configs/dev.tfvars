# Development environment: the preemptible n1-standard-4 dev instance with
# Jupyter Lab and idle shutdown, its network, bucket and service account.
# Replace project_id, bucket_name and eva_repo_url with your own.
project_id   = "eva-example-project"
environment  = "dev"
region       = "us-central1"
zone         = "us-central1-a"
eva_repo_url = "https://github.com/your-org/eva.git"
eva_git_ref  = "main"
bucket_name  = "eva-example-project-dev"

dev_instance = {
  enabled               = true
  machine_type          = "n1-standard-4"
  preemptible           = true
  user                  = "eva"
  idle_shutdown_minutes = 30
  jupyter_port          = 8888
}
