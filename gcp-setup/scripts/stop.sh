#!/usr/bin/env bash
# Stop a run without deleting infrastructure: kill eva_jax.train on every TPU
# worker, delete the JobSet on GKE, or stop the dev VM (disk kept).
set -euo pipefail
EVA_SCRIPT='stop' # read by log() in lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: stop.sh --env-file gcp-setup/configs/ENV.env [options]

Stopping does not free a TPU slice or GPU nodes: they bill until
teardown.sh removes them.

Options:
  --run-name NAME   JobSet to delete on GKE (EVA_RUN_NAME)
EOF
  common_usage
}

while (($#)); do
  case $1 in
    --run-name) EVA_RUN_NAME=$2 && shift 2 ;;
    *) common_flag "$@" || die "unknown option: $1 (see --help)"; shift "$EVA_SHIFT" ;;
  esac
done
finish_args
require EVA_TARGET EVA_PROJECT EVA_ZONE
case $EVA_TARGET in
  dev)
    require EVA_DEV_INSTANCE
    run gcloud compute instances stop "$EVA_DEV_INSTANCE" "--project=$EVA_PROJECT" "--zone=$EVA_ZONE"
    ;;
  tpu-vm)
    require EVA_TPU_TOPOLOGY
    tpu_ssh_all "$(tpu_stop_cmd)"
    ;;
  gke-tpu | gke-gpu)
    check_run_name
    gke_credentials
    run kubectl delete jobset "$EVA_RUN_NAME" "--namespace=${EVA_GKE_NAMESPACE:-default}" --ignore-not-found
    ;;
  *) die "EVA_TARGET must be dev, tpu-vm, gke-tpu or gke-gpu (got '$EVA_TARGET')" ;;
esac
