# Provider pins. TPU resources exist only in google-beta; provisioning_model
# on google_tpu_v2_queued_resource needs a 7.x google-beta from 2026 or later
# (run `terraform init -upgrade` if an older lock file pins one without it).
terraform {
  # 1.9+: variable validations may refer to other variables (zone vs region).
  required_version = ">= 1.9.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 7.0, < 8.0"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = ">= 7.0, < 8.0"
    }
  }
}
