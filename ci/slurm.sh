#!/usr/bin/env bash
# A private Slurm cluster on this machine, for tests: munged, slurmctld and one slurmd per node,
# all on 127.0.0.1, with state, spool and logs under one work directory.
#
#   ci/slurm.sh start [WORKDIR]   start (or reuse) it; prints the slurm.conf path for SLURM_CONF
#   ci/slurm.sh stop  [WORKDIR]   stop it
#
# STORAGE_TRACKER_SLURM_NODES (default 1) "nodes" are started, named n1, n2, ...
set -euo pipefail

cmd=${1:?usage: ci/slurm.sh start|stop [WORKDIR]}
here=$(cd "$(dirname "$0")" && pwd)
work=${2:-${STORAGE_TRACKER_WORK:-$here/../.work}}/slurm
nodes=${STORAGE_TRACKER_SLURM_NODES:-1}
host=$(hostname)
conf="$work/slurm.conf"

stop_pidfile() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop() {
  for f in "$work"/run/slurmd-*.pid "$work"/run/slurmctld.pid; do stop_pidfile "$f"; done
}

case "$cmd" in
stop) stop; exit 0 ;;
start) ;;
*) echo "usage: ci/slurm.sh start|stop [WORKDIR]" >&2; exit 2 ;;
esac

for tool in slurmctld slurmd srun sinfo munged; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "$tool is not installed: run ci/install-deps.sh" >&2; exit 1; }
done
if ! getent hosts "$host" | grep -q '^127\.'; then
  echo "the host name $host must resolve to a 127.x address for a local Slurm (add it to /etc/hosts)" >&2
  exit 1
fi
# Reuse only this work directory's own daemons: another local Slurm answers on the same ports
# with other spool paths, and steps would fail in confusing ways.
if [ -f "$work/run/slurmctld.pid" ] && kill -0 "$(cat "$work/run/slurmctld.pid")" 2>/dev/null &&
  SLURM_CONF="$conf" timeout 5 sinfo -h -o '%T' 2>/dev/null | grep -q -E '^(idle|mixed|allocated)'; then
  echo "$conf"
  exit 0
fi
stop
if other=$(pgrep -x slurmctld); then
  echo "another slurmctld is running (pid $other, $(tr '\0' ' ' </proc/"$other"/cmdline)); stop it first (ci/slurm.sh stop ITS_WORKDIR)" >&2
  exit 1
fi

# munge: one key per machine, the daemon runs as the munge user.
if ! pgrep -x munged >/dev/null; then
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge /etc/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged
fi

mkdir -p "$work"/{state,spool,log,run}
work=$(cd "$work" && pwd)
conf="$work/slurm.conf"
{
  cat <<CONF
ClusterName=storagetracker
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=${STORAGE_TRACKER_SLURMCTLD_PORT:-6817}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool/%n
SlurmctldPidFile=$work/run/slurmctld.pid
SlurmdPidFile=$work/run/slurmd-%n.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmi2
ReturnToService=2
SlurmdParameters=config_overrides
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=4
SchedulerType=sched/backfill
TmpFS=$work/tmp/%n
CONF
  for i in $(seq 1 "$nodes"); do
    mkdir -p "$work/spool/n$i" "$work/tmp/n$i"
    echo "NodeName=n$i NodeHostname=$host NodeAddr=127.0.0.1 Port=$((6827 + i)) CPUs=4 RealMemory=4000 State=UNKNOWN"
  done
  echo "PartitionName=debug Nodes=ALL Default=YES OverSubscribe=YES MaxTime=INFINITE State=UP"
} >"$conf"

export SLURM_CONF="$conf"
setsid /usr/sbin/slurmctld -D -f "$conf" >"$work/log/slurmctld.stdout" 2>&1 < /dev/null &
for i in $(seq 1 "$nodes"); do
  setsid /usr/sbin/slurmd -D -f "$conf" -N "n$i" >"$work/log/slurmd-n$i.stdout" 2>&1 < /dev/null &
done
for _ in $(seq 1 300); do
  idle=$(timeout 5 sinfo -h -o '%T %D' 2>/dev/null | awk '$1=="idle"{n+=$2} END{print n+0}')
  if [ "$idle" -ge "$nodes" ]; then
    echo "$conf"
    exit 0
  fi
  sleep 0.2
done
echo "Slurm did not come up; see $work/log/" >&2
tail -n 20 "$work"/log/*.log >&2 2>/dev/null || true
exit 1
