#!/usr/bin/env bash
# How light is the idle daemon? Issues N certificates (1-day lifetime) from a private Pebble,
# starts `renewd run` on them (release build), then reports its resident memory and every
# system call it makes during SECONDS of idleness, traced with strace (all threads).
# An idle daemon should make none: it sleeps until the earliest deadline, hours away.
#
# Usage: bash scripts/idle-probe.sh [N=100] [SECONDS=60]
set -euo pipefail

N=${1:-100}
SECS=${2:-60}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WORK="$ROOT/target/idle-probe"
source "$ROOT/scripts/lib/pebble.sh"

bash scripts/fetch-test-deps.sh >/dev/null
command -v strace >/dev/null || { echo "needs strace: apt-get install strace" >&2; exit 1; }
cargo build --release --quiet
RENEWD="$ROOT/target/release/renewd"

rm -rf "$WORK"
mkdir -p "$WORK/tls"
start_pebble "$WORK/pebble" 86400
{
    echo "state_dir = \"$WORK/state\""
    echo "control_socket = \"$WORK/control.sock\""
    echo "max_concurrent_renewals = 16"
    pebble_ca_toml
    for i in $(seq 1 "$N"); do
        cat <<EOF
[[certificate]]
name = "c$i"
domains = ["c$i.test"]
owner = "ops@example.org"
challenge = { type = "http-01", listen = "127.0.0.1:$HTTP_PORT" }
files = { fullchain = "$WORK/tls/c$i.pem", key = "$WORK/tls/c$i.key" }
EOF
    done
} >"$WORK/renewd.toml"

start=$(date +%s.%N)
"$RENEWD" run --once --config "$WORK/renewd.toml" 2>"$WORK/once.log"
printf 'issued %d certificates in %.1f s (run --once, max_concurrent_renewals = 16)\n' \
    "$N" "$(echo "$(date +%s.%N) - $start" | bc)"

"$RENEWD" run --config "$WORK/renewd.toml" 2>"$WORK/daemon.log" &
daemon=$!
pids+=($daemon)
for _ in $(seq 100); do [ -S "$WORK/control.sock" ] && break; sleep 0.1; done
sleep 2
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$daemon/status")
hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$daemon/status")
threads=$(awk '/^Threads/ {print $2}' "/proc/$daemon/status")
echo "daemon with $N certificates: RSS $rss KiB (peak $hwm KiB), $threads threads"

timeout --signal=INT "$SECS" strace -f -qq -p "$daemon" -o "$WORK/strace.log" 2>/dev/null || true
# A line with " = " is a call that returned: a wake-up. The others are the waits each thread
# was already blocked in when strace attached (shown "<unfinished ...>"), which never returned.
calls=$(grep -c ' = ' "$WORK/strace.log" || true)
echo "system calls completed in $SECS s idle (strace -f, all threads): $calls"
echo "threads blocked the whole time in:"
grep -v ' = ' "$WORK/strace.log" | sed -E 's/^[0-9]+ +/  /; s/ <(unfinished|detached) \.\.\.>//'
if [ "$calls" -gt 0 ]; then
    echo "completed calls by kind:"
    grep ' = ' "$WORK/strace.log" | sed -E 's/^[0-9]+ +//; s/\(.*//' | sort | uniq -c | sort -rn | head
fi
