#!/usr/bin/env bash
# Delete what provision.sh built for one environment, or just its expensive
# part (the TPU slice, the GKE cluster, the dev VM) while keeping the bucket,
# network and service account for next time.
set -euo pipefail
EVA_SCRIPT='teardown' # read by log() in lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: teardown.sh --env-file gcp-setup/configs/ENV.env [options]

Options:
  --only WHAT   all (default) | tpu | gke | dev
                tpu/gke/dev destroy just that resource (terraform -target);
                all runs terraform destroy for the whole workspace. A bucket
                that still holds checkpoints stops "all" unless the tfvars set
                bucket_force_destroy = true: that is deliberate.
  --yes         destroy without the interactive confirmation

Required: EVA_ENVIRONMENT.
EOF
  common_usage
}

only=all approve=()
while (($#)); do
  case $1 in
    --only) only=$2 && shift 2 ;;
    --yes) approve=(-auto-approve) && shift ;;
    *) common_flag "$@" || die "unknown option: $1 (see --help)"; shift "$EVA_SHIFT" ;;
  esac
done
finish_args
require EVA_ENVIRONMENT
case $only in
  all) target=() ;;
  tpu) target=(-target=google_tpu_v2_queued_resource.slice[0]) ;;
  gke) target=(-target=google_container_cluster.eva[0]) ;;
  dev) target=(-target=google_compute_instance.dev[0]) ;;
  *) die "--only must be all, tpu, gke or dev (got '$only')" ;;
esac
tf=(terraform "-chdir=$EVA_TF_DIR")

run "${tf[@]}" workspace select "$EVA_ENVIRONMENT"
run "${tf[@]}" destroy -input=false "-var-file=../configs/$EVA_ENVIRONMENT.tfvars" "${target[@]}" "${approve[@]}"
