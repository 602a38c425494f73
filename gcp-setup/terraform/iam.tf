# One service account per environment with only what training needs:
# read/write objects in its bucket (granted on the bucket, not the project),
# write logs and metrics, and on GKE the node role and image pulls.
resource "google_service_account" "eva" {
  account_id   = local.name
  display_name = "Eva ${var.environment} workloads"
  depends_on   = [google_project_service.apis]
}

locals {
  bucket = var.create_bucket ? google_storage_bucket.eva[0].name : var.bucket_name
  # objectAdmin: create/overwrite/delete checkpoints; legacyBucketReader:
  # buckets.get, which GCS clients call before listing a workdir.
  bucket_roles = ["roles/storage.objectAdmin", "roles/storage.legacyBucketReader"]
  project_roles = concat(
    ["roles/logging.logWriter", "roles/monitoring.metricWriter"],
    local.gke_enabled ? ["roles/container.defaultNodeServiceAccount", "roles/artifactregistry.reader"] : [],
  )
}

resource "google_project_iam_member" "eva" {
  for_each = toset(local.project_roles)
  project  = var.project_id
  role     = each.value
  member   = "serviceAccount:${google_service_account.eva.email}"
}

resource "google_storage_bucket_iam_member" "eva" {
  for_each = toset(local.bucket_roles)
  bucket   = local.bucket
  role     = each.value
  member   = "serviceAccount:${google_service_account.eva.email}"
}

# GKE pods using the Kubernetes service account of the JobSet templates act
# as this account (Workload Identity) instead of inheriting node credentials.
resource "google_service_account_iam_member" "workload_identity" {
  count              = local.gke_enabled ? 1 : 0
  service_account_id = google_service_account.eva.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.gke.namespace}/${var.gke.k8s_service_account}]"
  # The identity pool exists once the first cluster in the project does.
  depends_on = [google_container_cluster.eva]
}

# google_tpu_v2_queued_resource cannot set a service account, so TPU VMs run
# as the project's default compute account; give it this bucket and nothing
# else. (New organisations no longer grant that account Editor; if yours
# does, remove that grant.)
data "google_compute_default_service_account" "default" {
  count      = local.tpu_enabled ? 1 : 0
  depends_on = [google_project_service.apis]
}

resource "google_storage_bucket_iam_member" "tpu_default_sa" {
  for_each = local.tpu_enabled ? toset(local.bucket_roles) : toset([])
  bucket   = local.bucket
  role     = each.value
  member   = "serviceAccount:${data.google_compute_default_service_account.default[0].email}"
}
