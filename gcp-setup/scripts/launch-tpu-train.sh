#!/usr/bin/env bash
# Start one multi-host training run on a TPU VM slice: stop stale runs on
# every worker, then start the same `python -m eva_jax.train` on all of them.
# jax.distributed.initialize() (no arguments) finds its peers from the TPU
# metadata, so every host runs the identical command.
set -euo pipefail
EVA_SCRIPT='launch-tpu-train' # read by log() in lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: launch-tpu-train.sh --env-file gcp-setup/configs/ENV.env [options]

On every worker (gcloud ... tpu-vm ssh --worker=all, in batches of 16 hosts
beyond 16) it first kills stale eva_jax.train processes and the libtpu lock,
then starts, detached:
  python -m eva_jax.train --config=EVA_CONFIG \
      --workdir=gs://EVA_BUCKET/runs/EVA_RUN_NAME [--set KEY=VALUE ...]
logging to /var/tmp/eva/EVA_RUN_NAME.log on each worker. Relaunching with the
same run name resumes from the checkpoints in the workdir.

Options:
  --config NAME      Eva config: v3_671b, v3_small, v3_tiny, v2_lite (EVA_CONFIG)
  --run-name NAME    run name, [a-z][a-z0-9-]* (EVA_RUN_NAME)
  --set KEY=VALUE    extra override for eva_jax.train, repeatable; added after
                     EVA_TRAIN_SETS (space-separated KEY=VALUE list)

Required: EVA_PROJECT, EVA_ZONE, EVA_TPU_NAME, EVA_TPU_TOPOLOGY, EVA_BUCKET,
EVA_CONFIG, EVA_RUN_NAME. Run tpu-bootstrap.sh first.
EOF
  common_usage
}

extra_sets=()
while (($#)); do
  case $1 in
    --config) EVA_CONFIG=$2 && shift 2 ;;
    --run-name) EVA_RUN_NAME=$2 && shift 2 ;;
    --set) extra_sets+=("$2") && shift 2 ;;
    *) common_flag "$@" || die "unknown option: $1 (see --help)"; shift "$EVA_SHIFT" ;;
  esac
done
finish_args
require EVA_PROJECT EVA_ZONE EVA_TPU_NAME EVA_TPU_TOPOLOGY EVA_BUCKET EVA_CONFIG
EVA_TRAIN_SETS="${EVA_TRAIN_SETS:-} ${extra_sets[*]}"
train_args=$(train_flags)
log "run $EVA_RUN_NAME on $EVA_TPU_NAME ($(tpu_hosts) hosts)"

tpu_ssh_all "$(tpu_stop_cmd)"
log_file=/var/tmp/eva/$EVA_RUN_NAME.log
# Only the training process goes to the background, with every fd
# redirected: otherwise the remote shell keeps ssh's output open and gcloud
# would wait for the whole run (and the next batch would never start).
# setsid + nohup: the run survives the end of the ssh session.
tpu_ssh_all "sudo mkdir -p /var/tmp/eva && sudo chmod 1777 /var/tmp/eva && cd /opt/eva/src && { setsid nohup /opt/conda/envs/eva/bin/python -m eva_jax.train $train_args > $log_file 2>&1 < /dev/null & }"
log "started; follow with: gcp-setup/scripts/logs.sh --env-file ... --follow"
