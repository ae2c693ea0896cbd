#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine, for tests/test_slurm.py (CI only; run as root).
#
#   bash .ci/slurm.sh && python -m pytest tests/test_slurm.py
#
# What it does (Debian/Ubuntu, no systemd needed; the daemons are started directly):
#   1. apt-get install slurm-wlm (slurmctld, slurmd, client) and munge, unless already installed;
#   2. creates a munge key if there is none and starts munged as the munge user;
#   3. writes /etc/slurm/slurm.conf: one node (this host, its real CPU count and ~90% of its memory, GPUs
#      from /dev/nvidia* as gres), one default partition "debug", cons_tres scheduling by CPU and memory so
#      array tasks run side by side, proctrack/linuxproc and task/none (no cgroups in containers), no
#      accounting (sacct is unavailable; irlib.engine.slurm.status reads squeue/scontrol instead);
#   4. starts slurmctld and slurmd and waits until sinfo shows the node idle.
# Idempotent: a running cluster is left alone, dead daemons are restarted, a changed config restarts both.
# It refuses to overwrite a slurm.conf that it did not write (a real cluster's config).
#
# Environment: IRLIB_SLURM_DIR (state, spool and logs; default /var/spool/irlib-slurm),
#              IRLIB_SLURM_TIMEOUT (seconds to wait for the node; default 90).
set -euo pipefail

T0=$(date +%s)
DIR="${IRLIB_SLURM_DIR:-/var/spool/irlib-slurm}"
TIMEOUT="${IRLIB_SLURM_TIMEOUT:-90}"
CONF=/etc/slurm/slurm.conf
MARK="# written by irlib .ci/slurm.sh"
NODE="$(hostname -s)"

say() { echo "slurm.sh: $*"; }
die() { echo "slurm.sh: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts system daemons)"

# A daemon is alive when the pid in its pidfile is a live process.
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

show_logs() {
  for f in "$DIR/slurmctld.log" "$DIR/slurmd.log" /var/log/munge/munged.log; do
    if [ -f "$f" ]; then echo "----- tail $f" >&2; tail -n 40 "$f" >&2; fi
  done
}

# ---------------------------------------------------------------- 1. packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
   || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge"
  export DEBIAN_FRONTEND=noninteractive
  pkgs=(slurm-wlm munge)
  apt=(apt-get -y -q -o DPkg::Lock::Timeout=300)
  log=/tmp/irlib-slurm-apt.log
  # try the package lists already here first; refresh them only if that fails
  if ! "${apt[@]}" install --no-install-recommends "${pkgs[@]}" >"$log" 2>&1; then
    "${apt[@]}" update >>"$log" 2>&1 || true
    "${apt[@]}" install --no-install-recommends "${pkgs[@]}" >>"$log" 2>&1 \
      || { tail -n 30 "$log" >&2; die "apt-get install ${pkgs[*]} failed (log: $log)"; }
  fi
fi
T1=$(date +%s)

# ---------------------------------------------------------------- 2. munge
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key && chmod 0755 /run/munge
if ! alive /run/munge/munged.pid; then
  say "starting munged"
  rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock
  runuser -u munge -- /usr/sbin/munged || { show_logs; die "munged did not start"; }
fi
munge -n | unmunge >/dev/null || { show_logs; die "munge round trip failed (munged not answering)"; }

# ---------------------------------------------------------------- 3. slurm.conf
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  die "$CONF exists and was not written by this script; refusing to overwrite a real cluster's config"
fi
CPUS="$(nproc)"
MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
DEF_MEM=$(( MEM_MB / CPUS / 2 ))   # default per CPU, so several jobs fit when none asks for memory
GPUS=$(find /dev -maxdepth 1 -regex '/dev/nvidia[0-9]+' 2>/dev/null | wc -l)
GRES_NODE="" GRES_TYPES=""
if [ "$GPUS" -gt 0 ]; then
  GRES_NODE="Gres=gpu:$GPUS" GRES_TYPES="GresTypes=gpu"
fi
mkdir -p /etc/slurm "$DIR/ctld" "$DIR/d"
NEW="$(mktemp)"
cat >"$NEW" <<EOF
$MARK
ClusterName=irlib-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=$DEF_MEM
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=3
$GRES_TYPES
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB $GRES_NODE State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
CHANGED=0
if ! cmp -s "$NEW" "$CONF"; then
  CHANGED=1
  install -m 0644 "$NEW" "$CONF"
  if [ "$GPUS" -gt 0 ]; then
    echo "NodeName=$NODE Name=gpu File=/dev/nvidia[0-$((GPUS - 1))]" >/etc/slurm/gres.conf
  else
    rm -f /etc/slurm/gres.conf
  fi
fi
rm -f "$NEW"

# ---------------------------------------------------------------- 4. daemons
stop() {  # stop the daemon whose pidfile is $1 and wait for it to exit
  if alive "$1"; then
    local pid; pid="$(cat "$1")"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
}
if [ "$CHANGED" = 1 ]; then
  say "config written to $CONF (node $NODE: CPUs=$CPUS RealMemory=${MEM_MB}MB GPUs=$GPUS)"
  stop "$DIR/slurmd.pid"; stop "$DIR/slurmctld.pid"
fi
if ! alive "$DIR/slurmctld.pid"; then
  say "starting slurmctld"
  slurmctld || { show_logs; die "slurmctld did not start"; }
fi
if ! alive "$DIR/slurmd.pid"; then
  say "starting slurmd"
  slurmd || { show_logs; die "slurmd did not start"; }
fi

# ---------------------------------------------------------------- 5. wait for the node
state=""
resumed=0
for _ in $(seq $(( TIMEOUT * 2 ))); do
  state="$(sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1 || true)"
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    down*|drain*)
      # a node marked down while slurmd was away comes back once slurmd has registered
      if [ "$resumed" = 0 ] && alive "$DIR/slurmd.pid"; then
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        resumed=1
      fi ;;
  esac
  sleep 0.5
done
case "$state" in
  idle|mixed|allocated|completing) ;;
  *) show_logs; sinfo -N -l >&2 || true
     die "node $NODE not ready after ${TIMEOUT}s (sinfo state: '${state:-no answer}')" ;;
esac
T2=$(date +%s)
say "cluster up: node $NODE $state, partition debug; $((T2 - T0))s (install $((T1 - T0))s, start $((T2 - T1))s)"
