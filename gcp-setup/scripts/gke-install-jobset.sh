#!/usr/bin/env bash
# Install the JobSet controller into the environment's GKE cluster. Terraform
# runs this after creating the cluster (gcp-setup/terraform/jobset.tf); it is
# also safe to run by hand (server-side apply is idempotent).
set -euo pipefail
EVA_SCRIPT='gke-install-jobset' # read by log() in lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: gke-install-jobset.sh --env-file gcp-setup/configs/ENV.env [options]

Options:
  --version VER   JobSet release (EVA_JOBSET_VERSION, default v0.8.2)

Required: EVA_PROJECT, EVA_REGION, EVA_GKE_CLUSTER.
EOF
  common_usage
}

while (($#)); do
  case $1 in
    --version) EVA_JOBSET_VERSION=$2 && shift 2 ;;
    *) common_flag "$@" || die "unknown option: $1 (see --help)"; shift "$EVA_SHIFT" ;;
  esac
done
finish_args
version=${EVA_JOBSET_VERSION:-v0.8.2}
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "EVA_JOBSET_VERSION must look like v0.8.2"

gke_credentials
run kubectl apply --server-side "--filename=https://github.com/kubernetes-sigs/jobset/releases/download/$version/manifests.yaml"
run kubectl rollout status deployment/jobset-controller-manager --namespace=jobset-system --timeout=300s
