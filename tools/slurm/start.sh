#!/usr/bin/env bash
# Starts a one-node SLURM cluster on this machine for tests/slurm: its own munged (own key and socket),
# slurmctld and slurmd, a fake GPU GRES, no accounting database, job completions logged to a text file.
# Needs root (the daemons, mknod, /etc/slurm) and the packages of tools/slurm/install.sh.
#
# Everything lives in one state folder, LOCAL_SLURM_DIR (default /var/tmp/ssl-challenge-slurm): keys, sockets,
# spool, logs, pid files, jobcomp.log, the fake GPU devices, and copies of any /etc/slurm file it replaced, so
# that tools/slurm/stop.sh stops only what this script started and puts those files back.
# Re-runnable: when its cluster already answers it says so and exits; the leftovers of a dead one are cleaned
# up first.
#
# Settings (environment): LOCAL_SLURM_DIR, LOCAL_SLURM_GPUS (fake GPUs, default 2),
# LOCAL_SLURM_CTLD_PORT / LOCAL_SLURM_SLURMD_PORT (default 6817 / 6818), LOCAL_SLURM_TIMEOUT (seconds, 30).
set -euo pipefail

STATE=${LOCAL_SLURM_DIR:-/var/tmp/ssl-challenge-slurm}
GPUS=${LOCAL_SLURM_GPUS:-2}
CTLD_PORT=${LOCAL_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${LOCAL_SLURM_SLURMD_PORT:-6818}
TIMEOUT=${LOCAL_SLURM_TIMEOUT:-30}
# The client commands and the job-step plugin read the default path only: the plugin strips SLURM_* variables
# from the job's environment, so SLURM_CONF would not reach the srun inside a job.
CONF_DIR=/etc/slurm
CONF_FILES=(slurm.conf gres.conf cgroup.conf)
MARKER="# written by tools/slurm/start.sh (state in $STATE); tools/slurm/stop.sh removes it"
export PATH="$PATH:/usr/sbin:/sbin"
# The Makefile points SLURM_CONF at /dev/null for local runs; this cluster's file is at the default path.
unset SLURM_CONF
HERE=$(cd "$(dirname "$0")" && pwd)

fail() { echo "tools/slurm/start.sh: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "must run as root (it starts daemons, creates device nodes and writes $CONF_DIR)"
for name in munged slurmctld slurmd sinfo scontrol; do
    command -v "$name" >/dev/null || fail "'$name' not found: run tools/slurm/install.sh first"
done

if [ -f "$STATE/started" ] && scontrol ping >/dev/null 2>&1 \
    && sinfo -h -o %T 2>/dev/null | grep -qxE 'idle|mixed|allocated'; then
    echo "tools/slurm/start.sh: the local cluster of $STATE is already running"
    exit 0
fi
# A cluster of ours that died, or a half-finished start: stop what is left, restore the configuration.
[ -f "$STATE/started" ] && "$HERE/stop.sh"

# Another SLURM on this machine (a real node, another state folder): leave it and its configuration alone.
foreign=$(grep -lxE 'slurmctld|slurmd' /proc/[0-9]*/comm 2>/dev/null | cut -d/ -f3 | tr '\n' ' ' || true)
[ -z "$foreign" ] || fail "SLURM daemons not started from $STATE are running (pids $foreign): stop them first"

mkdir -p "$STATE"/{munge,slurmctld,slurmd,log,dev,backup}
chmod 700 "$STATE/munge"
rm -f "$STATE"/log/*.log "$STATE/jobcomp.log"
: >"$STATE/started"

# Stop whatever was started so far when a later step fails, so that a failed start leaves nothing running.
on_error() { echo "tools/slurm/start.sh: start failed; logs in $STATE/log" >&2; "$HERE/stop.sh" >&2 || true; }
trap on_error ERR

# ---------------------------------------------------------------- munge: its own key and socket
MUNGE_SOCKET="$STATE/munge/munge.socket"
[ -f "$STATE/munge/munge.key" ] || dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$STATE/munge/munge.key"
munged --force --key-file="$STATE/munge/munge.key" --socket="$MUNGE_SOCKET" \
    --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/log/munged.log" \
    --seed-file="$STATE/munge/munged.seed"
echo "munged $STATE/munge/munged.pid" >>"$STATE/started"

# ---------------------------------------------------------------- node resources of this machine
NODE=$(hostname -s)
CPUS=$(nproc)
MEMORY_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# Leave room for the system; a default per CPU lets several jobs that ask no memory share the node.
REAL_MEMORY_MB=$((MEMORY_MB * 9 / 10))
DEF_MEM_PER_CPU=$((REAL_MEMORY_MB / CPUS < 1024 ? REAL_MEMORY_MB / CPUS : 1024))

# slurmd rejects a GPU GRES backed by plain files or by Count= alone: it wants character devices.
GPU_FILES=""
NODE_GRES=""
if [ "$GPUS" -gt 0 ]; then
    for ((index = 0; index < GPUS; index++)); do
        [ -c "$STATE/dev/fakegpu$index" ] || mknod "$STATE/dev/fakegpu$index" c 1 3  # /dev/null's numbers
    done
    GPU_FILES="$STATE/dev/fakegpu[0-$((GPUS - 1))]"
    NODE_GRES="Gres=gpu:$GPUS"
fi

# ---------------------------------------------------------------- configuration at the default path
mkdir -p "$CONF_DIR"
for name in "${CONF_FILES[@]}"; do
    if [ -e "$CONF_DIR/$name" ] && ! grep -qF "written by tools/slurm/start.sh" "$CONF_DIR/$name"; then
        cp -p "$CONF_DIR/$name" "$STATE/backup/$name"
    fi
done
echo "config $CONF_DIR" >>"$STATE/started"

cat >"$CONF_DIR/slurm.conf" <<EOF
$MARKER
ClusterName=localslurm
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# Containers rarely allow cgroups: track processes through /proc, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
# No accounting database (no slurmdbd): sacct cannot answer, the executor plugin must poll squeue, which
# shows finished jobs for MinJobAge seconds (an hour, so that tests can read every job's request with
# 'scontrol show job' after a run). Completed jobs are also written to a text file.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.log
MinJobAge=3600
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$DEF_MEM_PER_CPU
GresTypes=gpu
ReturnToService=2
# The node's CPUs and memory are as declared here, whatever the hardware probe says.
SlurmdParameters=config_overrides
SlurmdTimeout=60
MailProg=/bin/true
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$REAL_MEMORY_MB $NODE_GRES State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

echo "$MARKER" >"$CONF_DIR/gres.conf"
if [ "$GPUS" -gt 0 ]; then
    echo "NodeName=$NODE Name=gpu File=$GPU_FILES" >>"$CONF_DIR/gres.conf"
fi

cat >"$CONF_DIR/cgroup.conf" <<EOF
$MARKER
# No cgroup plugin is configured in slurm.conf; this file only keeps slurmd from looking for mounts.
CgroupAutomount=no
EOF

# ---------------------------------------------------------------- daemons
slurmctld -c
echo "slurmctld $STATE/slurmctld.pid" >>"$STATE/started"
slurmd -N "$NODE"
echo "slurmd $STATE/slurmd.pid" >>"$STATE/started"

deadline=$((SECONDS + TIMEOUT))
until sinfo -h -o %T 2>/dev/null | grep -qx idle; do
    for daemon in slurmctld slurmd; do
        pid=$(cat "$STATE/$daemon.pid" 2>/dev/null || true)
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            deadline=0  # a daemon exited: its log says why, no need to wait
        fi
    done
    if [ $SECONDS -ge $deadline ]; then
        echo "tools/slurm/start.sh: node not idle after ${TIMEOUT}s;" \
            "sinfo says: $(sinfo -h -o '%T %E' 2>&1)" >&2
        tail -n 20 "$STATE"/log/slurmctld.log "$STATE"/log/slurmd.log >&2 || true
        false
    fi
    sleep 0.5
done
trap - ERR
echo "tools/slurm/start.sh: node $NODE idle ($CPUS CPUs, ${REAL_MEMORY_MB} MB, gpu:$GPUS); state in $STATE"
