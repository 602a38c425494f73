#!/usr/bin/env bash
# One idle check on the dev instance, run every 5 minutes by
# eva-idle-shutdown.timer: powers the VM off once nobody has been connected
# (SSH or Jupyter) and the CPU has been quiet for EVA_IDLE_MINUTES.
set -euo pipefail
EVA_SCRIPT='idle-check' # read by log() in lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: idle-check.sh [options]

Counts established TCP connections to port 22 and the Jupyter port and reads
the 1-minute load average. Any connection or load above the limit refreshes
the "last active" stamp; when the stamp is older than the idle limit the VM
powers off (a stopped VM costs only its disk).

Options:
  --minutes N      idle minutes before shutdown (EVA_IDLE_MINUTES, default 30)
  --port PORT      Jupyter port to watch        (EVA_JUPYTER_PORT, default 8888)
  --max-load X     load average counted as busy (EVA_IDLE_MAX_LOAD, default 0.5)

Inputs that tests and --dry-run may fix: EVA_IDLE_NOW (epoch seconds),
EVA_IDLE_UPTIME (seconds since boot), EVA_IDLE_CONNECTIONS, EVA_IDLE_LOAD,
EVA_IDLE_STATE_DIR (/var/lib/eva-idle).
EOF
  common_usage
}

while (($#)); do
  case $1 in
    --minutes) EVA_IDLE_MINUTES=$2 && shift 2 ;;
    --port) EVA_JUPYTER_PORT=$2 && shift 2 ;;
    --max-load) EVA_IDLE_MAX_LOAD=$2 && shift 2 ;;
    *) common_flag "$@" || die "unknown option: $1 (see --help)"; shift "$EVA_SHIFT" ;;
  esac
done
finish_args
minutes=${EVA_IDLE_MINUTES:-30}
port=${EVA_JUPYTER_PORT:-8888}
max_load=${EVA_IDLE_MAX_LOAD:-0.5}
state=${EVA_IDLE_STATE_DIR:-/var/lib/eva-idle}
stamp=$state/last-active

now=${EVA_IDLE_NOW:-$(date +%s)}
conns=${EVA_IDLE_CONNECTIONS:-$(ss -Htn state established "( sport = :22 or sport = :$port )" | wc -l)}
load=${EVA_IDLE_LOAD:-$(cut -d' ' -f1 /proc/loadavg)}

busy=""
((conns > 0)) && busy="$conns open connection(s)"
if awk -v l="$load" -v m="$max_load" 'BEGIN { exit !(l > m) }'; then
  busy=${busy:+$busy, }"load $load"
fi

if [[ -n $busy || ! -f $stamp ]]; then
  log "active (${busy:-first check}); stamping $stamp"
  run mkdir -p "$state"
  run touch -d "@$now" "$stamp"
  exit 0
fi

# Count idle time from the later of the last activity and this boot: after a
# restart the stamp from before the shutdown is stale, and the first check
# (5 minutes after boot) would otherwise power the VM straight off again.
uptime_s=${EVA_IDLE_UPTIME:-$(cut -d. -f1 /proc/uptime)}
last=$(stat -c %Y "$stamp")
booted=$((now - uptime_s))
((booted > last)) && last=$booted
idle=$((now - last))
if ((idle >= minutes * 60)); then
  log "idle for ${idle}s (limit $((minutes * 60))s): powering off"
  run systemctl poweroff
else
  log "idle for ${idle}s of $((minutes * 60))s"
fi
