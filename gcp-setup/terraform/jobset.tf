# Install the JobSet controller once the cluster has a node to run it. There
# is no GKE add-on for JobSet, so this shells out to the same script an
# operator would run (needs gcloud, kubectl and gke-gcloud-auth-plugin on the
# machine running terraform). Reruns when the cluster or version changes.
resource "terraform_data" "jobset" {
  count            = local.gke_enabled ? 1 : 0
  triggers_replace = [google_container_cluster.eva[0].id, var.gke.jobset_version]

  provisioner "local-exec" {
    command = "bash ${path.module}/../scripts/gke-install-jobset.sh"
    environment = {
      EVA_PROJECT        = var.project_id
      EVA_REGION         = var.region
      EVA_GKE_CLUSTER    = google_container_cluster.eva[0].name
      EVA_JOBSET_VERSION = var.gke.jobset_version
    }
  }

  depends_on = [google_container_node_pool.system]
}
