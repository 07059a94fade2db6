#!/usr/bin/env bash
# Stop what slurm-up.sh started (by the pid files) and clean its cgroups.
set -u
dir=${LRMPI_SLURM_DIR:-}
[ -n "$dir" ] && [ -d "$dir" ] || exit 0
for name in slurmd slurmctld munged; do
  pidfile="$dir/$name.pid"
  if [ -s "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
  fi
done
sleep 1
for name in slurmd slurmctld; do
  pidfile="$dir/$name.pid"
  [ -s "$pidfile" ] && kill -9 "$(cat "$pidfile")" 2>/dev/null || true
done
# empty cgroup folders slurmd leaves behind
find /sys/fs/cgroup -maxdepth 3 -type d -name "slurm_*" -empty -delete 2>/dev/null || true
find /sys/fs/cgroup -depth -type d -path "*slurm*" -empty -delete 2>/dev/null || true
rm -rf "$dir"
