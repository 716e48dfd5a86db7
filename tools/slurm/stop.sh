#!/usr/bin/env bash
# Stops what tools/slurm/start.sh started (its munged, slurmctld and slurmd, by the pid files it recorded) and
# puts back the /etc/slurm files it replaced. Leaves the state folder (logs, jobcomp.log) for inspection.
# Safe to run twice, or when nothing was started.
set -uo pipefail

STATE=${LOCAL_SLURM_DIR:-/var/tmp/ssl-challenge-slurm}
CONF_DIR=/etc/slurm
CONF_FILES=(slurm.conf gres.conf cgroup.conf)
unset SLURM_CONF

if [ ! -f "$STATE/started" ]; then
    echo "tools/slurm/stop.sh: nothing started from $STATE"
    exit 0
fi

# Stops the process of a pid file, only when the process still runs the program that wrote it.
stop_daemon() {
    local program=$1 pid_file=$2 pid
    [ -f "$pid_file" ] || return 0
    pid=$(tr -d '[:space:]' <"$pid_file")
    rm -f "$pid_file"
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$program" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    echo "tools/slurm/stop.sh: $program ($pid) ignored SIGTERM for 5 s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

restore_config() {
    local name
    for name in "${CONF_FILES[@]}"; do
        if [ -f "$STATE/backup/$name" ]; then
            mv -f "$STATE/backup/$name" "$CONF_DIR/$name"
        elif [ -f "$CONF_DIR/$name" ] && grep -qF "written by tools/slurm/start.sh" "$CONF_DIR/$name"; then
            rm -f "$CONF_DIR/$name"
        fi
    done
}

# In the reverse order of starting: the daemons first, munge (which they talk through) last.
tac "$STATE/started" | while read -r what where; do
    case $what in
        slurmd | slurmctld | munged) stop_daemon "$what" "$where" ;;
        config) restore_config ;;
    esac
done
rm -f "$STATE/started"
echo "tools/slurm/stop.sh: stopped the local cluster of $STATE"
