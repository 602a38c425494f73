#!/usr/bin/env bash
# Create or update one environment's cloud resources with Terraform. Each
# environment (dev, v5p-128, ...) lives in its own Terraform workspace so
# applying one never destroys another.
set -euo pipefail
EVA_SCRIPT='provision' # read by log() in lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: provision.sh --env-file gcp-setup/configs/ENV.env [options]

Runs terraform init, selects (or creates) the workspace EVA_ENVIRONMENT and
applies gcp-setup/configs/EVA_ENVIRONMENT.tfvars.

Options:
  --plan-only         stop after terraform plan
  --yes               apply without the interactive confirmation
  --write-env FILE    afterwards, write Terraform's eva_env output (the real
                      bucket, names and zone of what was built) to FILE

Required: EVA_ENVIRONMENT (the tfvars file name without .tfvars).
EOF
  common_usage
}

plan_only=0 approve=() write_env=""
while (($#)); do
  case $1 in
    --plan-only) plan_only=1 && shift ;;
    --yes) approve=(-auto-approve) && shift ;;
    --write-env) write_env=$2 && shift 2 ;;
    *) common_flag "$@" || die "unknown option: $1 (see --help)"; shift "$EVA_SHIFT" ;;
  esac
done
[[ -z $write_env || $write_env == /* ]] || write_env=$PWD/$write_env
finish_args
require EVA_ENVIRONMENT
tfvars=gcp-setup/configs/$EVA_ENVIRONMENT.tfvars
[[ -f $tfvars ]] || die "no such tfvars file: $tfvars"
tf=(terraform "-chdir=$EVA_TF_DIR")

run "${tf[@]}" init -input=false
run "${tf[@]}" workspace select -or-create=true "$EVA_ENVIRONMENT"
if ((plan_only)); then
  run "${tf[@]}" plan -input=false "-var-file=../configs/$EVA_ENVIRONMENT.tfvars"
  exit 0
fi
run "${tf[@]}" apply -input=false "-var-file=../configs/$EVA_ENVIRONMENT.tfvars" "${approve[@]}"
if [[ -n $write_env ]]; then
  run_sh "$(quote_cmd "${tf[@]}" output -raw eva_env) > $(quote_word "$write_env")"
fi
