#!/usr/bin/env bash
# shellcheck disable=SC2034 # template values are read indirectly by render()
# Submit a training run to GKE as a JobSet: renders gcp-setup/k8s/
# jobset-{tpu,gpu}.yaml.tmpl from the env file, deletes a stale JobSet of the
# same name, and applies the new one.
set -euo pipefail
EVA_SCRIPT='gke-submit' # read by log() in lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: gke-submit.sh --env-file gcp-setup/configs/ENV.env [options]

EVA_TARGET picks the template: gke-tpu (TPU slices, EVA_NUM_SLICES slices of
EVA_TPU_TOPOLOGY) or gke-gpu (EVA_GPU_NODES nodes of EVA_GPUS_PER_NODE GPUs).
Each pod installs Eva at EVA_GIT_REF into EVA_IMAGE (default python:3.11)
with bootstrap-host.sh --no-conda, then runs
  python -m eva_jax.train --config=... --workdir=gs://EVA_BUCKET/runs/RUN ...

Options:
  --config NAME      Eva config (EVA_CONFIG)
  --run-name NAME    JobSet and run name (EVA_RUN_NAME)
  --set KEY=VALUE    extra eva_jax.train override, repeatable
  --render-only      print the manifest to stdout and stop (no cluster needed)
  --output FILE      where to write the manifest (default /tmp/eva-jobset-RUN.yaml)

Required: EVA_TARGET, EVA_PROJECT, EVA_REGION, EVA_GKE_CLUSTER, EVA_BUCKET,
EVA_REPO_URL, EVA_SERVICE_ACCOUNT, EVA_CONFIG, EVA_RUN_NAME, and
EVA_TPU_ACCELERATOR + EVA_TPU_TOPOLOGY (gke-tpu) or EVA_GPU_NODES (gke-gpu).
EOF
  common_usage
}

extra_sets=() render_only=0 output=""
while (($#)); do
  case $1 in
    --config) EVA_CONFIG=$2 && shift 2 ;;
    --run-name) EVA_RUN_NAME=$2 && shift 2 ;;
    --set) extra_sets+=("$2") && shift 2 ;;
    --render-only) render_only=1 && shift ;;
    --output) output=$2 && shift 2 ;;
    *) common_flag "$@" || die "unknown option: $1 (see --help)"; shift "$EVA_SHIFT" ;;
  esac
done
[[ -z $output || $output == /* ]] || output=$PWD/$output
finish_args
require EVA_TARGET EVA_BUCKET EVA_REPO_URL EVA_SERVICE_ACCOUNT EVA_CONFIG
EVA_TRAIN_SETS="${EVA_TRAIN_SETS:-} ${extra_sets[*]}"

# Template values. Names are the ${...} placeholders in the templates.
TRAIN_FLAGS=$(train_flags)
RUN_NAME=$EVA_RUN_NAME
NAMESPACE=${EVA_GKE_NAMESPACE:-default}
KSA=${EVA_K8S_SA:-eva-train}
GSA=$EVA_SERVICE_ACCOUNT
IMAGE=${EVA_IMAGE:-python:3.11}
BUCKET=$EVA_BUCKET
MAX_RESTARTS=${EVA_MAX_RESTARTS:-3}
case $EVA_TARGET in
  gke-tpu)
    require EVA_TPU_ACCELERATOR EVA_TPU_TOPOLOGY
    accel=tpu template=gcp-setup/k8s/jobset-tpu.yaml.tmpl
    gen=${EVA_TPU_ACCELERATOR%%-*}
    [[ $gen == v5p || $gen == v6e ]] || die "EVA_TPU_ACCELERATOR must be v5p-N or v6e-N"
    TPU_ACCELERATOR_LABEL=tpu-$gen-slice
    TPU_TOPOLOGY=$EVA_TPU_TOPOLOGY
    HOSTS=$(tpu_hosts)
    CHIPS_PER_HOST=$(($(tpu_chips) / HOSTS))
    NUM_SLICES=${EVA_NUM_SLICES:-1}
    ;;
  gke-gpu)
    require EVA_GPU_NODES
    accel=cuda template=gcp-setup/k8s/jobset-gpu.yaml.tmpl
    GPU_NODES=$EVA_GPU_NODES
    GPUS_PER_NODE=${EVA_GPUS_PER_NODE:-8}
    GPU_ACCELERATOR=${EVA_GPU_ACCELERATOR:-nvidia-h200-141gb}
    ;;
  *) die "EVA_TARGET must be gke-tpu or gke-gpu for gke-submit.sh (got '$EVA_TARGET')" ;;
esac
BOOTSTRAP="git clone -q $(quote_word "$EVA_REPO_URL") /opt/eva/src && bash /opt/eva/src/gcp-setup/scripts/bootstrap-host.sh --no-conda $(quote_cmd --accelerator "$accel" --repo-url "$EVA_REPO_URL" --ref "${EVA_GIT_REF:-main}" --bucket "$EVA_BUCKET")"

# render: replace each ${NAME} whose NAME is a set shell variable; anything
# left over is a template/script mismatch, so fail loudly.
render() {
  local line name value rendered=""
  while IFS= read -r line || [[ -n $line ]]; do
    while [[ $line =~ \$\{([A-Z_]+)\} ]]; do
      name=${BASH_REMATCH[1]}
      [[ -n ${!name+set} ]] || die "$template: no value for \${$name}"
      value=${!name}
      # Quoted replacement: bash 5.2 would otherwise expand "&" in values.
      line=${line//"\${$name}"/"$value"}
    done
    rendered+=$line$'\n'
  done <"$template"
  printf '%s' "$rendered"
}
manifest=$(render)

if ((render_only)); then
  printf '%s\n' "$manifest"
  exit 0
fi
output=${output:-/tmp/eva-jobset-$RUN_NAME.yaml}
gke_credentials
write_file "$output" 0644 <<<"$manifest"
run kubectl delete jobset "$RUN_NAME" "--namespace=$NAMESPACE" --ignore-not-found --wait=true
run kubectl apply "--filename=$output"
log "submitted JobSet $RUN_NAME; follow with gcp-setup/scripts/logs.sh --env-file ... --follow"
