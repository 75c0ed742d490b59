#!/usr/bin/env bash
# Stops the single-node Slurm cluster started by start.sh.
set -uo pipefail
scontrol shutdown 2>/dev/null
for _ in $(seq 50); do pgrep -x slurmctld > /dev/null || pgrep -x slurmd > /dev/null || break; sleep 0.2; done
pkill -x slurmd 2>/dev/null
[[ -f /run/munge/munged.pid ]] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null
echo "local Slurm cluster stopped"
