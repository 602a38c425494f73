#!/usr/bin/env bash
# Show what is running for one environment: the dev VM's state, the TPU
# slice's queued-resource/VM state and eva_jax.train processes per worker,
# or the JobSet and its pods on GKE.
set -euo pipefail
EVA_SCRIPT='status' # read by log() in lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: status.sh --env-file gcp-setup/configs/ENV.env [options]

EVA_TARGET selects what is shown: dev | tpu-vm | gke-tpu | gke-gpu.

Options:
  --run-name NAME   JobSet to show on GKE (EVA_RUN_NAME)
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
    run gcloud compute instances describe "$EVA_DEV_INSTANCE" "--project=$EVA_PROJECT" \
      "--zone=$EVA_ZONE" '--format=table(name,status,machineType.basename(),scheduling.provisioningModel)'
    ;;
  tpu-vm)
    require EVA_TPU_NAME EVA_TPU_TOPOLOGY
    run gcloud compute tpus queued-resources describe "$EVA_TPU_NAME" "--project=$EVA_PROJECT" \
      "--zone=$EVA_ZONE" '--format=value(state.state)'
    run gcloud compute tpus tpu-vm describe "$EVA_TPU_NAME" "--project=$EVA_PROJECT" \
      "--zone=$EVA_ZONE" '--format=value(state,health,acceleratorType)'
    tpu_ssh_all "pgrep -fa \"$EVA_PROC_PATTERN\" || echo \"\$(hostname): no eva_jax.train running\""
    ;;
  gke-tpu | gke-gpu)
    check_run_name
    gke_credentials
    ns=--namespace=${EVA_GKE_NAMESPACE:-default}
    run kubectl get jobset "$EVA_RUN_NAME" "$ns"
    run kubectl get pods "$ns" "--selector=jobset.sigs.k8s.io/jobset-name=$EVA_RUN_NAME" --output=wide
    ;;
  *) die "EVA_TARGET must be dev, tpu-vm, gke-tpu or gke-gpu (got '$EVA_TARGET')" ;;
esac
