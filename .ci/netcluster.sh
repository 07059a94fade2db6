#!/usr/bin/env bash
# A simulated cluster on one machine: N "hosts" as Linux network namespaces
# lrh1..lrhN, each with one veth link to a bridge that lives in its own namespace
# (lrsw), so every packet stays between these namespaces. Links are shaped with
# tc: tbf (rate) and netem (delay) on each host's interface.
#
#   bash .ci/netcluster.sh up N [RATE] [DELAY]   e.g. up 4 1gbit 50us
#   bash .ci/netcluster.sh down N
#   bash .ci/netcluster.sh slow HOST RATE        reshape one host's link (a straggler)
#
# Host i has address 10.77.0.i/24 and the hostname lrhi inside its UTS view
# (.ci/nsexec sets it); /etc/netns/lrhi/hosts maps every lrhj to its address.
# MPICH's Hydra reaches the hosts through .ci/nsexec (-launcher ssh
# -launcher-exec .ci/nsexec), which runs the command in the host's namespaces.
set -euo pipefail
cmd=${1:?up|down|slow}; n=${2:?hosts}
ns() { ip netns exec "$@"; }
shape() {  # shape HOST RATE DELAY: netem delay with a tbf rate below it; kernels
  # without sch_netem (measured: this VM's 6.18 kernel) get the rate only
  if ns "lrh$1" tc qdisc replace dev eth0 root handle 1: netem delay "$3" 2>/dev/null; then
    ns "lrh$1" tc qdisc replace dev eth0 parent 1:1 handle 10: tbf rate "$2" burst 256kbit \
      latency 50ms
  else
    ns "lrh$1" tc qdisc replace dev eth0 root tbf rate "$2" burst 256kbit latency 50ms
    echo "netcluster: no netem in this kernel: lrh$1 shaped to $2 without delay" >&2
  fi
}
case "$cmd" in
up)
  rate=${3:-10gbit}; delay=${4:-50us}
  ip netns add lrsw
  ns lrsw ip link add br0 type bridge
  ns lrsw ip link set br0 up
  ns lrsw ip link set lo up
  for i in $(seq 1 "$n"); do
    ip netns add "lrh$i"
    ip link add "lrv$i" type veth peer name eth0 netns "lrh$i"
    ip link set "lrv$i" netns lrsw
    ns lrsw ip link set "lrv$i" master br0 up
    ns "lrh$i" ip addr add "10.77.0.$i/24" dev eth0
    ns "lrh$i" ip link set eth0 up
    ns "lrh$i" ip link set lo up
    mkdir -p "/etc/netns/lrh$i"
    { echo "127.0.0.1 localhost"
      for j in $(seq 1 "$n"); do echo "10.77.0.$j lrh$j"; done; } > "/etc/netns/lrh$i/hosts"
    shape "$i" "$rate" "$delay"
  done
  ;;
slow)
  shape "$n" "${3:?rate}" "${4:-50us}"
  ;;
down)
  for i in $(seq 1 "$n"); do
    ip netns pids "lrh$i" 2>/dev/null | xargs -r kill -9 || true
    ip netns del "lrh$i" 2>/dev/null || true
    rm -rf "/etc/netns/lrh$i"
  done
  ip netns del lrsw 2>/dev/null || true
  ;;
*) echo "usage: $0 up|down|slow N ..." >&2; exit 2 ;;
esac
