#!/usr/bin/env bash
# Start munge + slurmctld + slurmd for this one machine, by hand (no systemd).
# Usage: source .ci/slurm-up.sh   -> exports SLURM_CONF and LRMPI_SLURM_DIR
# Settings (docs/platform.md): cgroup process tracking (nothing
# survives a kill), cred_expire=10 (fast requeue), DefMemPerCPU, CPUs=8 on 2
# cores (several one-minute jobs at once), fresh state dir per run.
set -euo pipefail
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge libpmix-dev >/dev/null
fi
LRMPI_SLURM_DIR=$(mktemp -d /tmp/lrmpi-slurm.XXXXXX)
chmod 755 "$LRMPI_SLURM_DIR"
host=$(hostname -s)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)

# --- munge: key owned by munge, runs as munge ---
mkdir -p /etc/munge /run/munge /var/log/munge /var/lib/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge
if ! pgrep -x munged >/dev/null; then
  runuser -u munge -- munged --pid-file="$LRMPI_SLURM_DIR/munged.pid"
fi

# --- slurm.conf ---
mkdir -p "$LRMPI_SLURM_DIR"/{state,spool,log}
cat > "$LRMPI_SLURM_DIR/cgroup.conf" <<CG
CgroupPlugin=autodetect
IgnoreSystemd=yes
CG
cat > "$LRMPI_SLURM_DIR/slurm.conf" <<CONF
ClusterName=lrmpi
# job ids fresh per run: MPICH under srun names its /dev/shm segments after the job
# id, and a segment left by a killed job of an earlier run must not collide
FirstJobId=$(( (RANDOM % 9000 + 1000) * 100 ))
SlurmctldHost=$host
AuthType=auth/munge
AuthInfo=cred_expire=10
ProctrackType=proctrack/cgroup
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
MpiDefault=none
KillWait=10
OverTimeLimit=0
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=2
MailProg=/bin/true
ReturnToService=2
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$LRMPI_SLURM_DIR/state
SlurmdSpoolDir=$LRMPI_SLURM_DIR/spool
SlurmctldPidFile=$LRMPI_SLURM_DIR/slurmctld.pid
SlurmdPidFile=$LRMPI_SLURM_DIR/slurmd.pid
SlurmctldLogFile=$LRMPI_SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$LRMPI_SLURM_DIR/log/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmdParameters=config_overrides
NodeName=$host NodeAddr=127.0.0.1 CPUs=8 RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$LRMPI_SLURM_DIR/slurm.conf
export LRMPI_SLURM_DIR
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 1 100); do
  if sinfo -h -o %t 2>/dev/null | grep -q idle; then break; fi
  sleep 0.2
done
sinfo -h -o "%P %t %D %c" | grep -q idle || { echo "slurm did not come up"; cat "$LRMPI_SLURM_DIR"/log/*.log; exit 1; }
echo "slurm up: $SLURM_CONF"
