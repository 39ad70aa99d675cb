#!/usr/bin/env bash
# start-local-slurm.sh - a one-node Slurm "cluster" on localhost for CI (tests/test_slurm.py).
# From ../shared/slurm (tested there on this machine kind: Debian 12, Slurm 22.05.8).
#
# Installs Debian's slurmctld/slurmd/slurm-client/munge if they are missing,
# writes /etc/slurm/slurm.conf + gres.conf (node "localhost", all CPUs, 3/4 of
# RAM, N fake GPUs whose "device files" are clones of /dev/null), starts
# munged, slurmctld and slurmd by hand (no systemd needed) and waits until
# `sinfo` shows the node idle.  Idempotent: running it again while the
# cluster is up does nothing.  Must run as root.
#
# Only daemons that this script started are recorded (in $SLURM_CI_DIR/run/
# owned.*.pid) and stop-local-slurm.sh stops exactly those, by pid.
#
# Environment knobs (all optional):
#   SLURM_CI_DIR            state/log/pid folder      (default /tmp/slurm-ci)
#   SLURM_CI_GPUS           number of fake GPUs        (default 2)
#   SLURM_CI_GPU_TYPE       gres type, e.g. "fake" -> gres gpu:fake:N (default: untyped)
#   SLURM_CI_PARTITION      partition name             (default debug)
#   SLURM_CI_TIMEOUT        seconds to wait for daemons (default 60)
#   SLURM_CI_ACCOUNTING=1   also install/start MariaDB + slurmdbd so that
#                           `sacct` works (+10-30 s cold, +2 s warm); default
#                           0 = no accounting: `sacct` fails, poll with squeue
#   SLURM_CI_OVERWRITE_CONF=1  replace an /etc/slurm/slurm.conf that this
#                           script did not write (it is kept as *.bak)
set -euo pipefail

DIR=${SLURM_CI_DIR:-/tmp/slurm-ci}
NGPUS=${SLURM_CI_GPUS:-2}
GPU_TYPE=${SLURM_CI_GPU_TYPE:-}
PARTITION=${SLURM_CI_PARTITION:-debug}
TIMEOUT=${SLURM_CI_TIMEOUT:-60}
ACCT=${SLURM_CI_ACCOUNTING:-0}
NODE=localhost
CONF=/etc/slurm/slurm.conf
GRES_CONF=/etc/slurm/gres.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
DB_SOCK=/run/mysqld/mysqld.sock
MARKER="# managed by start-local-slurm.sh"
RUN=$DIR/run
LOG=$DIR/log

say() { echo "[start-local-slurm] $*" >&2; }
die() {
    say "ERROR: $*"
    for f in "$LOG"/slurmctld.log "$LOG"/slurmd.log; do
        [ -f "$f" ] && { say "--- tail $f"; tail -n 20 "$f" >&2; }
    done
    exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root"

# ---------------------------------------------------------------- helpers
# alive PIDFILE COMM: true when the pid in PIDFILE runs a process named COMM
alive() {
    local pid
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}

node_state() { sinfo -h -n "$NODE" -o '%T' 2>/dev/null | head -n 1; }

wait_for() {  # wait_for DESCRIPTION COMMAND...
    local what=$1 i; shift
    for ((i = 0; i < TIMEOUT * 4; i++)); do
        if "$@"; then return 0; fi
        sleep 0.25
    done
    die "timed out after ${TIMEOUT}s waiting for $what"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
ctld_ok() { scontrol ping >/dev/null 2>&1; }
node_ok() { case "$(node_state)" in idle | mixed | allocated | completing) return 0 ;; *) return 1 ;; esac; }
db_ok() { mariadb --no-defaults -S "$DB_SOCK" -e 'select 1' >/dev/null 2>&1; }
dbd_ok() { sacctmgr -n show cluster >/dev/null 2>&1; }

# ---------------------------------------------------------------- install
t0=$(date +%s)
pkgs="slurmctld slurmd slurm-client munge"
[ "$ACCT" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
need_install=0
for b in slurmctld slurmd sbatch munged; do command -v "$b" >/dev/null || need_install=1; done
if [ "$ACCT" = 1 ]; then
    for b in slurmdbd mariadbd; do command -v "$b" >/dev/null || need_install=1; done
fi
if [ "$need_install" = 1 ]; then
    say "installing $pkgs (apt)"
    # keep the packages' init scripts from starting daemons during install
    own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
    if [ "$own_policy" = 1 ]; then
        rm -f /usr/sbin/policy-rc.d
        trap - EXIT
    fi
    say "installed in $(($(date +%s) - t0))s"
fi

# ---------------------------------------------------------------- config
mkdir -p "$DIR/state" "$DIR/spool" "$RUN" "$LOG" "$DIR/fakedev" /etc/slurm

# fake GPU "devices": character devices 1,3 (= /dev/null). gres/gpu drops
# gres.conf lines without File=, and rejects regular files.
for ((i = 0; i < NGPUS; i++)); do
    [ -c "$DIR/fakedev/gpu$i" ] || mknod -m 666 "$DIR/fakedev/gpu$i" c 1 3
done

# hardware line as slurmd sees it, e.g.
# NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
hw=$(slurmd -C | head -n 1)
real_mem=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$hw")
cpus=$(sed -E 's/.*CPUs=([0-9]+).*/\1/' <<<"$hw")
topo=$(sed -E 's/^NodeName=[^ ]+ //; s/ RealMemory=[0-9]+//' <<<"$hw")
mem=$((real_mem * 3 / 4))
gres="gpu:$NGPUS"
type_kw=""
if [ -n "$GPU_TYPE" ]; then
    gres="gpu:$GPU_TYPE:$NGPUS"
    type_kw=" Type=$GPU_TYPE"
fi
gres_kw=" Gres=$gres"
[ "$NGPUS" -gt 0 ] || gres_kw=""
if [ "$ACCT" = 1 ]; then
    acct_lines="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux"
else
    acct_lines="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

new_conf=$(
    cat <<EOF
$MARKER
# one-node Slurm for CI: no cgroups, fake GPUs (gres.conf)
ClusterName=localci
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$acct_lines
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
# reject (at sbatch time) jobs that can never fit, e.g. --cpus-per-task 4 on
# a 2-CPU node; without this they pend forever (Reason=PartitionConfig) and
# Snakemake waits forever
EnforcePartLimits=ALL
# keep finished jobs visible to squeue and scontrol for 1 h, so the Snakemake slurm
# plugin can poll with squeue (sacct needs slurmdbd: SLURM_CI_ACCOUNTING=1)
MinJobAge=3600
DefMemPerCPU=1000
MailProg=/bin/true
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmdSpoolDir=$DIR/spool
StateSaveLocation=$DIR/state
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 $topo RealMemory=$mem$gres_kw State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
new_gres=$(
    cat <<EOF
$MARKER
AutoDetect=off
EOF
    if [ "$NGPUS" -gt 0 ]; then
        echo "NodeName=$NODE Name=gpu$type_kw File=$DIR/fakedev/gpu[0-$((NGPUS - 1))]"
    fi
)

new_dbd=$(
    cat <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
EOF
)

# ---------------------------------------------------------------- fast path
if [ "$(cat "$CONF" 2>/dev/null)" = "$new_conf" ] &&
    [ "$(cat "$GRES_CONF" 2>/dev/null)" = "$new_gres" ] &&
    alive "$RUN/slurmctld.pid" slurmctld && alive "$RUN/slurmd.pid" slurmd &&
    { [ "$ACCT" = 0 ] || dbd_ok; } &&
    munge_ok && ctld_ok && node_ok; then
    say "already running: $(sinfo -h -N -o '%N %T %c cpus %m MB %G')"
    exit 0
fi

for f in "$CONF" "$GRES_CONF" "$DBD_CONF"; do
    if [ -e "$f" ] && ! grep -qF "$MARKER" "$f"; then
        [ "${SLURM_CI_OVERWRITE_CONF:-0}" = 1 ] ||
            die "$f exists and was not written by this script (set SLURM_CI_OVERWRITE_CONF=1 to replace it; a .bak is kept)"
        cp -a "$f" "$f.bak"
    fi
done
changed=0
if [ "$(cat "$CONF" 2>/dev/null)" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" >"$CONF"
    changed=1
fi
if [ "$(cat "$GRES_CONF" 2>/dev/null)" != "$new_gres" ]; then
    printf '%s\n' "$new_gres" >"$GRES_CONF"
    changed=1
fi

if [ "$ACCT" = 1 ] && [ "$(cat "$DBD_CONF" 2>/dev/null)" != "$new_dbd" ]; then
    printf '%s\n' "$new_dbd" >"$DBD_CONF"
    chmod 600 "$DBD_CONF"
fi

# config changed under running daemons that we own: restart them
if [ "$changed" = 1 ]; then
    for d in slurmd slurmctld slurmdbd; do
        if alive "$RUN/owned.$d.pid" "$d"; then
            say "config changed: restarting $d"
            kill "$(cat "$RUN/owned.$d.pid")"
            for ((i = 0; i < 80; i++)); do alive "$RUN/owned.$d.pid" "$d" || break; sleep 0.25; done
            rm -f "$RUN/owned.$d.pid"
        fi
    done
fi

# ---------------------------------------------------------------- munge
if ! munge_ok; then
    [ -s /etc/munge/munge.key ] || {
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 400 /etc/munge/munge.key
    }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 755 /run/munge
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
    cp /run/munge/munged.pid "$RUN/owned.munged.pid"
    wait_for "munged" munge_ok
fi

# ---------------------------------------------------------------- accounting (optional)
if [ "$ACCT" = 1 ]; then
    mkdir -p "$DIR/db" /run/mysqld
    chown mysql:mysql "$DIR/db"
    chown mysql:root /run/mysqld
    if ! db_ok; then
        [ -S "$DB_SOCK" ] && die "$DB_SOCK exists but does not answer; stop that MariaDB first"
        if [ ! -d "$DIR/db/mysql" ]; then
            say "initialising MariaDB data dir $DIR/db"
            mariadb-install-db --user=mysql --datadir="$DIR/db" \
                --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
                die "mariadb-install-db failed, see $LOG/mariadb-install.log"
        fi
        say "starting mariadbd (unix socket only, no TCP)"
        rm -f /run/mysqld/slurm-ci-mariadbd.pid
        setsid -f /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DIR/db" \
            --socket="$DB_SOCK" --pid-file=/run/mysqld/slurm-ci-mariadbd.pid \
            --skip-networking --innodb-buffer-pool-size=64M \
            --log-error="$LOG/mariadb.log" </dev/null >/dev/null 2>&1
        wait_for "mariadbd" db_ok
        wait_for "mariadbd pid file" test -s /run/mysqld/slurm-ci-mariadbd.pid
        cp /run/mysqld/slurm-ci-mariadbd.pid "$RUN/owned.mariadbd.pid"
    elif ! alive "$RUN/owned.mariadbd.pid" mariadbd; then
        say "using the MariaDB already answering on $DB_SOCK (not started here)"
    fi
    if ! alive "$RUN/slurmdbd.pid" slurmdbd; then
        say "starting slurmdbd"
        rm -f "$RUN/slurmdbd.pid"
        slurmdbd
        wait_for "slurmdbd pid file" test -s "$RUN/slurmdbd.pid"
        cp "$RUN/slurmdbd.pid" "$RUN/owned.slurmdbd.pid"
    fi
    wait_for "slurmdbd to answer" dbd_ok
    if [ -z "$(sacctmgr -n -P show cluster localci format=cluster 2>/dev/null)" ]; then
        sacctmgr -i add cluster localci >/dev/null
    fi
fi

# ---------------------------------------------------------------- slurmctld
if ! alive "$RUN/slurmctld.pid" slurmctld; then
    say "starting slurmctld"
    rm -f "$RUN/slurmctld.pid"
    slurmctld
    wait_for "slurmctld pid file" test -s "$RUN/slurmctld.pid"
    cp "$RUN/slurmctld.pid" "$RUN/owned.slurmctld.pid"
fi
wait_for "slurmctld to answer" ctld_ok
if [ "$ACCT" = 1 ]; then
    # ControlHost is filled in once slurmctld has registered with slurmdbd;
    # jobs that end before that may be missing from sacct
    ctld_registered() { [ -n "$(sacctmgr -n -P show cluster localci format=controlhost 2>/dev/null)" ]; }
    wait_for "slurmctld to register with slurmdbd" ctld_registered
fi

# ---------------------------------------------------------------- slurmd
if ! alive "$RUN/slurmd.pid" slurmd; then
    say "starting slurmd"
    rm -f "$RUN/slurmd.pid"
    slurmd -N "$NODE"
    wait_for "slurmd pid file" test -s "$RUN/slurmd.pid"
    cp "$RUN/slurmd.pid" "$RUN/owned.slurmd.pid"
fi

# node may come back drained/down from an older state file
for ((i = 0; i < TIMEOUT * 4; i++)); do
    node_ok && break
    case "$(node_state)" in
    *drain* | down* | inval* | fail*)
        scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.25
done
node_ok || die "node $NODE not idle (state: $(node_state); reason: $(sinfo -h -n "$NODE" -o '%E'))"

say "ready in $(($(date +%s) - t0))s: $(sinfo -h -N -o '%N %T %c cpus %m MB %G') (partition $PARTITION, $cpus cpus)"
