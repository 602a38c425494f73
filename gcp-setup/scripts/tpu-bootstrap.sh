#!/usr/bin/env bash
# Install Eva at EVA_GIT_REF on every worker of a TPU VM slice: copies
# bootstrap-host.sh there and runs it on all workers (batched beyond 16).
set -euo pipefail
EVA_SCRIPT='tpu-bootstrap' # read by log() in lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: tpu-bootstrap.sh --env-file gcp-setup/configs/ENV.env [options]

Copies lib.sh and bootstrap-host.sh to /tmp/eva-bootstrap on every worker and
runs "sudo bash bootstrap-host.sh --accelerator tpu" there. Every worker must
run the same code, so rerun this whenever EVA_GIT_REF changes.

Options:
  --ref REF   git ref to install (EVA_GIT_REF, default main)

Required: EVA_PROJECT, EVA_ZONE, EVA_TPU_NAME, EVA_TPU_TOPOLOGY,
EVA_REPO_URL, EVA_BUCKET. EVA_SSH_MODE=iap (default, via IAP) or internal
(from a VM inside the VPC, e.g. the dev instance).
EOF
  common_usage
}

while (($#)); do
  case $1 in
    --ref) EVA_GIT_REF=$2 && shift 2 ;;
    *) common_flag "$@" || die "unknown option: $1 (see --help)"; shift "$EVA_SHIFT" ;;
  esac
done
finish_args
require EVA_PROJECT EVA_ZONE EVA_TPU_NAME EVA_TPU_TOPOLOGY EVA_REPO_URL EVA_BUCKET
log "slice $EVA_TPU_NAME: $(tpu_hosts) hosts"

tpu_ssh_all 'mkdir -p /tmp/eva-bootstrap'
tpu_scp_all /tmp/eva-bootstrap/ gcp-setup/scripts/lib.sh gcp-setup/scripts/bootstrap-host.sh
tpu_ssh_all "$(quote_cmd sudo bash /tmp/eva-bootstrap/bootstrap-host.sh --accelerator tpu \
  --repo-url "$EVA_REPO_URL" --ref "${EVA_GIT_REF:-main}" --bucket "$EVA_BUCKET")"
