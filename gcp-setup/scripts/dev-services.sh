#!/usr/bin/env bash
# Dev instance services: Jupyter Lab on the Jupyter port and the idle
# auto-shutdown systemd timer. Runs as root from the dev instance's startup
# script, after bootstrap-host.sh has built the conda env "eva".
set -euo pipefail
EVA_SCRIPT='dev-services' # read by log() in lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: dev-services.sh [options]

Install Jupyter Lab into the conda env "eva" and run it as a systemd service
(listening on all interfaces; the firewall only admits Google's IAP range, so
reach it with gcloud compute start-iap-tunnel), plus eva-idle-shutdown.timer,
which powers the instance off after EVA_IDLE_MINUTES without SSH or Jupyter
connections.

Options:
  --user USER        account that runs Jupyter     (EVA_DEV_USER, default eva)
  --port PORT        Jupyter Lab port              (EVA_JUPYTER_PORT, default 8888)
  --idle-minutes N   idle minutes before shutdown  (EVA_IDLE_MINUTES, default 30)
EOF
  common_usage
}

while (($#)); do
  case $1 in
    --user) EVA_DEV_USER=$2 && shift 2 ;;
    --port) EVA_JUPYTER_PORT=$2 && shift 2 ;;
    --idle-minutes) EVA_IDLE_MINUTES=$2 && shift 2 ;;
    *) common_flag "$@" || die "unknown option: $1 (see --help)"; shift "$EVA_SHIFT" ;;
  esac
done
finish_args
user=${EVA_DEV_USER:-eva}
port=${EVA_JUPYTER_PORT:-8888}
minutes=${EVA_IDLE_MINUTES:-30}
[[ $port =~ ^[0-9]+$ && $minutes =~ ^[0-9]+$ ]] || die "port and idle minutes must be numbers"
if [[ $EVA_DRY_RUN != 1 && $EUID -ne 0 ]]; then die "run as root (sudo $0 ...)"; fi

env_bin=/opt/conda/envs/eva/bin
# As the user: bootstrap-host.sh --owner gave them the env, keep it theirs.
run runuser -u "$user" -- "$env_bin/python" -m pip install --quiet 'jupyterlab>=4,<5'
# The token lives in a root-only file: IAP already restricts who can connect,
# the token stops other users on the VPC.
run_sh "test -s /etc/eva/jupyter.env || (umask 077 && mkdir -p /etc/eva && printf 'JUPYTER_TOKEN=%s\n' \"\$(openssl rand -hex 24)\" > /etc/eva/jupyter.env)"

# Copy the idle check out of the checkout so edits to the repo on the dev
# box cannot break the shutdown timer.
run install -D -m 0755 gcp-setup/scripts/lib.sh /usr/local/lib/eva/lib.sh
run install -D -m 0755 gcp-setup/scripts/idle-check.sh /usr/local/lib/eva/idle-check.sh

write_file /etc/systemd/system/eva-jupyter.service 0644 <<EOF
[Unit]
Description=Jupyter Lab for Eva on port $port (reach it through IAP)
After=network-online.target
Wants=network-online.target

[Service]
User=$user
EnvironmentFile=/etc/eva/jupyter.env
WorkingDirectory=/opt/eva/src
ExecStart=$env_bin/jupyter lab --ip=0.0.0.0 --port=$port --no-browser --ServerApp.root_dir=/opt/eva/src
Restart=on-failure

[Install]
WantedBy=multi-user.target
EOF

write_file /etc/systemd/system/eva-idle-shutdown.service 0644 <<EOF
[Unit]
Description=Power off the Eva dev instance after $minutes idle minutes

[Service]
Type=oneshot
ExecStart=/usr/local/lib/eva/idle-check.sh --minutes $minutes --port $port
EOF

write_file /etc/systemd/system/eva-idle-shutdown.timer 0644 <<EOF
[Unit]
Description=Check every 5 minutes whether the Eva dev instance is idle

[Timer]
OnBootSec=5min
OnUnitActiveSec=5min

[Install]
WantedBy=timers.target
EOF

run systemctl daemon-reload
run systemctl enable eva-jupyter.service eva-idle-shutdown.timer
# restart, not just start: picks up a changed port or unit on every boot.
run systemctl restart eva-jupyter.service eva-idle-shutdown.timer
log "Jupyter Lab on port $port as $user; idle shutdown after $minutes minutes"
