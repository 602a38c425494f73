#!/usr/bin/env bash
# Install Eva at a git ref on THIS host (TPU worker, dev instance, container)
# and point it at the bucket. Runs as root; every step is idempotent so it is
# safe at every boot and on every relaunch.
set -euo pipefail
EVA_SCRIPT='bootstrap-host' # read by log() in lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: bootstrap-host.sh [options]

Install Eva on this host: Miniforge in /opt/conda with the conda env "eva"
(Python 3.11), the repo at EVA_GIT_REF in /opt/eva/src installed with
pip install -e ".[test]", the JAX build for the accelerator, and
/etc/profile.d/eva.sh exporting EVA_BUCKET and activating the env.

Options:
  --repo-url URL       git URL of Eva                  (EVA_REPO_URL, required)
  --ref REF            branch, tag or commit           (EVA_GIT_REF, default main)
  --bucket NAME        GCS bucket for data/checkpoints (EVA_BUCKET, required)
  --accelerator KIND   tpu | cuda | cpu                (EVA_ACCELERATOR, default cpu)
  --owner USER         chown /opt/eva and /opt/conda to USER (dev instance)
  --keep-checkout      never move an existing checkout (dev instance: your
                       edits survive reboots); only clone when missing
  --no-conda           use the python3 on PATH (container images that already
                       ship Python 3.11/3.12) instead of Miniforge
EOF
  common_usage
}

owner="" keep_checkout=0 use_conda=1
while (($#)); do
  case $1 in
    --repo-url) EVA_REPO_URL=$2 && shift 2 ;;
    --ref) EVA_GIT_REF=$2 && shift 2 ;;
    --bucket) EVA_BUCKET=$2 && shift 2 ;;
    --accelerator) EVA_ACCELERATOR=$2 && shift 2 ;;
    --owner) owner=$2 && shift 2 ;;
    --keep-checkout) keep_checkout=1 && shift ;;
    --no-conda) use_conda=0 && shift ;;
    *) common_flag "$@" || die "unknown option: $1 (see --help)"; shift "$EVA_SHIFT" ;;
  esac
done
finish_args
require EVA_REPO_URL EVA_BUCKET
ref=${EVA_GIT_REF:-main}
accel=${EVA_ACCELERATOR:-cpu}
case $accel in
  tpu) jax_extra=tpu ;;
  cuda) jax_extra=cuda12,k8s ;; # k8s: lets jax.distributed find JobSet peers
  cpu) jax_extra="" ;;
  *) die "--accelerator must be tpu, cuda or cpu (got '$accel')" ;;
esac
if [[ $EVA_DRY_RUN != 1 && $EUID -ne 0 ]]; then die "run as root (sudo $0 ...)"; fi

src=/opt/eva/src
repo=$(quote_word "$EVA_REPO_URL")
qref=$(quote_word "$ref")

run_sh 'command -v git >/dev/null || (apt-get update -q && apt-get install -y -q git)'

if ((use_conda)); then
  # Miniforge (conda-forge only, no Anaconda channel terms); the TPU VM images
  # ship Python 3.10, older than Eva's requires-python.
  run_sh 'test -x /opt/conda/bin/conda || (curl -fsSL -o /tmp/miniforge.sh https://github.com/conda-forge/miniforge/releases/latest/download/Miniforge3-Linux-x86_64.sh && bash /tmp/miniforge.sh -b -p /opt/conda)'
  run_sh 'test -x /opt/conda/envs/eva/bin/python || /opt/conda/bin/conda create -y -q -n eva python=3.11'
  py=/opt/conda/envs/eva/bin/python
else
  py=python3
fi

if ((keep_checkout)); then
  run_sh "test -d $src/.git || (git clone $repo $src && git -C $src fetch origin $qref && git -C $src checkout --detach FETCH_HEAD)"
else
  run_sh "test -d $src/.git || git clone $repo $src"
  # fetch REF works for branches, tags and full commit ids alike.
  run_sh "git -c safe.directory=$src -C $src fetch origin $qref && git -c safe.directory=$src -C $src checkout --force --detach FETCH_HEAD"
fi

run "$py" -m pip install --quiet --upgrade pip
run "$py" -m pip install --quiet -e "${src}[test]"
if [[ -n $jax_extra ]]; then
  # Same jax version that Eva's own pins resolved to, plus the accelerator
  # plugin (libtpu / CUDA wheels), so the two never disagree.
  run_sh "$py -m pip install --quiet \"jax[$jax_extra]==\$($py -c 'import jax; print(jax.__version__)')\""
fi

if ((use_conda)); then
  activate='. /opt/conda/etc/profile.d/conda.sh && conda activate eva'
else
  activate=':'
fi
write_file /etc/profile.d/eva.sh 0644 <<EOF
# Written by gcp-setup/scripts/bootstrap-host.sh: Eva's bucket and env.
export EVA_BUCKET=$(quote_word "$EVA_BUCKET")
export EVA_WORKDIR_ROOT=gs://$EVA_BUCKET/runs
export EVA_HOME=$src
$activate
EOF

if [[ -n $owner ]]; then
  run chown -R "$owner:$owner" /opt/eva
  if ((use_conda)); then run chown -R "$owner:$owner" /opt/conda; fi
fi
log "Eva installed in $src (ref $ref, accelerator $accel)"
