#!/usr/bin/env bash
# The benchmarks of issues #7, #13, #16, #17 and #18 (see BENCHMARKS.md): builds in release mode,
# runs B1-B10 and B3S side by side, and prints one table (median, min and max over BENCH_RUNS runs,
# default 5).
#
#   bash scripts/bench.sh                   everything (about 20-35 minutes on 2 cores)
#   bash scripts/bench.sh --only B1,B3      some of them (or BENCH_ONLY=B1,B3): B1 B2 B3 B4 B4H B5
#                                           B6 B7 B3S B8 B9 B10 B11 (B11 needs PostgreSQL; B8 needs a NATS server with
#                                           JetStream, BENCH_B8_NATS, default 127.0.0.1:4222,
#                                           and tansu for Kafka; BENCH_B8_BUSES=nats for one)
#   bash scripts/bench.sh --runs 7          more runs (or BENCH_RUNS=7; at least 5 for the record)
#   bash scripts/bench.sh --quick           a smoke test: 1 run, smaller B2, B3, B5, B6, B7, B3S
#                                           (not for the record)
#   BENCH_BASELINE=/path/to/stepsync bash scripts/bench.sh --only B1,B3
#                                           also times another build (say, of an earlier commit)
#                                           in B1, B3's plan and B5, side by side: before/after
#   BENCH_B5_SITES=100 BENCH_B5_MODEL=Site  B5 on 100 Sites, 1,000 Slices, 8,900 Instances
#                                           (default B3's sizes), editing Site (default Slice)
#   CARGO_TARGET_DIR=/some/dir              builds there (the bench tools under bench-tools/)
#
# Everything runs on 127.0.0.1, every command under `timeout`, in one temp dir that is removed
# at the end (BENCH_KEEP=1 keeps it); servers, sshd, the daemon and the hello servers started
# here are stopped on exit, also on failure or Ctrl-C. Installs what it needs when missing
# (openssh-server, curl, time, ansible-core), like scripts/test.sh. The table also goes to
# target/bench/results.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

RUNS=${BENCH_RUNS:-5}
ONLY=${BENCH_ONLY:-B1,B2,B3,B4,B4H,B5,B6,B7,B3S,B8,B9,B3G}
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --only) ONLY=$2; shift 2 ;;
    --only=*) ONLY=${1#--only=}; shift ;;
    --runs) RUNS=$2; shift 2 ;;
    --runs=*) RUNS=${1#--runs=}; shift ;;
    --quick) QUICK=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
ONLY=$(echo "$ONLY" | tr 'a-z' 'A-Z')
want() { [[ ",$ONLY," == *",$1,"* ]]; }

# Sizes. --quick shrinks what takes long; its numbers are not comparable with the targets.
B1_SITES=100 B1_SLICES=1000 B1_INSTANCES=8900
B2_OBJECTS=${BENCH_B2_OBJECTS:-20}
B3_SITES=1000 B3_SLICES=10000 B3_INSTANCES=89000
B4_CHANGES=50
# B6: one Site whose watched field changes, and this many Slices watching it (SPEC §11).
B6_SLICES=10000
# B7: this many Networks, each with a policy ensuring two Interfaces (SPEC §12).
B7_NETWORKS=10000
# B8: this many messages on NATS, into upserts (SPEC §14); the NATS server.
B8_MESSAGES=${BENCH_B8_MESSAGES:-100000}
B8_NATS=${BENCH_B8_NATS:-127.0.0.1:4222}
# B9: one pull step listing this many items in this many pages (SPEC §13).
B9_ITEMS=10000 B9_PAGES=10
# B11: this many independent objects against a server that answers after this long (SPEC §17).
B11_OBJECTS=${BENCH_B11_OBJECTS:-3000} B11_DELAY_MS=50
# B3G: the object counts of the growth table (issue #20).
B3G_SIZES=${BENCH_B3G_SIZES:-10000 100000 1000000}
# B4H: B4 with one request, for an unrelated Site, hung this long the whole time.
B4H_HANG_S=${BENCH_B4H_HANG_S:-10}
DELAY_MS=2
CONCURRENCY=16
if [ "$QUICK" = 1 ]; then
  RUNS=${BENCH_RUNS:-1}
  B2_OBJECTS=${BENCH_B2_OBJECTS:-4}
  B3_SITES=100 B3_SLICES=1000 B3_INSTANCES=8900
  B4_CHANGES=10
  B6_SLICES=1000
  B7_NETWORKS=1000
  B8_MESSAGES=${BENCH_B8_MESSAGES:-10000}
  B3G_SIZES=${BENCH_B3G_SIZES:-1000 10000}
fi
B1_TOTAL=$((B1_SITES + B1_SLICES + B1_INSTANCES))
B3_TOTAL=$((B3_SITES + B3_SLICES + B3_INSTANCES))
# B5: B3's service (or BENCH_B5_SITES Sites, 10 Slices and 89 Instances per Site), in sync, then
# one edit of BENCH_B5_MODEL's stepdef.
if [ -n "${BENCH_B5_SITES:-}" ]; then
  B5_SITES=$BENCH_B5_SITES B5_SLICES=$((BENCH_B5_SITES * 10)) B5_INSTANCES=$((BENCH_B5_SITES * 89))
else
  B5_SITES=$B3_SITES B5_SLICES=$B3_SLICES B5_INSTANCES=$B3_INSTANCES
fi
B5_TOTAL=$((B5_SITES + B5_SLICES + B5_INSTANCES))
B5_MODEL=${BENCH_B5_MODEL:-Slice}
case "$B5_MODEL" in
  Site) B5_EXPECTED=$B5_SITES ;;
  Slice) B5_EXPECTED=$B5_SLICES ;;
  Instance) B5_EXPECTED=$B5_INSTANCES ;;
  *) echo "bench.sh: BENCH_B5_MODEL must be Site, Slice or Instance, not $B5_MODEL" >&2; exit 2 ;;
esac

log() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }

# --- What it needs -----------------------------------------------------------------------------
. scripts/lib/install.sh
INSTALL_BY=bench
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ -x /usr/bin/time ] || missing+=(time)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-pip)
command -v timeout >/dev/null 2>&1 || missing+=(coreutils)
apt_install "${missing[@]}"
if want B2; then ensure_ansible && ensure_mitogen; fi

# --- Build --------------------------------------------------------------------------------------
# Into target/ and bench/target/, or, with CARGO_TARGET_DIR, into it and a bench-tools/ folder
# in it (the bench tools are a workspace of their own).
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
if [ -n "${CARGO_TARGET_DIR:-}" ]; then BENCH_TARGET_DIR=$TARGET_DIR/bench-tools; else BENCH_TARGET_DIR=$ROOT/bench/target; fi
log "building stepsync and the bench tools in release mode (several minutes on a cold cache)"
cargo build --release --locked --quiet --target-dir "$TARGET_DIR"
cargo build --release --locked --quiet --manifest-path bench/Cargo.toml --target-dir "$BENCH_TARGET_DIR"
STEPSYNC=$TARGET_DIR/release/stepsync
BASELINE=${BENCH_BASELINE:-}
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || die "BENCH_BASELINE=$BASELINE is not an executable"
BB=$BENCH_TARGET_DIR/release
[ -x "$STEPSYNC" ] && [ -x "$BB/server" ] || die "build outputs missing"

# --- Work dir, processes, clean-up ----------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/stepsync-bench.XXXXXX")
RES=$WORK/results
mkdir -p "$RES"
# B1 also runs once per run with its service directory on tmpfs, and B3's plan with its sys
# dir on tmpfs, when /dev/shm is one.
SHM=""
if { want B1 || want B3; } && [ "$(df -T /dev/shm 2>/dev/null | awk 'NR == 2 { print $2 }')" = tmpfs ]; then
  SHM=$(mktemp -d /dev/shm/stepsync-bench.XXXXXX)
fi
PIDFILE=$WORK/pids
: >"$PIDFILE"
track() { echo "$1" >>"$PIDFILE"; }

# Stop every process this script started (by pid, never by name), and the hello servers it
# started on the "target" (by their pid files under $WORK).
stop_tracked() {
  local pid
  while read -r pid; do
    [ -n "$pid" ] || continue
    kill -TERM "$pid" 2>/dev/null || true
  done <"$PIDFILE"
  local until=$((SECONDS + 10))
  while read -r pid; do
    [ -n "$pid" ] || continue
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $until ]; do sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done <"$PIDFILE"
  : >"$PIDFILE"
  stop_hello_servers "$WORK"
  close_ssh_masters
}
# Ansible's persistent SSH masters (ControlPersist) of B2, which outlive ansible-playbook.
close_ssh_masters() {
  local s
  for s in "$WORK"/b2/cp/*; do
    [ -S "$s" ] && timeout 10 ssh -o ControlPath="$s" -O exit bench-target >/dev/null 2>&1 || true
  done
}
stop_hello_servers() {
  local f pid
  while IFS= read -r f; do
    pid=$(cat "$f" 2>/dev/null || true)
    case "$pid" in '' | *[!0-9]*) continue ;; esac
    kill -TERM "$pid" 2>/dev/null || true
  done < <(find "$1" -name server.pid -path '*/pkg/*' 2>/dev/null)
}
cleanup() {
  local rc=$?
  set +e
  stop_tracked
  if [ -s "$WORK/mounts" ]; then
    local m
    while read -r m; do
      { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; } && rm -f "$(image_of "$m")" || log "could not unmount $m"
    done <"$WORK/mounts"
  fi
  if [ -s "$WORK/created_user" ]; then
    as_root userdel "$(cat "$WORK/created_user")" 2>/dev/null || {
      sleep 2
      as_root userdel -f "$(cat "$WORK/created_user")" 2>/dev/null || log "could not remove user $(cat "$WORK/created_user")"
    }
  fi
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    log "kept $WORK"
  else
    log "removing $WORK"
    rm -rf "$WORK"
  fi
  [ -z "$SHM" ] || rm -rf "$SHM"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Starts a bench server with the given delay; sets SERVER_URL and SERVER_PID.
start_server() {
  local delay=$1 out=$WORK/server.$RANDOM
  "$BB/server" --delay-ms "$delay" >"$out" 2>"$out.err" &
  SERVER_PID=$!
  track "$SERVER_PID"
  local i
  for i in $(seq 100); do
    [ -s "$out" ] && break
    sleep 0.05
  done
  [ -s "$out" ] || die "the bench server did not start: $(cat "$out.err")"
  SERVER_URL="http://127.0.0.1:$(head -1 "$out")"
}
server_reset() { curl -fsS -m 5 -X POST "$SERVER_URL/_bench/reset" >/dev/null; }
server_stat() { # requests | max_inflight
  curl -fsS -m 5 "$SERVER_URL/_bench/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"
}

# measure LIMIT_S OUT CMD...: runs CMD under timeout with stdout to OUT (stderr to OUT.err),
# sets WALL (seconds) and RSS (peak KiB). Fails, showing stderr, when CMD does.
measure() {
  local limit=$1 out=$2
  shift 2
  local t0 t1 rc=0
  t0=$(date +%s%N)
  /usr/bin/time -f %M -o "$WORK/rss" timeout -k 5 "$limit" "$@" >"$out" 2>"$out.err" || rc=$?
  t1=$(date +%s%N)
  WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  RSS=$(tail -1 "$WORK/rss")
  if [ $rc -ne 0 ]; then
    [ $rc -eq 124 ] && log "timed out after ${limit}s: $*"
    log "failed ($rc): $*"
    tail -20 "$out.err" >&2 || true
    tail -5 "$out" >&2 || true
    return 1
  fi
}
record() { echo "$2" >>"$RES/$1"; } # record METRIC VALUE
note() { # a line printed under the table (and in the log now)
  log "$*"
  echo "$*" >>"$RES/notes"
}
# Before a measurement that writes many files: flush what earlier ones left dirty, so one
# run does not pay for the write-back of the previous one, and, as root, drop the page,
# dentry and inode caches, so the inodes earlier runs created or freed do not slow this one
# (see "The file system" in BENCHMARKS.md). Not timed.
settle() {
  sync
  if [ "$(id -u)" -eq 0 ] && [ -w /proc/sys/vm/drop_caches ]; then
    echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  fi
}
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }

# raw_run WHAT LIMIT REQUESTS EXPECTED: B1's raw client sends REQUESTS level by level from a
# reset server and cold caches; dies, naming WHAT, unless the server saw EXPECTED requests.
# Sets RAW (seconds).
raw_run() {
  local what=$1 limit=$2 requests=$3 expected=$4 n
  server_reset
  settle
  measure "$limit" "$WORK/raw.out" "$BB/raw_client" --requests "$requests" --concurrency $CONCURRENCY
  RAW=$WALL
  n=$(server_stat requests)
  [ "$n" = "$expected" ] || die "$what: the raw client sent $n requests, expected $expected"
}

# --- B1: REST throughput ----------------------------------------------------------------------
# b1_once WHAT SRC SVC BIN [STORE]: B1's service SRC copied to SVC (on STORE when given),
# applied, and synced by BIN's `run --once` from a reset server and cold caches; WALL and
# RSS as `measure` sets them. Dies, naming WHAT, unless every object ended ok.
b1_once() {
  local what=$1 src=$2 svc=$3 bin=$4 store=${5:-}
  cp -r "$src" "$svc"
  [ -z "$store" ] || echo "store: $store" >>"$svc/stepsync.yaml"
  timeout 300 "$bin" -C "$svc" -q apply -f objects/ >/dev/null
  server_reset
  settle
  measure 600 "$svc.out" "$bin" -C "$svc" run --once
  grep -q "^run: $B1_TOTAL ok" "$svc.out" || die "$what: not every object ok: $(head -3 "$svc.out")"
}

b1() {
  log "B1: $B1_TOTAL objects over REST (server delay ${DELAY_MS} ms, concurrency $CONCURRENCY), $RUNS runs"
  local d=$WORK/b1
  mkdir -p "$d"
  start_server "$DELAY_MS"
  "$BB/gen" --dir "$d/svc" --url "$SERVER_URL" --sites $B1_SITES --slices $B1_SLICES \
    --instances $B1_INSTANCES --concurrency $CONCURRENCY --requests "$d/requests.jsonl" 2>/dev/null
  "$STEPSYNC" -C "$d/svc" -q validate >/dev/null
  local r n s raw svc
  for r in $(seq "$RUNS"); do
    # A fresh copy per run: nothing is deleted until the end (see "Deleting files" in
    # BENCHMARKS.md: on this machine's ext4, creating files right after deleting many is slow).
    svc=$d/svc-r$r
    b1_once B1 "$d/svc" "$svc" "$STEPSYNC"
    s=$WALL
    n=$(server_stat requests)
    [ "$n" = "$B1_TOTAL" ] || die "B1: stepsync sent $n requests, expected $B1_TOTAL"
    record b1_stepsync "$s"
    record b1_stepsync_rss "$(calc "$RSS / 1024" 1)"
    record b1_stepsync_inflight "$(server_stat max_inflight)"

    # The same with the whole service directory (store and sys dir) on tmpfs: what the
    # engine costs without the disk file system's.
    local tm=""
    if [ -n "$SHM" ]; then
      b1_once "B1 (tmpfs)" "$d/svc" "$SHM/svc-r$r" "$STEPSYNC"
      tm=$WALL
      record b1_stepsync_tmpfs "$tm"
    fi

    # The baseline build, when one is given, on the disk like the first.
    if [ -n "$BASELINE" ]; then
      b1_once "B1 (baseline)" "$d/svc" "$svc-baseline" "$BASELINE"
      record b1_baseline "$WALL"
      log "  run $r: baseline build ${WALL}s"
    fi

    raw_run B1 600 "$d/requests.jsonl" "$B1_TOTAL" # cold, as the runs above
    raw=$RAW
    record b1_raw "$raw"
    record b1_ratio "$(calc "$s / $raw")"
    [ -z "$BASELINE" ] || record b1_ratio_baseline "$(calc "$(tail -1 "$RES/b1_baseline") / $raw")"
    [ -z "$tm" ] || record b1_ratio_tmpfs "$(calc "$tm / $raw")"
    log "  run $r: stepsync ${s}s (tmpfs: ${tm:-n/a}s), raw ${raw}s, ratio $(calc "$s / $raw" 2)"
  done
}

# --- B2: playbook over SSH --------------------------------------------------------------------
free_ports() { # N distinct free 127.0.0.1 ports
  python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# A throw-away sshd (the logic of tests/common/sshd.rs): 127.0.0.1 on a free port, ed25519
# host and user keys in $1, public-key login only; writes $1/known_hosts. Sets SSHD_PORT.
start_sshd() {
  local k=$1 user port i
  mkdir -p "$k"
  ssh-keygen -q -t ed25519 -N '' -f "$k/host_key" </dev/null
  ssh-keygen -q -t ed25519 -N '' -f "$k/user_key" </dev/null
  cp "$k/user_key.pub" "$k/authorized_keys"
  mkdir -p /run/sshd 2>/dev/null || true
  for _ in 1 2 3 4 5; do
    port=$(free_ports 1)
    cat >"$k/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $k/host_key
AuthorizedKeysFile $k/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile $k/sshd.pid
Subsystem sftp /usr/lib/openssh/sftp-server
MaxStartups 100
MaxSessions 100
LogLevel VERBOSE
EOF
    # Under a child subreaper, so that stopped hello servers are reaped at once, as on a host
    # with a real init (see bench/src/bin/reaper.rs).
    "$BB/reaper" /usr/sbin/sshd -D -E "$k/sshd.log" -f "$k/sshd_config" </dev/null >/dev/null 2>&1 &
    local pid=$!
    track "$pid"
    for i in $(seq 200); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "[127.0.0.1]:$port $(cat "$k/host_key.pub")" >"$k/known_hosts"
        SSHD_PORT=$port
        return 0
      fi
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.05
    done
    kill "$pid" 2>/dev/null || true
  done
  die "sshd did not start: $(tail -5 "$k/sshd.log" 2>/dev/null)"
}

# The account B2 logs in as. By default a throw-away system user, `stepsync-bench`, with
# /bin/sh as its shell and a home under $WORK: a clean target, where a command over SSH costs
# what sh costs. (Logging in as root here would run root's ~/.bashrc -- pyenv init on this
# machine, ~0.1 s -- for every remote command, of which the built-in runner sends one per
# module step.) BENCH_B2_USER=current logs in as the current user instead, as the test sshd
# does. The user is removed at the end if this script created it.
b2_user() {
  local home=$WORK/b2/home
  if [ "${BENCH_B2_USER:-stepsync-bench}" = current ]; then
    B2_USER=$(id -un)
    return
  fi
  B2_USER=${BENCH_B2_USER:-stepsync-bench}
  mkdir -p "$home"
  if ! getent passwd "$B2_USER" >/dev/null; then
    as_root useradd --system --user-group --no-create-home --home-dir "$home" --shell /bin/sh "$B2_USER"
    echo "$B2_USER" >"$WORK/created_user"
  else
    as_root usermod --home "$home" "$B2_USER"
  fi
  # Not locked (sshd refuses locked accounts without PAM), but no password either.
  as_root usermod -p '*' "$B2_USER"
  as_root chown "$B2_USER" "$home"
  chmod 755 "$WORK" "$WORK/b2"
}

# b2_service DIR RUNNER PKG: the hello service (schemas, stepdefs, playbooks of the repository
# root) whose Node is the test sshd, with B2_OBJECTS servers on fresh ports under PKG.
b2_service() { # DIR RUNNER PKG [OBJECTS]
  local svc=$1 runner=$2 pkg=$3 objects=${4:-$B2_OBJECTS} i
  rm -rf "$svc"
  mkdir -p "$svc" "$pkg"
  [ "$B2_USER" = "$(id -un)" ] || as_root chown "$B2_USER" "$pkg"
  cp -r "$ROOT/schemas" "$ROOT/stepdefs" "$ROOT/playbooks" "$svc/"
  cat >"$svc/stepsync.yaml" <<EOF
name: hello-bench
runner: $runner
concurrency: $CONCURRENCY
ssh: {user: $B2_USER, port: $SSHD_PORT, private_key: $WORK/b2/keys/user_key, known_hosts: strict, known_hosts_file: $WORK/b2/keys/known_hosts}
logging: {level: warn}
EOF
  # Debian's python3 for Ansible's modules: pyenv shims would fool interpreter discovery.
  cat >"$svc/inventory.yaml" <<EOF
all:
  vars: {ansible_python_interpreter: /usr/bin/python3}
  hosts:
    target: {ansible_host: 127.0.0.1}
EOF
  B2_PORTS=($(free_ports "$objects"))
  {
    echo "Node:"
    echo "  - {name: target, address: target}"
    echo "HelloServer:"
    for i in $(seq "$objects"); do
      echo "  - {name: hello-$i, node: target, server_port: ${B2_PORTS[$((i - 1))]}, package_location: $pkg, greeting: 'Hello $i'}"
    done
  } >"$svc/objects.yaml"
}

b2_check_servers() { # every server answers its greeting
  local i
  for i in $(seq "$B2_OBJECTS"); do
    curl -fsS -m 5 "http://127.0.0.1:${B2_PORTS[$((i - 1))]}/" | grep -qx "Hello $i" \
      || die "B2: hello-$i does not answer on port ${B2_PORTS[$((i - 1))]}"
  done
}

# Deletes what a run made: the engine's delete (stops the servers, removes their files), then
# anything left over.
b2_delete() {
  local svc=$1 pkg=$2
  timeout 300 "$STEPSYNC" -C "$svc" -q delete Node target --cascade >/dev/null 2>&1 || true
  timeout 600 "$STEPSYNC" -C "$svc" run --once >"$svc/delete.out" 2>&1 || log "B2: the delete run failed: $(tail -3 "$svc/delete.out")"
  b2_stop_by_hand "$pkg"
}
b2_stop_by_hand() {
  local pkg=$1 d
  for d in "$pkg"/hello-*; do
    [ -d "$d" ] || continue
    timeout 30 python3 "$pkg/bin/hello_server.py" stop --dir "$d" >/dev/null 2>&1 || true
  done
  stop_hello_servers "$pkg"
}

# One SSH round trip, the floor of a task sent over SSH: `ssh true` over an open master
# connection (OpenSSH's ControlMaster, as the built-in runner multiplexes), 20 times; the
# median in ms (the hello playbook's first sync sends 5 remote tasks: BENCHMARKS.md).
b2_round_trip() {
  local d=$WORK/b2 sock=$WORK/b2/cp/rtt i t0 t1
  local opts=(-S "$sock" -p "$SSHD_PORT" -i "$d/keys/user_key" -o IdentitiesOnly=yes
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$d/keys/known_hosts" -o BatchMode=yes)
  timeout 30 ssh "${opts[@]}" -M -o ControlPersist=60 -fN "$B2_USER@127.0.0.1" || { log "B2: no master for the round trip"; return 0; }
  for i in $(seq 20); do
    t0=$(date +%s%N)
    timeout 10 ssh "${opts[@]}" "$B2_USER@127.0.0.1" true
    t1=$(date +%s%N)
    record b2_rtt_ms "$(ms_between "$t0" "$t1")"
  done
  timeout 10 ssh "${opts[@]}" -O exit "$B2_USER@127.0.0.1" 2>/dev/null || true
}

b2() {
  log "B2: the hello playbook for $B2_OBJECTS objects over SSH (first sync), $RUNS runs"
  local d=$WORK/b2 r svc pkg dir per builtin ansible hand
  mkdir -p "$d"
  b2_user
  # Ansible's ControlPersist masters go under $WORK, to be closed at the end.
  mkdir -p "$d/cp"
  export ANSIBLE_SSH_CONTROL_PATH_DIR=$d/cp
  start_sshd "$d/keys"
  log "  target: $B2_USER@127.0.0.1:$SSHD_PORT"
  for r in $(seq "$RUNS"); do
    # Built-in runner.
    svc=$d/r$r-builtin pkg=$d/r$r-builtin/pkg
    b2_service "$svc" builtin "$pkg"
    timeout 60 "$STEPSYNC" -C "$svc" -q apply -f objects.yaml >/dev/null
    measure 600 "$svc/run.out" "$STEPSYNC" -C "$svc" run --once
    builtin=$(calc "$WALL / $B2_OBJECTS" 4)
    b2_check_servers
    b2_delete "$svc" "$pkg"
    record b2_builtin "$builtin"

    # runner: ansible (stepsync runs ansible-playbook on each rendered recipe).
    svc=$d/r$r-ansible pkg=$d/r$r-ansible/pkg
    b2_service "$svc" ansible "$pkg"
    timeout 60 "$STEPSYNC" -C "$svc" -q apply -f objects.yaml >/dev/null
    measure 1200 "$svc/run.out" "$STEPSYNC" -C "$svc" run --once
    ansible=$(calc "$WALL / $B2_OBJECTS" 4)
    b2_check_servers
    b2_delete "$svc" "$pkg"
    record b2_ansible "$ansible"

    # ansible-playbook by hand on each rendered recipe, one after the other, as a user's
    # script would (the recipes are rendered by `plan` into the plan dir, not timed).
    svc=$d/r$r-hand pkg=$d/r$r-hand/pkg
    b2_service "$svc" ansible "$pkg"
    timeout 60 "$STEPSYNC" -C "$svc" -q apply -f objects.yaml >/dev/null
    timeout 120 "$STEPSYNC" -C "$svc" plan >/dev/null
    [ -f "$svc/.stepsync/sys/ansible.cfg" ] || die "B2: plan wrote no ansible.cfg"
    cat >"$svc/by-hand.sh" <<'EOF'
set -e
for dir in "$1"/.plan/HelloServer/*/; do
  (cd "$dir" && ANSIBLE_CONFIG="$1/ansible.cfg" ansible-playbook -i inventory.yml sync.yml)
done
EOF
    measure 1800 "$svc/run.out" bash "$svc/by-hand.sh" "$svc/.stepsync/sys"
    hand=$(calc "$WALL / $B2_OBJECTS" 4)
    b2_check_servers
    b2_stop_by_hand "$pkg"
    record b2_hand "$hand"

    # The same by hand with Mitogen's strategy, which users reach for to make Ansible fast:
    # one Python interpreter on the target per connection, modules sent over it, not one SSH
    # exchange and one interpreter per module.
    svc=$d/r$r-mitogen pkg=$d/r$r-mitogen/pkg
    b2_service "$svc" ansible "$pkg"
    timeout 60 "$STEPSYNC" -C "$svc" -q apply -f objects.yaml >/dev/null
    timeout 120 "$STEPSYNC" -C "$svc" plan >/dev/null
    cp "$d/r$r-hand/by-hand.sh" "$svc/by-hand.sh"
    ANSIBLE_STRATEGY_PLUGINS=$MITOGEN_STRATEGIES ANSIBLE_STRATEGY=mitogen_linear \
      measure 1800 "$svc/run.out" bash "$svc/by-hand.sh" "$svc/.stepsync/sys"
    mitogen=$(calc "$WALL / $B2_OBJECTS" 4)
    b2_check_servers
    b2_stop_by_hand "$pkg"
    record b2_mitogen "$mitogen"
    record b2_speedup_mitogen "$(calc "$mitogen / $builtin" 1)"

    # One object alone, built-in: its latency, against one SSH round trip per task below.
    svc=$d/r$r-one pkg=$d/r$r-one/pkg
    b2_service "$svc" builtin "$pkg" 1
    timeout 60 "$STEPSYNC" -C "$svc" -q apply -f objects.yaml >/dev/null
    measure 600 "$svc/run.out" "$STEPSYNC" -C "$svc" run --once
    record b2_one_s "$WALL"
    b2_delete "$svc" "$pkg"

    record b2_speedup_hand "$(calc "$hand / $builtin" 1)"
    record b2_speedup_runner "$(calc "$ansible / $builtin" 1)"
    log "  run $r: per object built-in ${builtin}s, runner: ansible ${ansible}s, by hand ${hand}s, by hand with mitogen ${mitogen}s; one object alone ${WALL}s"
  done
  b2_round_trip
  record b2_logins_total "$(grep -c 'Accepted publickey' "$d/keys/sshd.log" || true)"
}

# --- B3: scale --------------------------------------------------------------------------------
b3() {
  log "B3: $B3_TOTAL objects: apply, plan, first sync, idle run --once; $RUNS runs"
  local d=$WORK/b3 r n svc
  mkdir -p "$d"
  start_server 0
  "$BB/gen" --dir "$d/svc" --url "$SERVER_URL" --sites $B3_SITES --slices $B3_SLICES \
    --instances $B3_INSTANCES --concurrency $CONCURRENCY --requests "$d/requests.jsonl" 2>/dev/null
  # Fresh directories per run, nothing deleted until the end (as in B1).
  for r in $(seq "$RUNS"); do
    svc=$d/svc-r$r
    cp -r "$d/svc" "$svc"
    settle
    measure 900 "$d/apply.out" "$STEPSYNC" -C "$svc" apply -f objects/
    [ "$(grep -c ' created$' "$d/apply.out")" = "$B3_TOTAL" ] || die "B3: apply did not create $B3_TOTAL objects"
    record b3_apply_s "$WALL"
    record b3_apply_rate "$(calc "$B3_TOTAL / $WALL" 0)"
    record b3_apply_rss "$(calc "$RSS / 1024" 1)"
    log "  apply run $r: ${WALL}s"
  done
  for r in $(seq "$RUNS"); do
    settle
    measure 900 "$d/plan.out" "$STEPSYNC" -C "$svc" plan --sys-dir "$d/plan-sys-r$r"
    grep -q "^Plan: $B3_TOTAL to create" "$d/plan.out" || die "B3: unexpected plan: $(tail -1 "$d/plan.out")"
    record b3_plan_s "$WALL"
    record b3_plan_rss "$(calc "$RSS / 1024" 1)"
    log "  plan run $r: ${WALL}s, peak RSS $(calc "$RSS / 1024" 0) MiB"
    # Again into the same sys dir: every recipe is already there (nothing is rewritten).
    settle
    measure 900 "$d/plan.out" "$STEPSYNC" -C "$svc" plan --sys-dir "$d/plan-sys-r$r"
    record b3_replan_s "$WALL"
    log "  plan again: ${WALL}s"
    rm -f "$d/plan.out"
    # The same into a sys dir on tmpfs: what plan costs without the disk file system's part.
    if [ -n "$SHM" ]; then
      settle
      measure 900 "$d/plan.out" "$STEPSYNC" -C "$svc" plan --sys-dir "$SHM/plan-sys-r$r"
      grep -q "^Plan: $B3_TOTAL to create" "$d/plan.out" || die "B3 (tmpfs): unexpected plan"
      record b3_plan_tmpfs_s "$WALL"
      log "  plan into tmpfs: ${WALL}s"
      rm -rf "$SHM/plan-sys-r$r" "$d/plan.out"
    fi
    if [ -n "$BASELINE" ]; then
      # Its own copy of the service, applied by the baseline build: a store written by one
      # build may have a schema the other does not know.
      if [ ! -d "$d/svc-baseline" ]; then
        cp -r "$d/svc" "$d/svc-baseline"
        timeout 900 "$BASELINE" -C "$d/svc-baseline" -q apply -f objects/ >/dev/null
      fi
      settle
      measure 900 "$d/plan.out" "$BASELINE" -C "$d/svc-baseline" plan --sys-dir "$d/plan-sys-baseline-r$r"
      grep -q "^Plan: $B3_TOTAL to create" "$d/plan.out" || die "B3 (baseline): unexpected plan"
      record b3_plan_baseline_s "$WALL"
      log "  plan, baseline build: ${WALL}s"
      rm -f "$d/plan.out"
    fi
  done
  # The first sync of each run's store (the plans above wrote only their plan dirs), then the
  # raw client sending the same requests level by level, both from a reset server and cold
  # caches; the ratio is taken per run, as in B1.
  local s raw
  for r in $(seq "$RUNS"); do
    server_reset
    settle
    measure 1800 "$d/sync.out" "$STEPSYNC" -C "$d/svc-r$r" run --once
    grep -q "^run: $B3_TOTAL ok" "$d/sync.out" || die "B3: the first sync left objects not ok: $(head -3 "$d/sync.out")"
    n=$(server_stat requests)
    [ "$n" = "$B3_TOTAL" ] || die "B3: the first sync sent $n requests, expected $B3_TOTAL"
    s=$WALL
    record b3_sync_s "$s"
    record b3_sync_rss "$(calc "$RSS / 1024" 1)"
    raw_run B3 1800 "$d/requests.jsonl" "$B3_TOTAL"
    raw=$RAW
    record b3_sync_raw_s "$raw"
    record b3_sync_ratio "$(calc "$s / $raw")"
    log "  first sync run $r: ${s}s, raw client ${raw}s, ratio $(calc "$s / $raw" 2)"
  done
  for r in $(seq "$RUNS"); do
    server_reset
    measure 600 "$d/idle.out" "$STEPSYNC" -C "$svc" run --once
    n=$(server_stat requests)
    [ "$n" = 0 ] || die "B3: the idle pass sent $n requests"
    record b3_idle_s "$WALL"
    record b3_idle_rss "$(calc "$RSS / 1024" 1)"
    log "  idle run $r: ${WALL}s"
  done
}

# --- B4: latency ------------------------------------------------------------------------------
# B1's service in DIR, against a new server with the usual delay, applied and synced. The
# benchmark's name (B4, B4H) is DIR's base name.
b4_service() { # DIR [BIN]: B1's service in DIR/svc, applied and synced by BIN (the build's
  # on a server of its own; another's on the server last started)
  local d=$1 bin=${2:-$STEPSYNC} name=${1##*/}
  mkdir -p "$d"
  [ -n "${2:-}" ] || start_server "$DELAY_MS"
  "$BB/gen" --dir "$d/svc" --url "$SERVER_URL" --sites $B1_SITES --slices $B1_SLICES \
    --instances $B1_INSTANCES --concurrency $CONCURRENCY 2>/dev/null
  timeout 300 "$bin" -C "$d/svc" -q apply -f objects/ >/dev/null
  timeout 600 "$bin" -C "$d/svc" run --once >"$d/sync.out" 2>&1 || die "${name^^}: the initial sync failed: $(tail -3 "$d/sync.out")"
}

# b4_run DIR R LIMIT_S [LATENCY ARGS...]: run R of the latency probe, under timeout LIMIT_S,
# with `stepsync run` (the daemon) running on DIR/svc; sets B4_LINE to its output line.
# The daemon and the applies are B4_BIN's (default: the build).
b4_run() {
  local d=$1 r=$2 limit=$3 name=${1##*/} pid bin=${B4_BIN:-$STEPSYNC}
  shift 3
  "$bin" -C "$d/svc" run >"$d/daemon.out" 2>&1 &
  pid=$!
  track "$pid"
  if ! timeout "$limit" "$BB/latency" --stepsync "$bin" --dir "$d/svc" --server "$SERVER_URL" \
    --changes "$B4_CHANGES" --sites $B1_SITES --tag "r$r" --samples "$d/samples.$r" "$@" >"$d/lat.out" 2>"$d/lat.err"; then
    cat "$d/lat.err" >&2
    die "${name^^}: run $r failed (daemon log: $(tail -3 "$d/daemon.out"))"
  fi
  B4_LINE=$(cat "$d/lat.out")
  kill -TERM "$pid" 2>/dev/null || true
  timeout 60 tail --pid="$pid" -f /dev/null || kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# b4_record PREFIX: records B4_LINE's figures as PREFIX_p50 and so on.
b4_record() {
  local kv
  for kv in $B4_LINE; do
    case "$kv" in
      p50_ms=*) record "$1_p50" "${kv#*=}" ;;
      p99_ms=*) record "$1_p99" "${kv#*=}" ;;
      commit_p50_ms=*) record "$1_commit_p50" "${kv#*=}" ;;
      apply_p50_ms=*) record "$1_apply_p50" "${kv#*=}" ;;
      hangs=*) record "$1_hangs" "${kv#*=}" ;;
      hung_during=*) record "$1_hung_during" "${kv#*=}" ;;
    esac
  done
}

b4() {
  log "B4: apply -> first backend request with \`stepsync run\` running, $B4_CHANGES changes x $RUNS runs"
  local d=$WORK/b4 r
  b4_service "$d"
  [ -z "$BASELINE" ] || b4_service "$d-baseline" "$BASELINE"
  for r in $(seq "$RUNS"); do
    b4_run "$d" "$r" 300
    b4_record b4
    log "  run $r: $B4_LINE"
    if [ -n "$BASELINE" ]; then
      B4_BIN=$BASELINE b4_run "$d-baseline" "$r" 300
      b4_record b4_baseline
      log "  run $r (baseline): $B4_LINE"
    fi
  done
}

# B4 again, with one unrelated Site's request (the last Site's, which no measured change
# touches) held by the server for B4H_HANG_S seconds the whole time: `latency --hang-site`
# starts the hung request after the warm-up and a new one whenever the last is about to end.
b4h() {
  local hang=$((B1_SITES - 1))
  log "B4H: B4 with the request of site-$hang hung ${B4H_HANG_S}s the whole time, $B4_CHANGES changes x $RUNS runs"
  local d=$WORK/b4h r hd
  b4_service "$d"
  for r in $(seq "$RUNS"); do
    # A change stuck behind the hung request would take up to B4H_HANG_S: wait long enough
    # for that to show as numbers rather than fail the run.
    b4_run "$d" "$r" $((B4_CHANGES * (B4H_HANG_S + 1) + 300)) \
      --hang-site "$hang" --hang-s "$B4H_HANG_S" --timeout-s $((B4H_HANG_S + 10))
    b4_record b4h
    log "  run $r: $B4_LINE"
    hd=$(tail -1 "$RES/b4h_hung_during")
    [ "$hd" = "$B4_CHANGES" ] || note "B4H: run $r: only $hd of $B4_CHANGES changes were applied and sent while the request of site-$hang was held"
  done
}

# --- B5: definition drift ---------------------------------------------------------------------
# b5_prepare BIN SVC LABEL: apply B5's objects with BIN and sync them all (not in the table).
b5_prepare() {
  local bin=$1 svc=$2 label=$3
  settle
  measure 900 "$svc/apply.out" "$bin" -C "$svc" apply -f objects/ || die "B5$label: apply failed"
  log "  apply$label: ${WALL}s"
  server_reset
  settle
  measure 1800 "$svc/first-sync.out" "$bin" -C "$svc" run --once || die "B5$label: the first sync failed"
  grep -q "^run: $B5_TOTAL ok" "$svc/first-sync.out" || die "B5$label: the first sync left objects not ok: $(head -3 "$svc/first-sync.out")"
  log "  first sync of $B5_TOTAL$label: ${WALL}s"
}

# b5_pass BIN SVC PREFIX LABEL R: edit B5_MODEL's stepdef (a constant `tier` in the body of its
# sync request, another value each run), time `plan` and count what it lists, then sync with
# `run --once` and time the first idle `run --once` after it (and a second one). Returns 1
# when the plan or the sync was not exactly that model's objects (the figures are recorded
# and the reason noted).
b5_pass() {
  local bin=$1 svc=$2 p=$3 label=$4 r=$5 ok=0 nodrift=0
  local def tier listed others n summary
  def=$svc/stepdefs/${B5_MODEL,,}.yaml
  tier=gold
  [ "$r" = 1 ] || tier=gold-$r
  [ "$(grep -cE '^    body: \{' "$def")" = 1 ] || die "B5: $def has no single \`    body: {\` line to edit"
  sed -i -E "s/^(    body: \\{)(tier: [^,]*, )?/\\1tier: $tier, /" "$def"
  grep -q "body: {tier: $tier, " "$def" || die "B5: the edit of $def did not take"

  settle
  if ! measure 900 "$svc/plan.out" "$bin" -C "$svc" plan; then
    note "B5$label: run $r: plan failed (exit code above)"
    return 1
  fi
  listed=$(grep -c "^~ update $B5_MODEL/" "$svc/plan.out" || true)
  others=$(($(grep -cE '^[-+~] ' "$svc/plan.out" || true) - listed))
  summary=$(grep '^Plan: ' "$svc/plan.out" | tail -1)
  record "${p}_plan_s" "$WALL"
  record "${p}_plan_rss" "$(calc "$RSS / 1024" 1)"
  record "${p}_plan_listed" "$listed"
  record "${p}_plan_others" "$others"
  log "  run $r$label: plan ${WALL}s, listed $listed of $B5_EXPECTED $B5_MODEL objects as \`~ update\`, $others other lines (${summary:-no summary line})"
  if [ "$listed" = 0 ] && [ "$others" = 0 ]; then
    note "B5$label: run $r: plan listed 0 of $B5_EXPECTED objects of model $B5_MODEL -- definition drift not detected ($summary)"
    ok=1 nodrift=1
  elif [ "$listed" != "$B5_EXPECTED" ] || [ "$others" != 0 ]; then
    note "B5$label: run $r: plan listed $listed of $B5_EXPECTED objects of model $B5_MODEL as \`~ update\`, and $others lines for other objects (expected 0) ($summary)"
    ok=1
  fi
  rm -f "$svc/plan.out"

  server_reset
  settle
  if measure 1800 "$svc/sync.out" "$bin" -C "$svc" run --once; then :; else
    note "B5$label: run $r: the \`run --once\` after the edit failed: $(head -3 "$svc/sync.out" | tr '\n' ' ')"
    ok=1
  fi
  n=$(server_stat requests)
  record "${p}_sync_s" "$WALL"
  record "${p}_sync_requests" "$n"
  log "  run $r$label: sync ${WALL}s, $n requests ($(grep '^run: ' "$svc/sync.out" | head -1))"
  # (With drift not detected the run sends nothing, which the note above already says.)
  if [ "$n" != "$B5_EXPECTED" ] && { [ "$nodrift" = 0 ] || [ "$n" != 0 ]; }; then
    note "B5$label: run $r: the \`run --once\` after the edit sent $n requests, expected $B5_EXPECTED (one per $B5_MODEL)"
    ok=1
  fi
  grep -q "^run: $B5_TOTAL ok" "$svc/sync.out" || { note "B5$label: run $r: not every object ok after the sync"; ok=1; }
  # What was sent is the edited body (the first object's recipe, SPEC §8).
  local first recipe
  case "$B5_MODEL" in Site) first=site-0 ;; Slice) first=slice-0 ;; *) first=inst-0 ;; esac
  recipe=$svc/.stepsync/sys/$B5_MODEL/$first/sync.http
  if [ "$n" != 0 ] && ! grep -qE "\"tier\": *\"$tier\"" "$recipe" 2>/dev/null; then
    note "B5$label: run $r: $recipe does not have the edited body (\"tier\": \"$tier\")"
    ok=1
  fi

  local i
  for i in 1 2; do
    server_reset
    measure 600 "$svc/idle.out" "$bin" -C "$svc" run --once || { note "B5$label: run $r: idle pass $i failed"; ok=1; }
    n=$(server_stat requests)
    record "${p}_idle${i}_s" "$WALL"
    [ "$n" = 0 ] || { note "B5$label: run $r: idle pass $i sent $n requests"; ok=1; }
    log "  run $r$label: idle pass $i ${WALL}s"
  done
  return $ok
}

b5() {
  log "B5: $B5_TOTAL objects in sync, then one edit of $B5_MODEL's stepdef body: plan, sync, idle run --once; $RUNS runs"
  local d=$WORK/b5 r bad=0
  mkdir -p "$d"
  start_server 0
  "$BB/gen" --dir "$d/svc" --url "$SERVER_URL" --sites "$B5_SITES" --slices "$B5_SLICES" \
    --instances "$B5_INSTANCES" --concurrency $CONCURRENCY 2>/dev/null
  # The baseline's own copy, applied and synced by it (its store schema may differ).
  [ -z "$BASELINE" ] || cp -r "$d/svc" "$d/svc-baseline"
  b5_prepare "$STEPSYNC" "$d/svc" ""
  [ -z "$BASELINE" ] || b5_prepare "$BASELINE" "$d/svc-baseline" " (baseline)"
  for r in $(seq "$RUNS"); do
    b5_pass "$STEPSYNC" "$d/svc" b5 "" "$r" || bad=1
    if [ -n "$BASELINE" ]; then
      # Not a failure of this build: the baseline may predate drift detection.
      b5_pass "$BASELINE" "$d/svc-baseline" b5_baseline " (baseline)" "$r" || true
    fi
  done
  [ "$bad" = 0 ] || die "B5: see the notes under the table"
}

# --- The daemon's log, for B6 and B7 ---------------------------------------------------------
# The lines B6 and B7 time come from the daemon itself, each written just after the commit it
# reports: `watchers made objects pending` (stepsync::steps::watch), `policies`
# (stepsync::steps::police) and the end of a pass that ran something (stepsync::engine::
# scheduler). Only those are logged, in JSON with their timestamps, so the daemon writes a few
# lines per change and not one per run (B1's `run --once` logs nothing either).
STEPS_LOG_FILTER="warn,stepsync::engine::daemon=info,stepsync::engine::scheduler=info,stepsync::steps=info"

# start_daemon SVC LOG: `stepsync run` on SVC, its log to LOG; waits until it has started and
# made its first pass; sets DAEMON_PID.
start_daemon() { # SVC LOG [COMMAND ARGS...]: `run` unless a command (`serve ...`) is given
  local svc=$1 dlog=$2 i cmd=("${@:3}")
  [ ${#cmd[@]} -gt 0 ] || cmd=(run)
  STEPSYNC_LOG=$STEPS_LOG_FILTER "$STEPSYNC" -C "$svc" --log-format json "${cmd[@]}" >"$dlog.out" 2>"$dlog" &
  DAEMON_PID=$!
  track "$DAEMON_PID"
  for i in $(seq 600); do
    grep -q '"message":"started"' "$dlog" 2>/dev/null && break
    kill -0 "$DAEMON_PID" 2>/dev/null || die "the daemon on $svc exited: $(tail -3 "$dlog")"
    sleep 0.05
  done
  grep -q '"message":"started"' "$dlog" || die "the daemon on $svc did not start: $(tail -3 "$dlog")"
  # Its first pass (idle, or whatever the store held) is over before anything is timed.
  sleep 1
}
stop_daemon() {
  kill -TERM "$DAEMON_PID" 2>/dev/null || true
  timeout 60 tail --pid="$DAEMON_PID" -f /dev/null || kill -KILL "$DAEMON_PID" 2>/dev/null || true
  wait "$DAEMON_PID" 2>/dev/null || true
}

# daemon_wait LOG OFFSET LIMIT_S MESSAGE FIELD MIN: waits until the JSON lines of LOG after
# byte OFFSET whose message is MESSAGE add up to at least MIN in FIELD (a number of objects),
# and prints "NS SUM": the Unix time in ns of the line that got there, and the sum. Fails
# after LIMIT_S seconds, or when the daemon (DAEMON_PID) is gone.
daemon_wait() {
  python3 - "$@" "$DAEMON_PID" <<'PY'
import datetime, json, os, re, sys, time
log, off, limit, msg, field, need, pid = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6]), int(sys.argv[7])
deadline = time.time() + limit
total, buf = 0, b""
with open(log, "rb") as f:
    f.seek(off)
    while True:
        chunk = f.read()
        if chunk:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue
                fl = e.get("fields", {})
                if fl.get("message") != msg:
                    continue
                total += int(fl.get(field, 0))
                if total >= need:
                    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z", e["timestamp"])
                    t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
                    frac = (m.group(2) or "0")[:9].ljust(9, "0")
                    print(int(t.timestamp()) * 10**9 + int(frac), total)
                    sys.exit(0)
            continue
        if time.time() > deadline:
            sys.exit(f"daemon_wait: no {msg!r} lines adding up to {field}={need} within {limit}s (got {total})")
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(f"daemon_wait: the daemon exited (got {msg!r} {field}={total} of {need})")
        time.sleep(0.005)
PY
}
ms_between() { calc "($2 - $1) / 1e6" 1; } # ms_between NS0 NS1
store_q() { sqlite3 -cmd ".timeout 60000" "$1/.stepsync/state.db" "$2"; }

# --- B6: watch fan-out --------------------------------------------------------------------------
# B1's service with 1 Site and B6_SLICES Slices (no Instances), and a watcher: every Slice
# resyncs when its Site's `login_base` changes. In sync, with the daemon running; each run
# applies one new `login_base` for the Site and times, from just before `apply` is spawned:
# (a) the watchers' drain committing every Slice pending (the daemon's log line, written after
# the commit), (b) the end of the pass that re-synced the Site and every Slice against B1's
# 2 ms server. The raw client sends the same requests (1 Site, then every Slice) in the same
# run, for the ratio.
b6() {
  local total=$((B6_SLICES + 1))
  log "B6: one watched field change linked to $B6_SLICES Slices (server delay ${DELAY_MS} ms, concurrency $CONCURRENCY), daemon running, $RUNS runs"
  local d=$WORK/b6 svc r off t0 t1 tp ts np ns raw n notok fresh
  svc=$d/svc
  mkdir -p "$d"
  start_server "$DELAY_MS"
  "$BB/gen" --dir "$svc" --url "$SERVER_URL" --sites 1 --slices "$B6_SLICES" --instances 0 \
    --concurrency $CONCURRENCY --requests "$d/requests.jsonl" 2>/dev/null
  cat >"$svc/stepdefs/slice-watch.yaml" <<'YAML'
kind: Watcher
model: Slice
watches:
  - {model: Site, via: site, fields: [login_base]}
YAML
  "$STEPSYNC" -C "$svc" -q validate >/dev/null || die "B6: the service does not validate"
  timeout 300 "$STEPSYNC" -C "$svc" -q apply -f objects/ >/dev/null
  timeout 900 "$STEPSYNC" -C "$svc" run --once >"$d/sync.out" 2>&1 || die "B6: the first sync failed: $(tail -3 "$d/sync.out")"
  grep -q "^run: $total ok" "$d/sync.out" || die "B6: the first sync left objects not ok: $(head -3 "$d/sync.out")"
  start_daemon "$svc" "$d/daemon.log"
  for r in $(seq "$RUNS"); do
    printf 'Site:\n  - {name: site-0, login_base: b6-r%s}\n' "$r" >"$d/change.yaml"
    server_reset
    settle
    off=$(stat -c %s "$d/daemon.log")
    t0=$(date +%s%N)
    timeout 60 "$STEPSYNC" -C "$svc" -q apply -f "$d/change.yaml" >/dev/null || die "B6: run $r: apply failed"
    t1=$(date +%s%N)
    read -r tp np <<<"$(daemon_wait "$d/daemon.log" "$off" 120 "watchers made objects pending" objects "$B6_SLICES")" \
      || die "B6: run $r: the Slices were not made pending"
    read -r ts ns <<<"$(daemon_wait "$d/daemon.log" "$off" 900 pass ran "$total")" \
      || die "B6: run $r: the resync did not end"
    n=$(server_stat requests)
    [ "$n" = "$total" ] || note "B6: run $r: the daemon sent $n requests, expected $total"
    # Every Slice synced again after t0, and nothing is left to do.
    fresh=$(store_q "$svc" "SELECT COUNT(*) FROM objects WHERE model = 'Slice' AND status = 'ok' AND pending = 0 AND last_success_at >= $((t0 / 1000000))")
    notok=$(store_q "$svc" "SELECT COUNT(*) FROM objects WHERE status != 'ok' OR pending != 0")
    [ "$fresh" = "$B6_SLICES" ] && [ "$notok" = 0 ] \
      || die "B6: run $r: $fresh of $B6_SLICES Slices synced after the change, $notok objects not ok or pending"
    record b6_pending_ms "$(ms_between "$t0" "$tp")"
    record b6_apply_ms "$(ms_between "$t0" "$t1")"
    record b6_apply_exit_pending_ms "$(ms_between "$t1" "$tp")"
    record b6_made_pending "$np"
    record b6_resync_s "$(calc "($ts - $t0) / 1e9")"
    record b6_requests "$n"

    raw_run B6 600 "$d/requests.jsonl" "$total"
    raw=$RAW
    record b6_raw "$raw"
    record b6_ratio "$(calc "($ts - $t0) / 1e9 / $raw")"
    log "  run $r: apply $(ms_between "$t0" "$t1") ms; all $np pending at $(ms_between "$t0" "$tp") ms; all $ns re-synced at $(calc "($ts - $t0) / 1e9") s; raw ${raw}s, ratio $(calc "($ts - $t0) / 1e9 / $raw" 2)"
  done
  stop_daemon
}

# --- B7: policies -----------------------------------------------------------------------------
# Networks and Interfaces, no actuators (their objects are in sync as soon as they are
# written: only the policies' work is timed), a policy ensuring two Interfaces per Network.
# Each run: a fresh service directory and store, the daemon running on it, then `apply` of
# B7_NETWORKS Networks; timed from just before `apply` is spawned to the daemon's `policies`
# line (written after the commit of the transaction with every Interface) adding up to
# 2 x B7_NETWORKS writes; the store is then checked for 3 x B7_NETWORKS objects.
b7() {
  local want=$((B7_NETWORKS * 3))
  log "B7: apply $B7_NETWORKS Networks, a policy ensuring 2 Interfaces each, daemon running; $RUNS runs"
  local d=$WORK/b7 svc r i off t0 t1 tw nw n owned
  mkdir -p "$d/svc/schemas" "$d/svc/stepdefs" "$d/svc/objects"
  cat >"$d/svc/stepsync.yaml" <<YAML
name: bench-policies
concurrency: $CONCURRENCY
logging: {level: warn}
YAML
  cat >"$d/svc/schemas/models.yaml" <<'YAML'
models:
  Network:
    fields:
      name: {type: string, required: true}
      mtu: {type: int, default: 1500}
  Interface:
    fields:
      name: {type: string, required: true}
      network: {type: ref, to: Network, required: true}
      index: {type: int, required: true}
      mtu: int
YAML
  cat >"$d/svc/stepdefs/network-policy.yaml" <<'YAML'
kind: Policy
model: Network
on_create:
  - ensure:
      model: Interface
      key: "{{ object.name }}-if0"
      fields: {network: "{{ object.name }}", index: 0, mtu: "{{ object.mtu }}"}
  - ensure:
      model: Interface
      key: "{{ object.name }}-if1"
      fields: {network: "{{ object.name }}", index: 1, mtu: "{{ object.mtu }}"}
YAML
  { echo "Network:"; for i in $(seq 0 $((B7_NETWORKS - 1))); do echo "  - {name: net-$i}"; done; } >"$d/svc/objects/networks.yaml"
  "$STEPSYNC" -C "$d/svc" -q validate >/dev/null || die "B7: the service does not validate"
  for r in $(seq "$RUNS"); do
    svc=$d/svc-r$r
    cp -r "$d/svc" "$svc"
    # The store exists (and is empty) before the daemon starts.
    timeout 60 "$STEPSYNC" -C "$svc" -q status >/dev/null 2>&1 || true
    start_daemon "$svc" "$d/daemon-r$r.log"
    settle
    off=$(stat -c %s "$d/daemon-r$r.log")
    t0=$(date +%s%N)
    timeout 300 "$STEPSYNC" -C "$svc" -q apply -f objects/ >/dev/null || die "B7: run $r: apply failed"
    t1=$(date +%s%N)
    read -r tw nw <<<"$(daemon_wait "$d/daemon-r$r.log" "$off" 300 policies writes $((B7_NETWORKS * 2)))" \
      || die "B7: run $r: the policies did not write every Interface"
    stop_daemon
    n=$(store_q "$svc" "SELECT COUNT(*) FROM objects WHERE deleted = 0")
    owned=$(store_q "$svc" "SELECT COUNT(*) FROM objects WHERE model = 'Interface' AND owner IS NOT NULL")
    [ "$n" = "$want" ] && [ "$owned" = $((B7_NETWORKS * 2)) ] || die "B7: run $r: $n objects in the store ($owned owned Interfaces), expected $want"
    record b7_s "$(calc "($tw - $t0) / 1e9")"
    record b7_apply_s "$(calc "($t1 - $t0) / 1e9")"
    record b7_policy_s "$(calc "($tw - $t1) / 1e9")"
    record b7_objects "$n"
    log "  run $r: apply $(calc "($t1 - $t0) / 1e9") s, $nw Interfaces committed at $(calc "($tw - $t0) / 1e9") s, $n objects"
  done
}

# --- B3S: idle with watchers and policies ------------------------------------------------------
# B3's service with a watcher on Instances (a Slice's `max_instances`, its Site's `login_base`
# through slice.site) and a policy on Sites (one SiteTag each, a model without an actuator);
# one Instance fewer per SiteTag, so the store holds B3's 100,000 objects. Applied and synced
# (times in the log), then per run: an idle `run --once` with the steps loaded, timed from
# process start to exit, and its pass's own time (its `idle pass` debug line); then the same
# with the two step files moved aside, side by side.
b3s() {
  local instances=$((B3_INSTANCES - B3_SITES))
  log "B3S: $B3_TOTAL objects in sync with a watcher and a policy loaded: idle run --once; $RUNS runs"
  local d=$WORK/b3s svc r n wall pass_ms label
  svc=$d/svc
  mkdir -p "$d"
  start_server 0
  "$BB/gen" --dir "$svc" --url "$SERVER_URL" --sites $B3_SITES --slices $B3_SLICES \
    --instances $instances --concurrency $CONCURRENCY 2>/dev/null
  cat >"$svc/schemas/steps.yaml" <<'YAML'
models:
  SiteTag:
    fields:
      name: {type: string, required: true}
      site: {type: ref, to: Site, required: true}
YAML
  cat >"$svc/stepdefs/instance-watch.yaml" <<'YAML'
kind: Watcher
model: Instance
watches:
  - {model: Slice, via: slice, fields: [max_instances]}
  - {model: Site, via: slice.site, fields: [login_base]}
YAML
  cat >"$svc/stepdefs/site-policy.yaml" <<'YAML'
kind: Policy
model: Site
on_create:
  - ensure:
      model: SiteTag
      key: "{{ object.name }}-tag"
      fields: {site: "{{ object.name }}"}
YAML
  "$STEPSYNC" -C "$svc" -q validate >/dev/null || die "B3S: the service does not validate"
  settle
  measure 900 "$d/apply.out" "$STEPSYNC" -C "$svc" -q apply -f objects/ || die "B3S: apply failed"
  log "  apply of $((B3_TOTAL - B3_SITES)) objects: ${WALL}s"
  server_reset
  settle
  measure 1800 "$d/sync.out" "$STEPSYNC" -C "$svc" run --once || die "B3S: the first sync failed"
  grep -q "^run: $B3_TOTAL ok" "$d/sync.out" || die "B3S: the first sync left objects not ok: $(head -3 "$d/sync.out")"
  record b3s_sync_s "$WALL"
  log "  first sync (policies for $B3_SITES Sites, then $(server_stat requests) requests): ${WALL}s"
  mkdir -p "$d/aside"
  for r in $(seq "$RUNS"); do
    for label in steps plain; do
      if [ "$label" = plain ]; then mv "$svc/stepdefs/instance-watch.yaml" "$svc/stepdefs/site-policy.yaml" "$d/aside/"; fi
      server_reset
      STEPSYNC_LOG=warn,stepsync::engine::scheduler=debug measure 600 "$d/idle.out" \
        "$STEPSYNC" -C "$svc" --log-format json run --once || die "B3S: run $r: the idle pass ($label) failed"
      wall=$WALL
      if [ "$label" = plain ]; then mv "$d/aside/instance-watch.yaml" "$d/aside/site-policy.yaml" "$svc/stepdefs/"; fi
      n=$(server_stat requests)
      [ "$n" = 0 ] || die "B3S: run $r: the idle pass ($label) sent $n requests"
      grep -q "^run: $B3_TOTAL ok" "$d/idle.out" || die "B3S: run $r: not every object ok after the idle pass ($label): $(head -3 "$d/idle.out")"
      pass_ms=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try: f = json.loads(line).get("fields", {})
    except ValueError: continue
    if f.get("message", "").startswith("idle pass"): print(f.get("ms")); break
else: sys.exit(1)' "$d/idle.out.err") || die "B3S: run $r: no \`idle pass\` line ($label): $(tail -3 "$d/idle.out.err")"
      record "b3s_${label}_s" "$wall"
      record "b3s_${label}_pass_ms" "$pass_ms"
      log "  run $r ($label): idle run --once ${wall}s, its pass ${pass_ms} ms"
    done
  done
}

# --- B8: event ingest ---------------------------------------------------------------------------
# An event step turning each message into an upsert of one object (a model without an
# actuator: nothing but the ingest is timed), on NATS JetStream and on Kafka, one after the
# other in each run (side by side). Each run and bus: a fresh service (named per run, so a
# Kafka consumer group of its own) and store, a subject/topic of its own, the daemon started
# (it makes the durable consumer or joins the group), then B8_MESSAGES small JSON messages
# published (bench/src/bin/nats_pub.rs and kafka_pub.rs, 1,000 in flight, each acknowledged
# by the broker) while the daemon consumes. Timed from the first publish to the moment the
# step's positions in the store (written in each batch's commit) reach the last message of
# every stream/partition, polled every 20 ms; the objects are then counted. Peak RSS is the
# daemon's VmHWM. NATS: a server with JetStream on $B8_NATS (started when it is the local
# default and nats-server is installed). Kafka: a tansu broker started here on a free port,
# its storage in memory (scripts/lib/install.sh `ensure_kafka_broker` installs it, as for the
# Kafka event step tests; the first build takes about 20 minutes), a topic of
# B8_KAFKA_PARTITIONS partitions, published to once the daemon's consumer has its partitions
# (a new group's first join, a few seconds, is timed apart).
B8_BUSES=${BENCH_B8_BUSES:-nats,kafka}
B8_KAFKA_PARTITIONS=${BENCH_B8_KAFKA_PARTITIONS:-1}
b8() {
  log "B8: $B8_MESSAGES JSON messages on $B8_BUSES into upserts, daemon running; $RUNS runs"
  local d=$WORK/b8 r bus
  mkdir -p "$d/svc/schemas" "$d/svc/stepdefs"
  if [[ ",$B8_BUSES," == *",nats,"* ]] && ! (exec 3<>/dev/tcp/${B8_NATS%:*}/${B8_NATS#*:}) 2>/dev/null; then
    if [ "$B8_NATS" = 127.0.0.1:4222 ] && [ -x /usr/sbin/nats-server ]; then
      as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
        -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
      sleep 1
    fi
    (exec 3<>/dev/tcp/${B8_NATS%:*}/${B8_NATS#*:}) 2>/dev/null || die "B8: no NATS server on $B8_NATS"
  fi
  if [[ ",$B8_BUSES," == *",kafka,"* ]]; then
    INSTALL_BY=bench.sh ensure_kafka_broker || die "B8: no tansu broker could be installed"
    local kport
    kport=$(free_ports 1)
    B8_KAFKA=127.0.0.1:$kport
    mkdir -p "$d/tansu"
    # tansu reads a .env in its working directory: the empty dir has none.
    (cd "$d/tansu" && exec "$STEPSYNC_TANSU" broker --listener-url "tcp://$B8_KAFKA" \
      --advertised-listener-url "tcp://$B8_KAFKA" --storage-engine memory://tansu/ \
      --cluster-id stepsync-bench) >"$d/tansu.log" 2>&1 &
    track $!
    local i
    for i in $(seq 200); do
      (exec 3<>/dev/tcp/127.0.0.1/$kport) 2>/dev/null && break
      sleep 0.05
    done
    (exec 3<>/dev/tcp/127.0.0.1/$kport) 2>/dev/null || die "B8: tansu did not listen on $B8_KAFKA: $(tail -3 "$d/tansu.log")"
  fi
  cat >"$d/svc/schemas/models.yaml" <<'YAML'
models:
  Event:
    fields:
      name: {type: string, required: true}
      value: string
YAML
  for r in $(seq "$RUNS"); do
    for bus in ${B8_BUSES//,/ }; do b8_run "$bus" "$r"; done
  done
}

# b8_run BUS RUN: one measured ingest of B8_MESSAGES on BUS (nats or kafka).
b8_run() {
  local bus=$1 r=$2 d=$WORK/b8 svc topic endpoint t0 t1 parts tdone n hwm i pub p part want got ok
  svc=$d/svc-$bus-r$r
  cp -r "$d/svc" "$svc"
  topic="bench.b8-$$-$r-$(date +%s%N)"
  if [ "$bus" = nats ]; then endpoint=$B8_NATS; else endpoint=$B8_KAFKA; fi
  cat >"$svc/stepsync.yaml" <<YAML
name: bench-events-$bus-$r
logging: {level: warn}
event_bus: {kind: $bus, endpoint: "$endpoint"}
YAML
  cat >"$svc/stepdefs/events.yaml" <<YAML
kind: EventStep
name: events
topic: $topic
decode: json
model: Event
key: "{{ event.name }}"
fields: {value: "{{ event.value }}"}
YAML
  "$STEPSYNC" -C "$svc" -q validate >/dev/null || die "B8: the service does not validate"
  timeout 60 "$STEPSYNC" -C "$svc" -q status >/dev/null 2>&1 || true
  if [ "$bus" = kafka ]; then
    # The topic exists before the daemon subscribes, as a team's topics do.
    timeout 60 "$BB/kafka_pub" --brokers "$endpoint" --topic "$topic" --count 0 \
      --partitions "$B8_KAFKA_PARTITIONS" >/dev/null 2>"$d/pub-$bus-r$r.err" ||
      die "B8: run $r: could not create the Kafka topic: $(tail -3 "$d/pub-$bus-r$r.err")"
  fi
  local tstart
  tstart=$(date +%s%N)
  start_daemon "$svc" "$d/daemon-$bus-r$r.log"
  if [ "$bus" = kafka ]; then
    # A new consumer group's first join takes seconds (the broker waits for more members):
    # a cost of the daemon's start, not of the ingest, so it is timed apart.
    for i in $(seq 1200); do
      grep -q '"message":"partitions assigned"' "$d/daemon-$bus-r$r.log" && break
      sleep 0.05
    done
    grep -q '"message":"partitions assigned"' "$d/daemon-$bus-r$r.log" ||
      die "B8: kafka run $r: no partitions assigned within 60 s: $(tail -3 "$d/daemon-$bus-r$r.log")"
    record b8_kafka_join_s "$(calc "($(date +%s%N) - $tstart) / 1e9")"
  fi
  settle
  if [ "$bus" = nats ]; then
    "$BB/nats_pub" --url "$endpoint" --subject "$topic" --count "$B8_MESSAGES" >"$d/pub-$bus-r$r.out" 2>"$d/pub-$bus-r$r.err" &
  else
    "$BB/kafka_pub" --brokers "$endpoint" --topic "$topic" --count "$B8_MESSAGES" \
      --partitions "$B8_KAFKA_PARTITIONS" >"$d/pub-$bus-r$r.out" 2>"$d/pub-$bus-r$r.err" &
  fi
  pub=$!
  track "$pub"
  tdone=""
  for i in $(seq 15000); do # 300 s
    if [ -s "$d/pub-$bus-r$r.out" ]; then
      read -r t0 t1 parts <"$d/pub-$bus-r$r.out"
      ok=1
      # NATS prints the stream's last sequence (one stream, recorded under any part name);
      # Kafka prints TOPIC/PARTITION:OFFSET of each partition.
      for p in $parts; do
        if [ "$bus" = nats ]; then
          got=$(store_q "$svc" "SELECT COALESCE(MAX(pos), 0) FROM positions WHERE step = 'event/events'" 2>/dev/null || echo 0)
          want=$p
        else
          part=${p%:*} want=${p##*:}
          got=$(store_q "$svc" "SELECT COALESCE(MAX(pos), -1) FROM positions WHERE step = 'event/events' AND part = '$part'" 2>/dev/null || echo -1)
        fi
        [ "${got:-0}" -ge "$want" ] || { ok=0; break; }
      done
      if [ "$ok" = 1 ]; then tdone=$(date +%s%N); break; fi
    fi
    kill -0 "$DAEMON_PID" 2>/dev/null || die "B8: $bus run $r: the daemon exited: $(tail -3 "$d/daemon-$bus-r$r.log")"
    sleep 0.02
  done
  wait "$pub" || die "B8: $bus run $r: the publisher failed: $(tail -3 "$d/pub-$bus-r$r.err")"
  [ -n "$tdone" ] || die "B8: $bus run $r: the daemon did not commit every message within 300 s (${got:-?} of ${want:-?} in ${part:-the stream})"
  # Then until the daemon's passes have every object in sync (not part of the rate).
  local tsync=""
  for i in $(seq 3000); do # 60 s
    n=$(store_q "$svc" "SELECT COUNT(*) FROM objects WHERE pending = 0 AND status = 'ok'" 2>/dev/null || echo 0)
    if [ "${n:-0}" -ge "$B8_MESSAGES" ]; then tsync=$(date +%s%N); break; fi
    sleep 0.02
  done
  [ -n "$tsync" ] || note "B8: $bus run $r: $n of $B8_MESSAGES in sync 60 s after the last commit"
  hwm=$(awk '/^VmHWM:/ { print $2 }' "/proc/$DAEMON_PID/status")
  stop_daemon
  if [ "$bus" = nats ]; then
    "$BB/nats_pub" --url "$endpoint" --subject "$topic" --delete 1 || log "B8: could not delete the stream of $topic"
  fi
  n=$(store_q "$svc" "SELECT COUNT(*) FROM objects WHERE model = 'Event' AND deleted = 0")
  [ "$n" = "$B8_MESSAGES" ] || die "B8: $bus run $r: $n Events in the store, expected $B8_MESSAGES"
  record "b8_${bus}_rate" "$(calc "$B8_MESSAGES / (($tdone - $t0) / 1e9)" 0)"
  record "b8_${bus}_s" "$(calc "($tdone - $t0) / 1e9")"
  record "b8_${bus}_publish_s" "$(calc "($t1 - $t0) / 1e9")"
  record "b8_${bus}_rss" "$(calc "$hwm / 1024" 1)"
  [ -z "$tsync" ] || record "b8_${bus}_sync_s" "$(calc "($tsync - $t0) / 1e9")"
  log "  run $r $bus: published in $(calc "($t1 - $t0) / 1e9") s, all committed at $(calc "($tdone - $t0) / 1e9") s ($(calc "$B8_MESSAGES / (($tdone - $t0) / 1e9)" 0)/s), daemon peak RSS $(calc "$hwm / 1024" 0) MiB"
}

# --- B9: pull ----------------------------------------------------------------------------------
# One pull step listing B9_ITEMS items in B9_PAGES pages from the bench server's /_bench/list
# (not delayed), into a model without an actuator. `run --once` polls each pull step once
# before its passes; a poll's cost is the time of `run --once` with the step minus that of
# `run --once` on the same store with the step moved aside, run by run. Measured with nothing
# changed since the last poll, and with every item's value changed (POST /_bench/list/bump
# before the run: B9_ITEMS updates in the poll's transaction, and a pass over them).
b9() {
  log "B9: a pull step listing $B9_ITEMS items in $B9_PAGES pages; $RUNS runs"
  local d=$WORK/b9 svc r same changed plain
  svc=$d/svc
  mkdir -p "$svc/schemas" "$svc/stepdefs" "$d/aside"
  start_server 0
  cat >"$svc/stepsync.yaml" <<YAML
name: bench-pull
logging: {level: warn}
vars: {server: "$SERVER_URL"}
YAML
  cat >"$svc/schemas/models.yaml" <<'YAML'
models:
  Item:
    fields:
      name: {type: string, required: true}
      value: string
YAML
  cat >"$svc/stepdefs/items.yaml" <<YAML
kind: PullStep
name: items
interval: 1h
request: {method: GET, url: "{{ vars.server }}/_bench/list?total=$B9_ITEMS&per_page=$((B9_ITEMS / B9_PAGES))"}
next: {jsonpath: "\$.next"}
items: {jsonpath: "\$.items[*]"}
model: Item
key: "{{ item.name }}"
fields: {value: "{{ item.value }}"}
prune: true
YAML
  "$STEPSYNC" -C "$svc" -q validate >/dev/null || die "B9: the service does not validate"
  measure 300 "$d/first.out" "$STEPSYNC" -C "$svc" run --once || die "B9: the first poll failed"
  log "  first poll (creates $B9_ITEMS Items) and its pass: ${WALL}s"
  n=$(store_q "$svc" "SELECT COUNT(*) FROM objects WHERE model = 'Item' AND deleted = 0")
  [ "$n" = "$B9_ITEMS" ] || die "B9: $n Items after the first poll, expected $B9_ITEMS"
  for r in $(seq "$RUNS"); do
    measure 300 "$d/same.out" "$STEPSYNC" -C "$svc" run --once || die "B9: run $r: run --once failed"
    same=$WALL
    mv "$svc/stepdefs/items.yaml" "$d/aside/"
    measure 300 "$d/plain.out" "$STEPSYNC" -C "$svc" run --once || die "B9: run $r: run --once without the step failed"
    plain=$WALL
    mv "$d/aside/items.yaml" "$svc/stepdefs/"
    curl -fsS -m 5 -X POST "$SERVER_URL/_bench/list/bump" >/dev/null
    measure 300 "$d/changed.out" "$STEPSYNC" -C "$svc" run --once || die "B9: run $r: run --once after the change failed"
    changed=$WALL
    n=$(store_q "$svc" "SELECT COUNT(*) FROM objects WHERE model = 'Item' AND deleted = 0 AND fields LIKE '%\"v$r\"%'")
    [ "$n" = "$B9_ITEMS" ] || note "B9: run $r: $n of $B9_ITEMS Items have the new value"
    record b9_same_s "$(calc "$same - $plain")"
    record b9_changed_s "$(calc "$changed - $plain")"
    record b9_same_total_s "$same"
    record b9_changed_total_s "$changed"
    record b9_plain_s "$plain"
    log "  run $r: run --once unchanged ${same}s, every item changed ${changed}s, without the step ${plain}s"
  done
}

# --- B10: serve under readers -----------------------------------------------------------------
# B3's 100,000 objects in sync, `stepsync serve` running (the daemon and the HTTP server in one
# process, with a read token). Each run applies B1's size of changes (B10_CHANGES Instances,
# their flavor flipped) twice and times apply start -> every object in sync against B1's
# server delay: once with no reader, then with B10_CLIENTS clients paging through the API's
# list call (50 a page, status=ok) and the dashboard's model page (status=ok, 50 a page) the
# whole time (bench/src/bin/http_load.rs). p50 and p99 are each run's over all its requests.
B10_CLIENTS=${BENCH_B10_CLIENTS:-20}
B10_CHANGES=${BENCH_B10_CHANGES:-$B1_TOTAL}
b10() {
  log "B10: serve with $B3_TOTAL objects, $B10_CLIENTS readers while $B10_CHANGES changes sync (server delay ${DELAY_MS} ms); $RUNS runs"
  local d=$WORK/b10 svc r port token t0 n alone loaded
  mkdir -p "$d"
  start_server "$DELAY_MS"
  svc=$d/svc
  "$BB/gen" --dir "$svc" --url "$SERVER_URL" --sites $B3_SITES --slices $B3_SLICES \
    --instances $B3_INSTANCES --concurrency $CONCURRENCY 2>/dev/null
  [ "$B10_CHANGES" -le "$B3_INSTANCES" ] || die "B10: $B10_CHANGES changes but only $B3_INSTANCES Instances"
  # The first B10_CHANGES Instances with their flavor flipped, and as they were.
  awk -v n="$B10_CHANGES" '/^Instance:/ { on = 1; print; next } on && n-- > 0 { print }' \
    "$svc/objects/objects.yaml" >"$d/changes-b.yaml"
  sed -e 's/flavor: small}/flavor: SMALL}/; s/flavor: large}/flavor: small}/; s/flavor: SMALL}/flavor: large}/' \
    "$d/changes-b.yaml" >"$d/changes-a.yaml"
  [ "$(grep -c '^  - ' "$d/changes-a.yaml")" = "$B10_CHANGES" ] || die "B10: the changes file does not have $B10_CHANGES objects"
  port=$(free_ports 1)
  token=b10-$RANDOM$RANDOM$RANDOM
  cat >>"$svc/stepsync.yaml" <<YAML
serve:
  listen: 127.0.0.1:$port
  tokens:
    read: {env: B10_READ_TOKEN}
    write: {env: B10_WRITE_TOKEN}
YAML
  timeout 300 "$STEPSYNC" -C "$svc" -q apply -f objects/ >/dev/null || die "B10: apply failed"
  measure 900 "$d/first.out" "$STEPSYNC" -C "$svc" run --once || die "B10: the first sync failed"
  grep -q "^run: $B3_TOTAL ok" "$d/first.out" || die "B10: not every object ok: $(head -3 "$d/first.out")"
  log "  first sync of $B3_TOTAL: ${WALL}s"
  B10_READ_TOKEN=$token B10_WRITE_TOKEN=$token-w start_daemon "$svc" "$d/serve.log" serve
  for n in $(seq 200); do
    curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null && break
    sleep 0.05
  done
  curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$port/readyz" || die "B10: serve is not ready: $(tail -3 "$d/serve.log")"
  # b10_sync FILE: applies FILE and sets WALL to apply start -> nothing pending or suspect.
  b10_sync() {
    local t0 t1 i left
    t0=$(date +%s%N)
    timeout 300 "$STEPSYNC" -C "$svc" -q apply -f "$1" >/dev/null || die "B10: apply of $1 failed"
    for i in $(seq 30000); do # 600 s
      left=$(store_q "$svc" "SELECT COUNT(*) FROM objects WHERE pending = 1 OR suspect = 1" 2>/dev/null || echo 1)
      [ "${left:-1}" = 0 ] && break
      sleep 0.02
    done
    [ "${left:-1}" = 0 ] || die "B10: $left objects still pending 600 s after the apply"
    t1=$(date +%s%N)
    WALL=$(calc "($t1 - $t0) / 1e9")
  }
  for r in $(seq "$RUNS"); do
    settle
    b10_sync "$d/changes-a.yaml"
    alone=$WALL
    rm -f "$d/stop"
    "$BB/http_load" --base "http://127.0.0.1:$port" --token "$token" --clients "$B10_CLIENTS" \
      --path "list=/api/v1/objects?model=Instance&status=ok&limit=50" \
      --path "page=/models/Instance?status=ok" \
      --stop-file "$d/stop" --max-s 900 >"$d/load-r$r.out" 2>"$d/load-r$r.err" &
    local load=$!
    track "$load"
    sleep 1 # every client has its connection and is paging
    b10_sync "$d/changes-b.yaml"
    loaded=$WALL
    touch "$d/stop"
    wait "$load" || die "B10: run $r: the load client failed: $(tail -3 "$d/load-r$r.err")"
    [ -s "$d/load-r$r.err" ] && note "B10: run $r: $(head -2 "$d/load-r$r.err" | tr '\n' ' ')"
    local name p50 p99 reqs errs
    while read -r name reqs p50 p99 _ errs; do
      record "b10_${name}_p50" "${p50#p50_ms=}"
      record "b10_${name}_p99" "${p99#p99_ms=}"
      record "b10_${name}_requests" "${reqs#requests=}"
      [ "${errs#errors=}" = 0 ] || note "B10: run $r: ${errs#errors=} $name requests did not answer 200"
    done <"$d/load-r$r.out"
    record b10_sync_alone_s "$alone"
    record b10_sync_loaded_s "$loaded"
    record b10_sync_ratio "$(calc "$loaded / $alone")"
    log "  run $r: $B10_CHANGES changes synced in ${alone}s alone, ${loaded}s with $B10_CLIENTS readers; $(tr '\n' ' ' <"$d/load-r$r.out")"
  done
  stop_daemon
}

# --- Run, then the table ----------------------------------------------------------------------
run_bench() { # NAME FUNCTION: a failure is reported in the table, the others still run
  local name=$1 fn=$2
  want "$name" || return 0
  local rc
  # Not `if ! (...)`: errexit would be off inside the subshell.
  set +e
  (
    set -e
    "$fn"
  )
  rc=$?
  set -e
  if [ $rc -ne 0 ]; then
    log "$name FAILED (see above)"
    echo "$name" >>"$RES/failed"
  fi
  stop_tracked
}
# --- B11: scale-out on PostgreSQL (SPEC §17) -------------------------------------------------
# B11_OBJECTS independent Sites against a server that answers after B11_DELAY_MS, each worker
# at concurrency 16: the wall time from starting the workers to every object ok, with 1
# worker and with 3, side by side in each run, each on a fresh database of the PostgreSQL
# server at BENCH_PG (default postgres://postgres@127.0.0.1:5432). Then B1 (`run --once`)
# on PostgreSQL against B1 on SQLite, as B1 measures it.
pg_admin() { psql -qAt "$B11_PG/postgres" -c "$1" >/dev/null; }
pg_count_ok() { psql -qAt "$B11_PG/$1" -c "SELECT count(*) FROM objects WHERE status = 'ok'" 2>/dev/null || echo 0; }
b11_workers() { # DB N [BIN]: starts N workers on the service at DB, waits for every object ok; WALL
  local db=$1 n=$2 bin=${3:-$STEPSYNC} svc=$WORK/b11/svc-$1 i t0 t1 pids=()
  cp -r "$WORK/b11/svc" "$svc"
  echo "store: $B11_PG/$db" >>"$svc/stepsync.yaml"
  pg_admin "CREATE DATABASE $db"
  timeout 300 "$bin" -C "$svc" -q apply -f objects/ >/dev/null
  server_reset
  t0=$(date +%s%N)
  for i in $(seq "$n"); do
    "$bin" -C "$svc" run >"$svc/worker-$i.log" 2>&1 &
    pids+=($!)
    track "$!"
  done
  # Waits inside the server, one connection looking every 50 ms: a psql started every 50 ms
  # took a fifth of the machine's CPU from the workers it timed.
  psql -qAt "$B11_PG/$db" -c "DO \$\$ BEGIN
      WHILE (SELECT count(*) FROM objects WHERE status = 'ok') < $B11_OBJECTS LOOP
        IF clock_timestamp() > statement_timestamp() + interval '300 s' THEN
          RAISE EXCEPTION 'timed out'; END IF;
        PERFORM pg_sleep(0.05);
      END LOOP; END \$\$" >/dev/null 2>&1 ||
    die "B11: $n workers: not every object ok after 300 s ($(pg_count_ok "$db") ok); worker 1's log ends: $(tail -5 "$svc/worker-1.log")"
  t1=$(date +%s%N)
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  local sent
  sent=$(server_stat requests)
  [ "$sent" = "$B11_OBJECTS" ] || die "B11: $n workers sent $sent requests for $B11_OBJECTS objects"
  pg_admin "DROP DATABASE $db WITH (FORCE)"
}
b11() {
  B11_PG=${BENCH_PG:-postgres://postgres@127.0.0.1:5432}
  INSTALL_BY=bench.sh ensure_postgres || die "B11: no PostgreSQL server on 127.0.0.1:5432"
  log "B11: $B11_OBJECTS objects, server delay ${B11_DELAY_MS} ms, concurrency 16 a worker, 1 vs 3 workers on PostgreSQL, $RUNS runs"
  local d=$WORK/b11 r one three
  mkdir -p "$d"
  start_server "$B11_DELAY_MS"
  "$BB/gen" --dir "$d/svc" --url "$SERVER_URL" --sites "$B11_OBJECTS" --slices 0 --instances 0 \
    --concurrency 16 2>/dev/null
  for r in $(seq "$RUNS"); do
    b11_workers "b11_${$}_${r}_one" 1
    one=$WALL
    b11_workers "b11_${$}_${r}_three" 3
    three=$WALL
    record b11_one_s "$one"
    record b11_three_s "$three"
    record b11_speedup "$(calc "$one / $three")"
    log "  run $r: 1 worker ${one}s, 3 workers ${three}s, speed-up $(calc "$one / $three" 2)"
    if [ -n "$BASELINE" ]; then
      b11_workers "b11_${$}_${r}_one_base" 1 "$BASELINE"
      one=$WALL
      b11_workers "b11_${$}_${r}_three_base" 3 "$BASELINE"
      three=$WALL
      record b11_one_baseline_s "$one"
      record b11_three_baseline_s "$three"
      record b11_speedup_baseline "$(calc "$one / $three")"
      log "  run $r (baseline): 1 worker ${one}s, 3 workers ${three}s, speed-up $(calc "$one / $three" 2)"
    fi
  done
  # B1 on PostgreSQL beside B1 on SQLite: B1's service, `run --once`, one worker.
  local b=$WORK/b11/b1
  mkdir -p "$b"
  start_server "$DELAY_MS"
  "$BB/gen" --dir "$b/svc" --url "$SERVER_URL" --sites $B1_SITES --slices $B1_SLICES \
    --instances $B1_INSTANCES --concurrency $CONCURRENCY 2>/dev/null
  for r in $(seq "$RUNS"); do
    b1_once "B11 B1 (SQLite)" "$b/svc" "$b/sqlite-r$r" "$STEPSYNC"
    record b11_b1_sqlite_s "$WALL"
    local sq=$WALL db="b11_${$}_${r}_b1"
    pg_admin "CREATE DATABASE $db"
    b1_once "B11 B1 (PostgreSQL)" "$b/svc" "$b/pg-r$r" "$STEPSYNC" "$B11_PG/$db"
    record b11_b1_pg_s "$WALL"
    record b11_b1_ratio "$(calc "$WALL / $sq")"
    pg_admin "DROP DATABASE $db WITH (FORCE)"
    log "  run $r: B1 on SQLite ${sq}s, on PostgreSQL ${WALL}s, ratio $(calc "$WALL / $sq" 2)"
  done
}

# --- B3G: growth (issue #20) ----------------------------------------------------------------
# apply, plan, first sync (0 ms server) and the idle `run --once` after it, once at each of
# B3G_SIZES objects (B3's mix: 1 % Sites, 10 % Slices, the rest Instances), each size in a
# fresh folder removed before the next; time and peak RSS of each, a growth table (each
# step's cost per object at the largest size against the one before it, target <= 1.2) and
# a plot in target/bench/growth.svg. One run per size: the largest takes minutes.
# fresh_fs DIR INODES: an empty file system of its own at DIR: as root, a new ext4 image
# (sparse, no journal, like the root file system of the record's machine) loop-mounted there,
# with room for INODES files; otherwise a plain folder. drop_fs DIR takes it away: an unmount
# and one file's removal, where deleting a million objects' folders took more than 15 minutes
# and slowed whatever created files after it (see "The file system").
# The images go beside DIR, or into BENCH_IMAGES (when the work dir is itself on an image).
image_of() { echo "${BENCH_IMAGES:-$(dirname "$1")}/$(echo "$1" | tr / _).img"; }
fresh_fs() {
  local dir=$1 inodes=$2 img
  img=$(image_of "$1")
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ] && [ "${BENCH_LOOP:-1}" = 1 ]; then
    if truncate -s "${BENCH_LOOP_SIZE:-200G}" "$img" \
      && mkfs.ext4 -q -F -O ^has_journal -N "$inodes" -E lazy_itable_init=0 "$img" \
      && mount -o loop "$img" "$dir"; then
      echo "$dir" >>"$WORK/mounts"
      return 0
    fi
    log "could not mount an image at $dir; using a plain folder"
    rm -f "$img"
  fi
}
drop_fs() {
  local dir=$1
  if [ -f "$WORK/mounts" ] && grep -qxF "$dir" "$WORK/mounts"; then
    umount "$dir" && rm -f "$(image_of "$dir")" && rmdir "$dir"
    grep -vxF "$dir" "$WORK/mounts" >"$WORK/mounts.new" || true
    mv "$WORK/mounts.new" "$WORK/mounts"
  else
    rm -rf "$dir"
  fi
}

b3g() {
  local d=$WORK/b3g n sites slices svc prev="" step
  log "B3G: growth at $B3G_SIZES objects: apply, plan, first sync, idle run --once; 1 run each"
  mkdir -p "$d"
  : >"$RES/growth.tsv"
  start_server 0
  for n in $B3G_SIZES; do
    sites=$((n / 100)) slices=$((n / 10))
    # Each size on file systems of its own (the service, the plan dir), so that no size's
    # folders slow the next, and taking them away costs nothing.
    fresh_fs "$d/fs-$n" $((n * 8 + 100000))
    fresh_fs "$d/plan-$n" $((n * 8 + 100000))
    svc=$d/fs-$n/svc
    "$BB/gen" --dir "$svc" --url "$SERVER_URL" --sites "$sites" --slices "$slices" \
      --instances $((n - sites - slices)) --concurrency $CONCURRENCY 2>/dev/null
    settle
    measure 3600 "$d/apply.out" "$STEPSYNC" -C "$svc" -q apply -f objects/ || die "B3G: apply of $n failed"
    b3g_record "$n" apply
    settle
    measure 3600 "$d/plan.out" "$STEPSYNC" -C "$svc" plan --sys-dir "$d/plan-$n/sys"
    grep -q "^Plan: $n to create" "$d/plan.out" || die "B3G: unexpected plan of $n: $(tail -1 "$d/plan.out")"
    b3g_record "$n" plan
    # The plan's folders go before the sync writes its own: at 1,000,000 objects both would
    # not fit the disk's inodes beside the other benchmarks' on a plain folder.
    drop_fs "$d/plan-$n"
    rm -f "$d/plan.out"
    server_reset
    settle
    measure 7200 "$d/sync.out" "$STEPSYNC" -C "$svc" run --once
    grep -q "^run: $n ok" "$d/sync.out" || die "B3G: the first sync of $n left objects not ok: $(head -3 "$d/sync.out")"
    b3g_record "$n" sync
    server_reset
    settle
    measure 1800 "$d/idle.out" "$STEPSYNC" -C "$svc" run --once
    [ "$(server_stat requests)" = 0 ] || die "B3G: the idle pass over $n sent requests"
    b3g_record "$n" idle
    log "  $n objects: $(awk -v n="$n" '$1 == n { printf "%s %ss %sMiB  ", $2, $3, $4 }' "$RES/growth.tsv")"
    if [ -n "$prev" ]; then
      for step in apply plan sync idle; do
        record "b3g_${step}_growth" "$(awk -v a="$prev" -v b="$n" -v s="$step" '
          $2 == s && $1 == a { ta = $3 } $2 == s && $1 == b { tb = $3 }
          END { printf "%.2f", (tb / b) / (ta / a) }' "$RES/growth.tsv")"
      done
    fi
    drop_fs "$d/fs-$n"
    prev=$n
  done
  record b3g_peak_rss "$(awk -v n="$prev" '$1 == n && $4 > m { m = $4 } END { printf "%.0f", m }' "$RES/growth.tsv")"
  mkdir -p "$ROOT/target/bench"
  python3 "$ROOT/scripts/lib/growth_svg.py" "$RES/growth.tsv" "$ROOT/target/bench/growth.svg"
  log "  plot: target/bench/growth.svg"
}
b3g_record() { # N STEP: the last measure's time and peak RSS, in the growth table
  echo "$1 $2 $WALL $(calc "$RSS / 1024" 1)" >>"$RES/growth.tsv"
  record "b3g_$2_s_$1" "$WALL"
  record "b3g_$2_rss_$1" "$(calc "$RSS / 1024" 1)"
}

START=$(date -u +%Y-%m-%dT%H:%MZ)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
run_bench B1 b1
run_bench B2 b2
run_bench B3 b3
run_bench B4 b4
run_bench B4H b4h
run_bench B5 b5
run_bench B6 b6
run_bench B7 b7
run_bench B3S b3s
run_bench B8 b8
run_bench B9 b9
run_bench B10 b10
run_bench B11 b11
run_bench B3G b3g

# stats METRIC -> "n median min max" (median of an even count: the mean of the middle two)
stats() {
  [ -s "$RES/$1" ] || { echo "0 - - -"; return; }
  sort -g "$RES/$1" | awk '{ v[NR] = $1 } END {
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%d %s %s %s\n", NR, m, v[1], v[NR] }'
}
b5_all() { # VALUE METRIC: every recorded value is VALUE
  [ -s "$RES/$2" ] && ! grep -qvx "$1" "$RES/$2"
}
fmt() { case "$1" in -) echo "-" ;; *) awk -v v="$1" -v p="$2" 'BEGIN { printf "%.*f", p, v }' ;; esac; }
# row LABEL METRIC DECIMALS [OP TARGET]: OP is <=, >= or <, checked against the median, or =,
# which every run must meet (a count)
row() {
  local label=$1 metric=$2 prec=$3 op=${4:-} target=${5:-} n med min max verdict=""
  read -r n med min max <<<"$(stats "$metric")"
  if [ "$n" = 0 ]; then return; fi
  if [ -n "$op" ]; then
    if awk -v m="$med" -v lo="$min" -v hi="$max" -v t="$target" -v op="$op" 'BEGIN {
      if (op == "<=") r = m <= t; else if (op == ">=") r = m >= t; else if (op == "<") r = m < t
      else r = (lo == t && hi == t)
      exit !r }'; then
      verdict="met"
    else
      verdict="**missed**"
    fi
  fi
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$n" "$(fmt "$med" "$prec")" \
    "$(fmt "$min" "$prec")" "$(fmt "$max" "$prec")" "${op:+$op $target}" "$verdict"
}

{
  echo "stepsync benchmarks, $START ($(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo '+changes'))"
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/^Mem:/ { print $2 " GiB RAM" }'), $(uname -sr)"
  echo "work dir: $(df -T "$WORK" | awk 'NR == 2 { print $2 }') ($WORK); load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
  [ -z "$BASELINE" ] || echo "baseline build: $BASELINE"
  echo "runs: $RUNS per measure (median, min, max)$([ "$QUICK" = 1 ] && echo ' -- QUICK MODE: smaller sizes, not comparable with the targets')"
  echo
  echo "| benchmark | n | median | min | max | target | |"
  echo "|---|---:|---:|---:|---:|---|---|"
  row "B1 stepsync \`run --once\`, $B1_TOTAL objects (s)" b1_stepsync 2
  row "B1 raw reqwest client, same requests (s)" b1_raw 2
  row "B1 ratio stepsync / raw (per run)" b1_ratio 2 "<=" 1.15
  row "B1 stepsync, service dir on tmpfs (s)" b1_stepsync_tmpfs 2
  row "B1 ratio stepsync on tmpfs / raw (per run)" b1_ratio_tmpfs 2
  row "B1 baseline build \`run --once\` (s)" b1_baseline 2
  row "B1 ratio baseline build / raw (per run)" b1_ratio_baseline 2
  row "B1 stepsync peak RSS (MiB)" b1_stepsync_rss 0
  row "B1 stepsync requests in flight, max" b1_stepsync_inflight 0
  row "B2 built-in runner, per object (s)" b2_builtin 3
  row "B2 \`runner: ansible\`, per object (s)" b2_ansible 3
  row "B2 \`ansible-playbook\` by hand, per object (s)" b2_hand 3
  row "B2 speedup built-in vs \`ansible-playbook\` by hand (x)" b2_speedup_hand 1 ">=" 50
  row "B2 speedup built-in vs \`runner: ansible\` (x)" b2_speedup_runner 1
  row "B2 \`ansible-playbook\` by hand with Mitogen's strategy, per object (s)" b2_mitogen 3
  row "B2 speedup built-in vs \`ansible-playbook\` with Mitogen (x)" b2_speedup_mitogen 1 ">=" 5
  row "B2 built-in runner, one object alone (s)" b2_one_s 3
  row "B2 one SSH round trip over an open master (ms)" b2_rtt_ms 1
  row "B3 \`apply\` of $B3_TOTAL objects (s)" b3_apply_s 2
  row "B3 \`apply\` rate (objects/s)" b3_apply_rate 0
  row "B3 \`apply\` peak RSS (MiB)" b3_apply_rss 0
  row "B3 \`plan\`, $B3_TOTAL pending (s)" b3_plan_s 2 "<=" 3
  row "B3 \`plan\`, sys dir on tmpfs (s)" b3_plan_tmpfs_s 2
  row "B3 \`plan\`, baseline build (s)" b3_plan_baseline_s 2
  row "B3 \`plan\` peak RSS (MiB)" b3_plan_rss 0 "<=" 300
  row "B3 \`plan\` again, recipes already in the sys dir (s)" b3_replan_s 2
  row "B3 first sync \`run --once\`, 0 ms server (s)" b3_sync_s 1
  row "B3 raw reqwest client, same requests level by level (s)" b3_sync_raw_s 1
  row "B3 first sync ratio stepsync / raw (per run)" b3_sync_ratio 2 "<=" 1.3
  row "B3 first sync peak RSS (MiB)" b3_sync_rss 0
  row "B3 idle \`run --once\`, all in sync (s)" b3_idle_s 2 "<=" 1
  row "B3 idle \`run --once\` peak RSS (MiB)" b3_idle_rss 0
  row "B4 apply -> first request, p50 (ms)" b4_p50 0 "<=" 30
  row "B4 apply -> first request, p99 (ms)" b4_p99 0 "<=" 100
  row "B4 apply process alone, p50 (ms)" b4_apply_p50 0
  row "B4 apply exit -> first request, p50 (ms)" b4_commit_p50 0
  row "B4 baseline build, apply -> first request, p50 (ms)" b4_baseline_p50 0
  row "B4 baseline build, apply -> first request, p99 (ms)" b4_baseline_p99 0
  row "B4 baseline build, apply exit -> first request, p50 (ms)" b4_baseline_commit_p50 0
  row "B4H one request hung ${B4H_HANG_S} s: apply -> first request, p50 (ms)" b4h_p50 0 "<=" 250
  row "B4H one request hung ${B4H_HANG_S} s: apply -> first request, p99 (ms)" b4h_p99 0
  row "B4H apply exit -> first request, p50 (ms)" b4h_commit_p50 0
  row "B4H changes applied and sent while a request was held (of $B4_CHANGES)" b4h_hung_during 0 "=" "$B4_CHANGES"
  row "B4H hung requests per run" b4h_hangs 0
  # B5's times meet a target only when the plan and the sync were that model's objects in
  # every run: a plan that detects nothing is fast for nothing.
  b5_plan_t=("<=" 10) b5_idle_t=("<" 0.1) b5_nc=""
  if ! b5_all "$B5_EXPECTED" b5_plan_listed || ! b5_all 0 b5_plan_others || ! b5_all "$B5_EXPECTED" b5_sync_requests; then
    b5_plan_t=() b5_idle_t=() b5_nc=" -- not comparable with the target (see below)"
  fi
  row "B5 \`plan\` after one edit of $B5_MODEL's stepdef, $B5_TOTAL in sync (s)$b5_nc" b5_plan_s 2 "${b5_plan_t[@]}"
  row "B5 \`plan\` peak RSS (MiB)" b5_plan_rss 0
  row "B5 \`plan\`: \`~ update $B5_MODEL/...\` lines (of $B5_EXPECTED)" b5_plan_listed 0 "=" "$B5_EXPECTED"
  row "B5 \`plan\`: lines for other objects" b5_plan_others 0 "=" 0
  row "B5 \`run --once\` after the edit (s)" b5_sync_s 2
  row "B5 \`run --once\` after the edit: requests (of $B5_EXPECTED)" b5_sync_requests 0 "=" "$B5_EXPECTED"
  row "B5 first idle \`run --once\` after that (s)$b5_nc" b5_idle1_s 3 "${b5_idle_t[@]}"
  row "B5 second idle \`run --once\` (s)" b5_idle2_s 3
  row "B5 \`plan\`, baseline build (s)" b5_baseline_plan_s 2
  row "B5 \`plan\`, baseline build: \`~ update $B5_MODEL/...\` lines" b5_baseline_plan_listed 0
  row "B5 first idle \`run --once\`, baseline build (s)" b5_baseline_idle1_s 3
  row "B6 apply of one watched change -> all $B6_SLICES linked Slices pending (ms)" b6_pending_ms 0 "<=" 1000
  row "B6 made pending by the watcher (of $B6_SLICES)" b6_made_pending 0 "=" "$B6_SLICES"
  row "B6 apply process alone (ms)" b6_apply_ms 0
  row "B6 apply exit -> all pending (ms)" b6_apply_exit_pending_ms 0
  row "B6 apply -> Site and $B6_SLICES Slices re-synced, 2 ms server (s)" b6_resync_s 2
  row "B6 raw reqwest client, same $((B6_SLICES + 1)) requests (s)" b6_raw 2
  row "B6 ratio re-sync / raw (per run)" b6_ratio 2
  row "B6 requests sent by the daemon (of $((B6_SLICES + 1)))" b6_requests 0 "=" "$((B6_SLICES + 1))"
  row "B7 apply of $B7_NETWORKS Networks -> $((B7_NETWORKS * 3)) objects committed, daemon (s)" b7_s 2 "<=" 5
  row "B7 apply process alone (s)" b7_apply_s 2
  row "B7 apply exit -> the policies' commit (s)" b7_policy_s 2
  row "B7 objects in the store (of $((B7_NETWORKS * 3)))" b7_objects 0 "=" "$((B7_NETWORKS * 3))"
  row "B3S first sync with a watcher and a policy, 0 ms server (s)" b3s_sync_s 1
  row "B3S idle pass with the steps loaded, $B3_TOTAL in sync (ms)" b3s_steps_pass_ms 0 "<=" 100
  row "B3S idle pass without them, same store (ms)" b3s_plain_pass_ms 0
  row "B3S idle \`run --once\` with the steps loaded (s)" b3s_steps_s 3
  row "B3S idle \`run --once\` without them (s)" b3s_plain_s 3
  row "B8 NATS: $B8_MESSAGES messages, first publish -> last commit (messages/s)" b8_nats_rate 0 ">=" 20000
  row "B8 NATS: first publish -> last commit (s)" b8_nats_s 2
  row "B8 NATS: publishing alone (s)" b8_nats_publish_s 2
  row "B8 NATS: first publish -> every object in sync (s)" b8_nats_sync_s 2
  row "B8 NATS: daemon peak RSS (MiB)" b8_nats_rss 0
  row "B8 Kafka: $B8_MESSAGES messages, first publish -> last commit (messages/s)" b8_kafka_rate 0
  row "B8 Kafka: first publish -> last commit (s)" b8_kafka_s 2
  row "B8 Kafka: publishing alone (s)" b8_kafka_publish_s 2
  row "B8 Kafka: first publish -> every object in sync (s)" b8_kafka_sync_s 2
  row "B8 Kafka: daemon peak RSS (MiB)" b8_kafka_rss 0
  row "B8 Kafka: daemon start -> partitions assigned, before publishing (s)" b8_kafka_join_s 2
  row "B9 one poll, $B9_ITEMS items in $B9_PAGES pages, nothing changed (s)" b9_same_s 3 "<=" 1
  row "B9 one poll, every item changed (s)" b9_changed_s 3
  row "B9 \`run --once\` with the step, nothing changed (s)" b9_same_total_s 3
  row "B9 \`run --once\` with the step, every item changed (s)" b9_changed_total_s 3
  row "B9 \`run --once\` without the step (s)" b9_plain_s 3
  row "B10 API list, 50 a page, status=ok, $B10_CLIENTS clients, p50 (ms)" b10_list_p50 1 "<=" 20
  row "B10 API list, p99 (ms)" b10_list_p99 1 "<=" 100
  row "B10 dashboard model page, status=ok, $B10_CLIENTS clients, p50 (ms)" b10_page_p50 1 "<=" 20
  row "B10 dashboard model page, p99 (ms)" b10_page_p99 1 "<=" 100
  row "B10 requests answered in a run, API list" b10_list_requests 0
  row "B10 requests answered in a run, model page" b10_page_requests 0
  row "B10 $B10_CHANGES changes synced, no readers (s)" b10_sync_alone_s 2
  row "B10 $B10_CHANGES changes synced, $B10_CLIENTS readers (s)" b10_sync_loaded_s 2
  row "B10 sync time with readers / without" b10_sync_ratio 2
  row "B11 $B11_OBJECTS objects, ${B11_DELAY_MS} ms server, 1 worker on PostgreSQL (s)" b11_one_s 2
  row "B11 the same, 3 workers (s)" b11_three_s 2
  row "B11 speed-up 3 workers / 1 (per run)" b11_speedup 2 ">=" 2.7
  row "B11 baseline build, 1 worker (s)" b11_one_baseline_s 2
  row "B11 baseline build, 3 workers (s)" b11_three_baseline_s 2
  row "B11 baseline build, speed-up (per run)" b11_speedup_baseline 2
  row "B11 B1 \`run --once\` on SQLite (s)" b11_b1_sqlite_s 2
  row "B11 B1 \`run --once\` on PostgreSQL (s)" b11_b1_pg_s 2
  row "B11 B1 PostgreSQL / SQLite (per run)" b11_b1_ratio 2
  glast=""
  for gn in $B3G_SIZES; do
    for gs in apply plan sync idle; do
      row "B3G $gs, $gn objects (s)" "b3g_${gs}_s_$gn" 2
      row "B3G $gs, $gn objects, peak RSS (MiB)" "b3g_${gs}_rss_$gn" 0
    done
    glast=$gn
  done
  for gs in apply plan sync idle; do
    row "B3G $gs: cost per object at $glast / at the size before (x)" "b3g_${gs}_growth" 2 "<=" 1.2
  done
  row "B3G peak RSS at $glast objects (MiB)" b3g_peak_rss 0 "<=" 2560
  if [ -s "$RES/notes" ]; then
    echo
    sed 's/^/- /' "$RES/notes"
  fi
  if [ -s "$RES/failed" ]; then
    echo
    echo "FAILED: $(tr '\n' ' ' <"$RES/failed")"
  fi
} | tee "$WORK/table.md"
mkdir -p "$ROOT/target/bench"
cp "$WORK/table.md" "$ROOT/target/bench/results.md"
for f in "$RES"/*; do [ "$(basename "$f")" = failed ] || cp "$f" "$ROOT/target/bench/$(basename "$f").txt"; done
[ ! -s "$RES/failed" ]
