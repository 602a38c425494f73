# shellcheck shell=bash disable=SC2034 # variables here are for the sourcing scripts
# Shared helpers for gcp-setup/scripts/*.sh. Sourced, never executed.
#
# Why one library: every script needs the same --dry-run / --env-file / --help
# handling, the same "missing required variable" message and the same TPU
# ssh fan-out; keeping them here means one behaviour to test.

EVA_DRY_RUN=${EVA_DRY_RUN:-0}
EVA_ENV_FILE=${EVA_ENV_FILE:-}
EVA_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Repo root = two levels above scripts/. Commands print paths relative to it
# so dry-run output does not depend on where the checkout lives.
EVA_REPO_ROOT=$(cd "$EVA_LIB_DIR/../.." && pwd)

log() { printf '[%s] %s\n' "${EVA_SCRIPT:-eva}" "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Quote one word for a POSIX shell, leaving plain words bare so dry-run
# output stays readable and can be pasted into a terminal as-is.
quote_word() {
  local w=$1
  if [[ -n $w && $w =~ ^[A-Za-z0-9_./:=@,+%-]+$ ]]; then
    printf '%s' "$w"
  elif [[ $w =~ ^(--[a-z0-9-]+=)(.+)$ ]]; then
    # --flag='value with spaces' reads better than '--flag=value ...'
    printf '%s' "${BASH_REMATCH[1]}"
    quote_word "${BASH_REMATCH[2]}"
  else
    printf "'%s'" "${w//\'/\'\\\'\'}"
  fi
}

quote_cmd() {
  local out=() w
  for w in "$@"; do out+=("$(quote_word "$w")"); done
  printf '%s\n' "${out[*]}"
}

# run CMD...: execute, or in dry-run print the exact command line.
run() {
  if [[ $EVA_DRY_RUN == 1 ]]; then
    quote_cmd "$@"
  else
    "$@"
  fi
}

# run_sh SNIPPET: for steps that only make sense as shell (idempotent
# "test || do" forms). Dry-run prints the snippet itself.
run_sh() {
  if [[ $EVA_DRY_RUN == 1 ]]; then
    printf '%s\n' "$1"
  else
    bash -c "$1"
  fi
}

# write_file PATH MODE < content: dry-run shows the file as a heredoc.
write_file() {
  local path=$1 mode=$2 content
  content=$(cat)
  if [[ $EVA_DRY_RUN == 1 ]]; then
    printf "cat > %s <<'EOF'\n%s\nEOF\n" "$(quote_word "$path")" "$content"
    quote_cmd chmod "$mode" "$path"
  else
    mkdir -p "$(dirname "$path")"
    printf '%s\n' "$content" >"$path"
    chmod "$mode" "$path"
  fi
}

# require VAR...: fail with a message naming the first unset variable.
require() {
  local name
  for name in "$@"; do
    if [[ -z ${!name:-} ]]; then
      die "missing required variable $name (set it in the --env-file or the environment; see --help)"
    fi
  done
}

# load_env_file FILE: read KEY=VALUE lines without executing the file.
# Values already in the environment win, so one-off overrides such as
# EVA_GIT_REF=my-branch script.sh --env-file ... work.
load_env_file() {
  local file=$1 line key value
  [[ -f $file ]] || die "env file not found: $file"
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^[[:space:]]*(#|$) ]] && continue
    [[ $line =~ ^([A-Z_][A-Z0-9_]*)=(.*)$ ]] || die "$file: bad line: $line"
    key=${BASH_REMATCH[1]}
    value=${BASH_REMATCH[2]}
    if [[ $value =~ ^\"(.*)\"$ || $value =~ ^\'(.*)\'$ ]]; then
      value=${BASH_REMATCH[1]}
    fi
    if [[ -z ${!key+set} ]]; then
      export "$key=$value"
    fi
  done <"$file"
}

# common_flag "$@": handles the flags every script shares. Sets EVA_SHIFT to
# the number of words consumed; returns 1 for flags it does not know.
common_flag() {
  EVA_SHIFT=1
  case $1 in
    --dry-run) EVA_DRY_RUN=1 ;;
    --env-file)
      [[ $# -ge 2 ]] || die "--env-file needs a path"
      EVA_ENV_FILE=$2
      EVA_SHIFT=2
      ;;
    --env-file=*) EVA_ENV_FILE=${1#*=} ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) return 1 ;;
  esac
}

# finish_args: call after the flag loop. Loads the env file (a path relative
# to the caller's directory), then moves to the repo root so every printed
# path is relative to it and dry-run output is the same on any checkout.
finish_args() {
  if [[ -n $EVA_ENV_FILE ]]; then load_env_file "$EVA_ENV_FILE"; fi
  cd "$EVA_REPO_ROOT" || die "cannot enter $EVA_REPO_ROOT"
}

# The help text lines every script shares.
common_usage() {
  cat <<'EOF'
Common options:
  --env-file FILE  read EVA_* settings from FILE (KEY=VALUE lines, e.g.
                   gcp-setup/configs/v5p-128.env); the environment wins
  --dry-run        print the exact commands instead of running them
  -h, --help       show this help
EOF
}

# ---------------------------------------------------------------- training --

# check_run_name: the run name becomes a JobSet name, a log file name and a
# GCS prefix, so keep it to DNS-label characters and JobSet's length budget.
check_run_name() {
  require EVA_RUN_NAME
  [[ $EVA_RUN_NAME =~ ^[a-z][a-z0-9-]{0,38}$ ]] ||
    die "EVA_RUN_NAME must match ^[a-z][a-z0-9-]{0,38}\$ (got '$EVA_RUN_NAME')"
}

# train_flags: the one place that spells the Eva CLI flags, shared by the
# TPU VM launcher and the JobSet template so both run the same command.
train_flags() {
  require EVA_CONFIG EVA_BUCKET
  check_run_name
  local flags=("--config=$EVA_CONFIG" "--workdir=gs://$EVA_BUCKET/runs/$EVA_RUN_NAME") kv
  for kv in ${EVA_TRAIN_SETS:-}; do flags+=(--set "$kv"); done
  quote_cmd "${flags[@]}"
}

# ------------------------------------------------------------------- TPUs --

# tpu_chips: product of the topology dimensions, e.g. 4x4x4 -> 64.
tpu_chips() {
  require EVA_TPU_TOPOLOGY
  [[ $EVA_TPU_TOPOLOGY =~ ^[0-9]+(x[0-9]+){1,2}$ ]] ||
    die "EVA_TPU_TOPOLOGY must look like 4x4x4 or 16x16 (got '$EVA_TPU_TOPOLOGY')"
  local chips=1 d
  for d in ${EVA_TPU_TOPOLOGY//x/ }; do chips=$((chips * d)); done
  echo "$chips"
}

# tpu_hosts: multi-host v5p and v6e slices have 4 chips per host; v6e-8 and
# smaller are a single host.
tpu_hosts() {
  local chips
  chips=$(tpu_chips)
  if ((chips <= 4)) || [[ ${EVA_TPU_ACCELERATOR:-} == v6e-8 ]]; then
    echo 1
  else
    echo $((chips / 4))
  fi
}

# tpu_gcloud: IAP mode needs the alpha track (the GA ssh/scp commands have no
# --tunnel-through-iap); internal mode is for running from inside the VPC,
# e.g. from the dev instance.
tpu_gcloud() {
  case ${EVA_SSH_MODE:-iap} in
    iap) TPU_GCLOUD=(gcloud alpha compute tpus tpu-vm) TPU_NET_FLAG=--tunnel-through-iap ;;
    internal) TPU_GCLOUD=(gcloud compute tpus tpu-vm) TPU_NET_FLAG=--internal-ip ;;
    *) die "EVA_SSH_MODE must be iap or internal (got '$EVA_SSH_MODE')" ;;
  esac
}

# tpu_worker_batches: prints one --worker value per line. Up to
# EVA_SSH_BATCH hosts (16) use "all"; bigger slices go in ranges so we never
# open more than 16 IAP tunnels at once (IAP rate-limits new tunnels).
tpu_worker_batches() {
  local hosts batch=${EVA_SSH_BATCH:-16} start end
  hosts=$(tpu_hosts)
  if ((hosts <= batch)); then
    echo all
    return
  fi
  for ((start = 0; start < hosts; start += batch)); do
    end=$((start + batch - 1))
    ((end >= hosts)) && end=$((hosts - 1))
    echo "$start-$end"
  done
}

# tpu_ssh_all REMOTE_CMD: run one shell command on every worker, in batches.
tpu_ssh_all() {
  require EVA_PROJECT EVA_ZONE EVA_TPU_NAME
  tpu_gcloud
  local workers
  while read -r workers; do
    run "${TPU_GCLOUD[@]}" ssh "$EVA_TPU_NAME" "--project=$EVA_PROJECT" \
      "--zone=$EVA_ZONE" "--worker=$workers" "$TPU_NET_FLAG" --quiet \
      "--command=$1"
  done < <(tpu_worker_batches)
}

# tpu_scp_all DEST_DIR FILE...: copy local files to every worker, in batches.
tpu_scp_all() {
  require EVA_PROJECT EVA_ZONE EVA_TPU_NAME
  tpu_gcloud
  local dest=$1 workers
  shift
  while read -r workers; do
    run "${TPU_GCLOUD[@]}" scp "$@" "$EVA_TPU_NAME:$dest" "--project=$EVA_PROJECT" \
      "--zone=$EVA_ZONE" "--worker=$workers" "$TPU_NET_FLAG" --quiet
  done < <(tpu_worker_batches)
}

# tpu_ssh_one WORKER REMOTE_CMD
tpu_ssh_one() {
  require EVA_PROJECT EVA_ZONE EVA_TPU_NAME
  tpu_gcloud
  run "${TPU_GCLOUD[@]}" ssh "$EVA_TPU_NAME" "--project=$EVA_PROJECT" \
    "--zone=$EVA_ZONE" "--worker=$1" "$TPU_NET_FLAG" --quiet "--command=$2"
}

# The regex is bracketed so the pkill/pgrep pattern never matches the remote
# shell that carries it (its command line holds "[e]va_jax", not "eva_jax").
EVA_PROC_PATTERN='[e]va_jax[.]train'

# Kill stale runs and the libtpu lock a crashed run leaves behind; a TPU
# held by a dead run makes the next jax.distributed.initialize() hang.
tpu_stop_cmd() {
  printf '%s' "sudo pkill -TERM -f \"$EVA_PROC_PATTERN\" || true; sleep 10; sudo pkill -KILL -f \"$EVA_PROC_PATTERN\" || true; sudo rm -f /tmp/libtpu_lockfile"
}

# ------------------------------------------------------------------- GKE --

# gke_credentials: point kubectl at the environment's cluster.
gke_credentials() {
  require EVA_PROJECT EVA_REGION EVA_GKE_CLUSTER
  run gcloud container clusters get-credentials "$EVA_GKE_CLUSTER" \
    "--location=$EVA_REGION" "--project=$EVA_PROJECT"
}

# Terraform root, relative to the repo root (finish_args cds there).
EVA_TF_DIR=gcp-setup/terraform
