#!/usr/bin/env bash
# Start a one-node Slurm (munge, slurmctld, slurmd) on this machine for the service's
# slurm-backend tests, installing Debian's packages if missing, and print the
# directory of its slurm.conf (the tests set SLURM_CONF from it). Works without
# systemd: the daemons are started by hand and left running. The node offers 4 CPUs
# whatever the machine has (config_overrides), so 2-CPU jobs fit beside each other.
# Process tracking by /proc (no cgroups needed here); the VM scenario runs the real
# cgroup set-up of roles/slurm.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
DIR=${JOBQUEUE_TEST_SLURM_DIR:-/var/tmp/jobqueue-test-slurm}
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >&2
fi
mkdir -p "$DIR"/{state,spool,log}
node=$(hostname -s)
conf=$DIR/slurm.conf
cat >"$conf.new" <<CONF
ClusterName=jobqueue-test
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
KillWait=10
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
NodeName=$node CPUs=4 RealMemory=8000 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
restart=0
if ! cmp -s "$conf" "$conf.new"; then mv "$conf.new" "$conf"; restart=1; else rm "$conf.new"; fi
export SLURM_CONF=$conf
if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --force >&2 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
fi
mkdir -p /run/munge && chown munge:munge /run/munge
if ! munge -n >/dev/null 2>&1; then
    runuser -u munge -- munged >&2
fi
running() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
if [ $restart = 1 ]; then
    for pid in "$DIR"/slurmd.pid "$DIR"/slurmctld.pid; do
        if running "$pid"; then kill "$(cat "$pid")"; sleep 1; fi
    done
fi
running "$DIR"/slurmctld.pid || slurmctld -f "$conf" >&2
running "$DIR"/slurmd.pid || slurmd -f "$conf" >&2
for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        echo "$DIR"
        exit 0
    fi
    scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
    sleep 1
done
echo "test-slurm: the node did not come up; see $DIR/log" >&2
sinfo >&2 || true
exit 1
