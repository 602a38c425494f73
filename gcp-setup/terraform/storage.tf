# Checkpoints and data. Uniform access (IAM only, no ACLs), never public,
# versioned so an overwritten checkpoint can be recovered; old versions and
# abandoned uploads are cleaned up so versioning does not grow without bound.
resource "google_storage_bucket" "eva" {
  count                       = var.create_bucket ? 1 : 0
  name                        = var.bucket_name
  location                    = coalesce(var.bucket_location, var.region)
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.bucket_force_destroy
  labels                      = local.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.bucket_noncurrent_days
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 7
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  depends_on = [google_project_service.apis]
}
