#!/usr/bin/env bash
# Installs the Debian packages of a one-node SLURM cluster (controller, node daemon, client commands, munge).
# Idempotent: does nothing when the commands are already there. Used by tests/slurm and by developers; see
# tools/slurm/README.md. Exit status: 0 installed or already there, 1 cannot install (not root, no apt-get).
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)
COMMANDS=(slurmctld slurmd sbatch squeue sinfo scontrol munged)

missing_commands() {
    local name
    for name in "${COMMANDS[@]}"; do
        PATH="$PATH:/usr/sbin:/sbin" command -v "$name" >/dev/null 2>&1 || echo "$name"
    done
}

if [ -z "$(missing_commands)" ]; then
    echo "tools/slurm/install.sh: SLURM and munge are already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "tools/slurm/install.sh: missing $(missing_commands | tr '\n' ' ')and apt-get is unavailable:" \
        "install the packages ${PACKAGES[*]} (or your distribution's equivalents) by hand" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "tools/slurm/install.sh: missing $(missing_commands | tr '\n' ' ')and not running as root:" \
        "run 'sudo tools/slurm/install.sh' or 'sudo apt-get install ${PACKAGES[*]}'" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
install() { apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null; }
# The package lists of a fresh container are often empty or stale: update once, then retry.
install || { apt-get update -qq && install; }
echo "tools/slurm/install.sh: installed ${PACKAGES[*]}"
