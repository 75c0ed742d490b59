#!/usr/bin/env bash
# Starts a single-node Slurm cluster on this machine (root; Debian packages slurm-wlm and munge), for the
# integration tests and for trying the sbatch scripts locally. Stop it with stop.sh.
#
# Knobs (environment): CPUS (default: nproc), SLURM_CONF_DIR (default /etc/slurm), STATE (default /tmp/chexlab-slurm)
set -euo pipefail
CPUS=${CPUS:-$(nproc)}
CONF_DIR=${SLURM_CONF_DIR:-/etc/slurm}
STATE=${STATE:-/tmp/chexlab-slurm}
host=$(hostname -s)
mkdir -p "$CONF_DIR" "$STATE"/{ctld,d} /run/munge /var/log/munge /etc/munge
cat > "$CONF_DIR/slurm.conf" <<CONF
ClusterName=chexlab-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
NodeName=$host CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key
pgrep -x munged > /dev/null || runuser -u munge -- /usr/sbin/munged
pgrep -x slurmctld > /dev/null || slurmctld
pgrep -x slurmd > /dev/null || slurmd
for _ in $(seq 50); do
    if sinfo -h -o %T 2>/dev/null | grep -qE '^idle'; then
        echo "local Slurm cluster up: $(sinfo -h -o '%P %D %C %T')"
        exit 0
    fi
    sleep 0.2
done
echo "Slurm did not become idle; see $STATE/slurmctld.log and $STATE/slurmd.log" >&2
sinfo >&2 || true
exit 1
