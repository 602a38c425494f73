#!/usr/bin/env bash
# Show a run's log: the training log of one TPU worker, one JobSet pod on
# GKE, or the dev VM's serial console (where its startup script logs).
set -euo pipefail
EVA_SCRIPT='logs' # read by log() in lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: logs.sh --env-file gcp-setup/configs/ENV.env [options]

Options:
  --run-name NAME   run to show (EVA_RUN_NAME)
  --worker N        TPU worker / pod completion index (default 0: the process
                    that jax.distributed makes coordinator, which logs most)
  --lines N         lines of history (default 200)
  --follow          keep streaming
EOF
  common_usage
}

worker=0 lines=200 follow=0
while (($#)); do
  case $1 in
    --run-name) EVA_RUN_NAME=$2 && shift 2 ;;
    --worker) worker=$2 && shift 2 ;;
    --lines) lines=$2 && shift 2 ;;
    --follow) follow=1 && shift ;;
    *) common_flag "$@" || die "unknown option: $1 (see --help)"; shift "$EVA_SHIFT" ;;
  esac
done
finish_args
[[ $worker =~ ^[0-9]+$ && $lines =~ ^[0-9]+$ ]] || die "--worker and --lines take numbers"
require EVA_TARGET EVA_PROJECT EVA_ZONE
case $EVA_TARGET in
  dev)
    require EVA_DEV_INSTANCE
    run gcloud compute instances get-serial-port-output "$EVA_DEV_INSTANCE" \
      "--project=$EVA_PROJECT" "--zone=$EVA_ZONE"
    ;;
  tpu-vm)
    check_run_name
    tail_flags="-n $lines"
    ((follow)) && tail_flags+=" -F"
    tpu_ssh_one "$worker" "tail $tail_flags /var/tmp/eva/$EVA_RUN_NAME.log"
    ;;
  gke-tpu | gke-gpu)
    check_run_name
    gke_credentials
    selector=jobset.sigs.k8s.io/jobset-name=$EVA_RUN_NAME,jobset.sigs.k8s.io/job-index=0,batch.kubernetes.io/job-completion-index=$worker
    cmd=(kubectl logs "--namespace=${EVA_GKE_NAMESPACE:-default}" "--selector=$selector" "--tail=$lines")
    ((follow)) && cmd+=(--follow)
    run "${cmd[@]}"
    ;;
  *) die "EVA_TARGET must be dev, tpu-vm, gke-tpu or gke-gpu (got '$EVA_TARGET')" ;;
esac
