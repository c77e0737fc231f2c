#!/usr/bin/env bash
# renewd's benchmarks, against a private Pebble (PEBBLE_VA_NOSLEEP=1, retryAfter 1 s for
# authorizations and orders), with certbot (from PyPI) on the same renewal workload.
#
#   bash scripts/bench.sh            # everything (about 35 minutes on 2 cores)
#   BENCH_QUICK=1 bash scripts/bench.sh   # small sizes only, to try the script (~3 minutes)
#
# Measures (release build):
#   1. renewal of N certificates all due at once (`renewd renew --all --force`, the same
#      workload as `certbot renew --force-renewal`), N = 10, 100, 1000: wall time and CPU
#      seconds (user + system) of the renewing process; certbot for N = 10 and 100 (1,000
#      takes certbot the best part of an hour: BENCH_CERTBOT_SIZES="10 100 1000");
#   2. a `run --once` pass with nothing due, 1,000 and 10,000 managed certificates, from a
#      CA without ARI (`ari = false`, so nothing is asked) and with ARI (one renewalInfo
#      request per certificate); median of 5 runs;
#   3. `renewd run` under a fake systemd (scripts/lib/daemon_probe.py): time to READY=1 and
#      resident memory, with 10, 1,000 and 10,000 certificates;
#   4. wake-ups while idle with 1,000 certificates, watchdog on as in the packaged unit
#      (WatchdogSec=5min): context switches of all threads over BENCH_IDLE_SECONDS;
#   5. the criterion micro-benchmarks (`cargo bench --bench hot_paths`).
# Results go to target/bench/results-<UTC time>.md (and results-latest.md); copy the table
# into BENCHMARKS.md. Run it on a quiet machine: every figure is a real time.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
OUT="$ROOT/target/bench"
WORK="$OUT/work"
source "$ROOT/scripts/lib/pebble.sh"

if [ -n "${BENCH_QUICK:-}" ]; then
    RENEW_SIZES=${BENCH_RENEW_SIZES:-"10 100"}
    CERTBOT_SIZES=${BENCH_CERTBOT_SIZES:-"10"}
    ONCE_SIZES=${BENCH_ONCE_SIZES:-"100 1000"}
    START_SIZES=${BENCH_START_SIZES:-"10 1000"}
    IDLE_SIZE=${BENCH_IDLE_SIZE:-100}
    IDLE_SECONDS=${BENCH_IDLE_SECONDS:-30}
else
    RENEW_SIZES=${BENCH_RENEW_SIZES:-"10 100 1000"}
    CERTBOT_SIZES=${BENCH_CERTBOT_SIZES:-"10 100"}
    ONCE_SIZES=${BENCH_ONCE_SIZES:-"1000 10000"}
    START_SIZES=${BENCH_START_SIZES:-"10 1000 10000"}
    IDLE_SIZE=${BENCH_IDLE_SIZE:-1000}
    IDLE_SECONDS=${BENCH_IDLE_SECONDS:-300}
fi
WATCHDOG_SEC=${BENCH_WATCHDOG_SEC:-300}   # the packaged unit's WatchdogSec=5min
CONCURRENCY=32
CERTBOT_VERSION=${BENCH_CERTBOT_VERSION:-5.8.0}
LARGEST=$(printf '%s\n' $ONCE_SIZES $START_SIZES $IDLE_SIZE | sort -n | tail -1)

say() { printf '\n== %s\n' "$*" >&2; }
die() { printf 'bench.sh: error: %s\n' "$*" >&2; exit 1; }

for tool in python3 openssl curl sha256sum; do
    command -v "$tool" >/dev/null || die "needs $tool (apt-get install python3 python3-venv openssl curl coreutils)"
done

say "test dependencies (Pebble) and release build"
bash scripts/fetch-test-deps.sh >/dev/null
cargo build --release --quiet
RENEWD="$ROOT/target/release/renewd"

say "certbot $CERTBOT_VERSION from PyPI"
VENV="$OUT/certbot-venv"
if ! "$VENV/bin/certbot" --version 2>/dev/null | grep -qx "certbot $CERTBOT_VERSION"; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet "certbot==$CERTBOT_VERSION"
fi
CERTBOT="$VENV/bin/certbot"

rm -rf "$WORK"
mkdir -p "$WORK"
STAMP=$(date -u +%Y-%m-%dT%H%MZ)
RESULTS="$OUT/results-$STAMP.md"
ROWS="$WORK/rows.md"
: >"$ROWS"
row() { printf '| %s |\n' "$*" | tee -a "$ROWS" >&2; }
# A new table: its header row, then the separator.
table() {
    printf '\n| %s |\n|%s\n' "$*" "$(awk -F'|' '{for (i = 1; i <= NF; i++) printf "---|"}' <<<"$*")" |
        tee -a "$ROWS" >&2
}

# Seconds with a fraction, from bash's `time` (real, user+sys of the command and children).
TIMEFORMAT='%R %U %S'
timed() { # timed OUTVAR cmd... : sets OUTVAR to "wall cpu"
    local __var=$1 __t
    shift
    __t=$({ time "$@" >"$WORK/last.out" 2>"$WORK/last.err"; } 2>&1) ||
        { cat "$WORK/last.err" >&2; die "failed: $*"; }
    printf -v "$__var" '%s' "$(awk '{printf "%.3f %.3f", $1, $2 + $3}' <<<"$__t")"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

start_pebble "$WORK/pebble" 604800   # 7-day certificates: nothing due unless forced

# A renewd configuration with certificates c1..cN: http-01 on renewd's own listener (the
# port Pebble's VA connects to), 100 certificates per directory.
write_config() { # write_config FILE STATE N ARI(true|false)
    local file=$1 state=$2 n=$3 ari=$4 i d
    {
        echo "state_dir = \"$state\""
        echo "control_socket = \"$state/control.sock\""
        echo "max_concurrent_renewals = $CONCURRENCY"
        pebble_ca_toml
        echo "ari = $ari"
        echo "[defaults]"
        echo "owner = \"ops@example.org\""
        echo "challenge = { type = \"http-01\", listen = \"127.0.0.1:$HTTP_PORT\" }"
        for i in $(seq 1 "$n"); do
            d="$WORK/tls/d$(((i - 1) / 100))"
            printf '[[certificate]]\nname = "c%d"\ndomains = ["c%d.test"]\n' "$i" "$i"
            printf 'files = { fullchain = "%s/c%d.pem", key = "%s/c%d.key" }\n' "$d" "$i" "$d" "$i"
        done
    } >"$file"
    for i in $(seq 0 100 $((n - 1))); do mkdir -p "$WORK/tls/d$((i / 100))"; done
    chmod 755 "$WORK/tls" "$WORK"/tls/d* 2>/dev/null || true
}

changed_files() { # changed_files BEFORE AFTER: how many fullchains differ
    join <(sort -k2 "$1" | awk '{print $2, $1}') <(sort -k2 "$2" | awk '{print $2, $1}') |
        awk '$2 != $3' | wc -l
}

# --- 1. Renewal of N certificates all due at once -----------------------------------------
say "renewal of N certificates all due at once (max_concurrent_renewals = $CONCURRENCY)"
table "Renewal, all due at once | N | wall s | CPU s | wall per certificate"
for n in $RENEW_SIZES; do
    rm -rf "$WORK/tls"
    cfg="$WORK/renew-$n.toml"
    write_config "$cfg" "$WORK/state-renew-$n" "$n" true
    timed issue "$RENEWD" run --once --config "$cfg"
    echo "issued $n certificates: $issue (wall, CPU s)" >&2
    find "$WORK/tls" -name '*.pem' -exec sha256sum {} + >"$WORK/before"
    timed t "$RENEWD" renew --all --force --config "$cfg"
    find "$WORK/tls" -name '*.pem' -exec sha256sum {} + >"$WORK/after"
    changed=$(changed_files "$WORK/before" "$WORK/after")
    [ "$changed" -eq "$n" ] || die "renewd renewed $changed of $n certificates"
    read -r wall cpu <<<"$t"
    row "renewd renew --all --force | $n | $wall | $cpu | $(awk -v w="$wall" -v n="$n" 'BEGIN{printf "%.1f ms", 1000*w/n}')"
    echo "renewd $n $wall $cpu" >>"$WORK/renew.txt"
done

say "certbot $CERTBOT_VERSION on the same workload (standalone http-01, same Pebble)"
for n in $CERTBOT_SIZES; do
    cb="$WORK/certbot-$n"
    mkdir -p "$cb"
    cbargs=(--config-dir "$cb/etc" --work-dir "$cb/work" --logs-dir "$cb/logs" --non-interactive)
    export REQUESTS_CA_BUNDLE="$PEBBLE_CA"
    start=$(date +%s.%N)
    for i in $(seq 1 "$n"); do
        "$CERTBOT" certonly "${cbargs[@]}" --standalone --http-01-address 127.0.0.1 \
            --http-01-port "$HTTP_PORT" --server "https://127.0.0.1:$ACME_PORT/dir" \
            --agree-tos --email ops@example.org --no-eff-email --key-type ecdsa \
            --cert-name "c$i" -d "c$i.test" >>"$cb/certonly.log" 2>&1 ||
            { tail -20 "$cb/certonly.log" >&2; die "certbot certonly c$i failed"; }
    done
    echo "certbot issued $n certificates in $(echo "$(date +%s.%N) - $start" | bc) s" >&2
    find "$cb/etc/archive" -name 'fullchain*.pem' | wc -l >"$WORK/cb-before"
    timed t "$CERTBOT" renew "${cbargs[@]}" --force-renewal --no-random-sleep-on-renew
    after=$(find "$cb/etc/archive" -name 'fullchain*.pem' | wc -l)
    [ "$after" -eq $(($(cat "$WORK/cb-before") + n)) ] || die "certbot renewed $((after - $(cat "$WORK/cb-before"))) of $n"
    read -r wall cpu <<<"$t"
    row "certbot renew --force-renewal | $n | $wall | $cpu | $(awk -v w="$wall" -v n="$n" 'BEGIN{printf "%.1f ms", 1000*w/n}')"
    echo "certbot $n $wall $cpu" >>"$WORK/renew.txt"
    unset REQUESTS_CA_BUNDLE
done
# renewd's speed-up over certbot where both ran.
while read -r tool n wall cpu; do
    [ "$tool" = certbot ] || continue
    read -r _ _ rwall rcpu < <(grep "^renewd $n " "$WORK/renew.txt") || continue
    row "speed-up over certbot | $n | $(awk -v a="$wall" -v b="$rwall" 'BEGIN{printf "%.1fx", a/b}') | $(awk -v a="$cpu" -v b="$rcpu" 'BEGIN{printf "%.1fx", a/b}') |"
done <"$WORK/renew.txt"

# --- The large set: issued once, used by the nothing-due, start-up and idle figures --------
say "issuing $LARGEST certificates for the nothing-due, start-up and idle measurements"
rm -rf "$WORK/tls"
write_config "$WORK/large.toml" "$WORK/state" "$LARGEST" true
timed issue "$RENEWD" run --once --config "$WORK/large.toml"
read -r wall cpu <<<"$issue"
row "(setup) renewd run --once issuing $LARGEST | $LARGEST | $wall | $cpu | $(awk -v w="$wall" -v n="$LARGEST" 'BEGIN{printf "%.1f ms", 1000*w/n}')"
for n in $(printf '%s\n' $ONCE_SIZES $START_SIZES $IDLE_SIZE | sort -un); do
    for ari in true false; do
        write_config "$WORK/large-$n-$ari.toml" "$WORK/state" "$n" "$ari"
    done
done

# --- 2. run --once with nothing due ---------------------------------------------------------
say "run --once with nothing due (median of 5)"
table "run --once, nothing due | N | wall s | CPU s"
for n in $ONCE_SIZES; do
    for ari in false true; do
        cfg="$WORK/large-$n-$ari.toml"
        "$RENEWD" run --once --config "$cfg" 2>/dev/null # warm the page cache and ARI records
        : >"$WORK/w" && : >"$WORK/c"
        for _ in 1 2 3 4 5; do
            timed t "$RENEWD" run --once --config "$cfg"
            grep -q "nothing due" "$WORK/last.err" || die "a pass over $n certificates found work to do"
            read -r wall cpu <<<"$t"
            echo "$wall" >>"$WORK/w" && echo "$cpu" >>"$WORK/c"
        done
        label=$([ "$ari" = true ] && echo "with ARI (a renewalInfo request each)" || echo "CA without ARI")
        row "run --once, $label | $n | $(median <"$WORK/w") | $(median <"$WORK/c")"
    done
done

# --- 3 and 4. Daemon start-up, memory, idle wake-ups ----------------------------------------
say "daemon start-up and memory (READY=1 on NOTIFY_SOCKET)"
table "Daemon start-up | N | READY=1 after s | RSS at READY | RSS settled (peak)"
for n in $START_SIZES; do
    json=$(PROBE_LOG="$WORK/daemon-$n.log" python3 scripts/lib/daemon_probe.py 1 0 -- \
        "$RENEWD" run --config "$WORK/large-$n-true.toml")
    echo "$json" >"$WORK/start-$n.json"
    row "$(python3 -c "
import json,sys
j=json.loads(sys.argv[1]); m=lambda k: f'{j[k]/1024:.1f} MiB'
print(f\"renewd run | {sys.argv[2]} | {j['ready_s']} | {m('rss_ready_kib')} | {m('rss_kib')} ({m('hwm_kib')})\")" "$json" "$n")"
done

say "idle wake-ups: $IDLE_SIZE certificates, watchdog every $((WATCHDOG_SEC / 2)) s, $IDLE_SECONDS s"
json=$(PROBE_LOG="$WORK/daemon-idle.log" python3 scripts/lib/daemon_probe.py "$IDLE_SECONDS" "$WATCHDOG_SEC" -- \
    "$RENEWD" run --config "$WORK/large-$IDLE_SIZE-true.toml")
echo "$json" >"$WORK/idle.json"
table "Daemon idle | N | window s | wake-ups (per hour) | watchdog pings (per hour) | CPU s"
row "$(python3 -c "
import json,sys
j=json.loads(sys.argv[1]); h=3600/j['idle_s']
print(f\"renewd run, WatchdogSec={sys.argv[2]}s | {sys.argv[3]} | {j['idle_s']} | {j['wakeups']} ({j['wakeups']*h:.0f}) | {j['watchdog_pings']} ({j['watchdog_pings']*h:.0f}) | {j['cpu_idle_s']}\")" \
    "$json" "$WATCHDOG_SEC" "$IDLE_SIZE")"

# --- 5. criterion ----------------------------------------------------------------------------
if [ -z "${BENCH_SKIP_CRITERION:-}" ]; then
say "criterion micro-benchmarks"
cargo bench --quiet --bench hot_paths 2>&1 | tee "$WORK/criterion.txt" >&2
table "Micro-benchmark (criterion) | median time"
awk '/^Benchmarking|^Found/ {next}
         /^[^ ]/ {name=$0; sub(/ +time:.*/, "", name); if ($0 !~ /time:/) next}
         /^ +change:/ {name=""; next}
         /time:/ && name != "" {match($0, /\[[^]]*\]/); split(substr($0, RSTART + 1, RLENGTH - 2), v, " ");
                                print name "|" v[3] " " v[4]; name=""}' \
    "$WORK/criterion.txt" | while IFS='|' read -r name med; do row "$name | $med"; done
fi

# --- The results file -------------------------------------------------------------------------
{
    echo "# renewd benchmarks, $STAMP"
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr), $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "Load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "renewd $(git -C "$ROOT" describe --always --dirty) ($(rustc --version)), release build; Pebble $(cat "$PEBBLE_BIN/../../.deb-version" 2>/dev/null || echo '(version unknown)') (Debian package; GOMAXPROCS=1, PEBBLE_AUTHZREUSE=0) with PEBBLE_VA_NOSLEEP=1, retryAfter 1 s; certbot $CERTBOT_VERSION ($(python3 --version))"
    echo
    cat "$ROWS"
} >"$RESULTS"
cp "$RESULTS" "$OUT/results-latest.md"
say "results in $RESULTS"
cat "$RESULTS"
