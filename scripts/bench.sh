#!/usr/bin/env bash
# renewd's benchmarks, against a private Pebble (PEBBLE_VA_NOSLEEP=1, retryAfter 1 s for
# authorizations and orders), with certbot (from PyPI) and lego (Debian unstable's package)
# on the same renewal workload.
#
#   bash scripts/bench.sh            # everything (about 45 minutes on 2 cores)
#   BENCH_QUICK=1 bash scripts/bench.sh   # small sizes only, to try the script (~6 minutes)
#
# Measures (release build, or the binary BENCH_RENEWD names):
#   1. renewal of N certificates all due at once (`renewd renew --all --force`, the same
#      workload as `certbot renew --force-renewal` and a loop of `lego renew` over the N),
#      N = 10, 100, 1000: wall time, CPU seconds (user + system) and peak resident memory of
#      the renewing processes; certbot and lego for N = 10 and 100 (1,000 takes certbot the
#      best part of an hour: BENCH_CERTBOT_SIZES="10 100 1000"), and their ratios to renewd;
#   2. settled memory of `renewd run` started right after the `run --once` that issued
#      BENCH_FIRST_SIZE certificates (first start) and started again (quiet restart), and
#      the state files each start wrote;
#   3. a `run --once` pass with nothing due, 1,000 and 10,000 managed certificates, from a
#      CA without ARI (`ari = false`, so nothing is asked) and with ARI (one renewalInfo
#      request per certificate); median of 5 runs;
#   4. `renewd run` under a fake systemd (scripts/lib/daemon_probe.py): time to READY=1 and
#      resident memory, with 10, 1,000 and 10,000 certificates, and the CPU and files opened
#      by a wake-up for one certificate (its fullchain rewritten with the same bytes);
#   5. wake-ups while idle with 1,000 certificates, watchdog on as in the packaged unit
#      (WatchdogSec=5min): context switches of all threads over BENCH_IDLE_SECONDS;
#   6. the criterion micro-benchmarks (`cargo bench --bench hot_paths`);
#   7. issue 18's targets, each with its figure from this run and met / not met.
# Switches: BENCH_RENEWD=PATH (a prebuilt renewd instead of `cargo build --release`),
# BENCH_SKIP_CRITERION=1, BENCH_LEGO_SIZES="" (no lego), and the sizes below.
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
source "$ROOT/scripts/lib/lego.sh"
BEGAN=$SECONDS
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

if [ -n "${BENCH_QUICK:-}" ]; then
    RENEW_SIZES=${BENCH_RENEW_SIZES:-"10 100"}
    CERTBOT_SIZES=${BENCH_CERTBOT_SIZES:-"10"}
    LEGO_SIZES=${BENCH_LEGO_SIZES-"10"}
    FIRST_SIZE=${BENCH_FIRST_SIZE:-100}
    ONCE_SIZES=${BENCH_ONCE_SIZES:-"100 1000"}
    START_SIZES=${BENCH_START_SIZES:-"10 1000"}
    IDLE_SIZE=${BENCH_IDLE_SIZE:-100}
    IDLE_SECONDS=${BENCH_IDLE_SECONDS:-30}
else
    RENEW_SIZES=${BENCH_RENEW_SIZES:-"10 100 1000"}
    CERTBOT_SIZES=${BENCH_CERTBOT_SIZES:-"10 100"}
    LEGO_SIZES=${BENCH_LEGO_SIZES-"10 100"}
    FIRST_SIZE=${BENCH_FIRST_SIZE:-1000}
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

say "test dependencies (Pebble) and renewd"
# scripts/fetch-test-deps.sh when Pebble is not there yet (it also installs the system
# packages the tests use; this script needs only those checked above).
[ -x "$PEBBLE_BIN/pebble" ] || bash scripts/fetch-test-deps.sh >/dev/null
if [ -n "${BENCH_RENEWD:-}" ]; then
    RENEWD=$(realpath "$BENCH_RENEWD")
    [ -x "$RENEWD" ] || die "BENCH_RENEWD=$BENCH_RENEWD is not an executable"
    RENEWD_ABOUT="$("$RENEWD" --version) at $RENEWD (BENCH_RENEWD, $(stat -c %s "$RENEWD") bytes)"
else
    cargo build --release --quiet
    RENEWD="$ROOT/target/release/renewd"
    RENEWD_ABOUT="renewd $(git -C "$ROOT" describe --always --dirty) ($(rustc --version)), release build ($(stat -c %s "$RENEWD") bytes)"
fi
command -v strace >/dev/null || echo "bench.sh: no strace: the wake-up rows will not count files opened (apt-get install strace)" >&2

say "certbot $CERTBOT_VERSION from PyPI"
VENV="$OUT/certbot-venv"
if ! "$VENV/bin/certbot" --version 2>/dev/null | grep -qx "certbot $CERTBOT_VERSION"; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet "certbot==$CERTBOT_VERSION"
fi
CERTBOT="$VENV/bin/certbot"

if [ -n "$LEGO_SIZES" ]; then
    say "lego from Debian unstable"
    fetch_lego "$OUT/lego" || die "could not fetch lego (BENCH_LEGO_SIZES=\"\" runs without it)"
    echo "lego $LEGO_VERSION: $LEGO" >&2
fi

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

# Wall seconds, CPU seconds (user + system of the command and its children) and the peak
# resident set of the largest of its processes (KiB), from scripts/lib/measure.py.
timed() { # timed OUTVAR cmd... : sets OUTVAR to "wall cpu peak_rss_kib"
    local __var=$1 __t
    shift
    __t=$(python3 "$ROOT/scripts/lib/measure.py" "$WORK/last.out" "$WORK/last.err" -- "$@") ||
        { tail -30 "$WORK/last.err" >&2; die "failed: $*"; }
    printf -v "$__var" '%s' "$__t"
}
mib() { awk -v k="$1" 'BEGIN{printf "%.1f MiB", k/1024}'; }
per_cert() { awk -v w="$1" -v n="$2" 'BEGIN{printf "%.1f ms", 1000*w/n}'; }
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
table "Renewal, all due at once | N | wall s | CPU s | peak RSS (largest process) | wall per certificate"
for n in $RENEW_SIZES; do
    rm -rf "$WORK/tls"
    cfg="$WORK/renew-$n.toml"
    write_config "$cfg" "$WORK/state-renew-$n" "$n" true
    timed issue "$RENEWD" run --once --config "$cfg"
    echo "issued $n certificates: $issue (wall s, CPU s, peak RSS KiB)" >&2
    find "$WORK/tls" -name '*.pem' -exec sha256sum {} + >"$WORK/before"
    timed t "$RENEWD" renew --all --force --config "$cfg"
    find "$WORK/tls" -name '*.pem' -exec sha256sum {} + >"$WORK/after"
    changed=$(changed_files "$WORK/before" "$WORK/after")
    [ "$changed" -eq "$n" ] || die "renewd renewed $changed of $n certificates"
    read -r wall cpu rss <<<"$t"
    row "renewd renew --all --force | $n | $wall | $cpu | $(mib "$rss") | $(per_cert "$wall" "$n")"
    echo "renewd $n $wall $cpu $rss" >>"$WORK/renew.txt"
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
    read -r wall cpu rss <<<"$t"
    row "certbot renew --force-renewal | $n | $wall | $cpu | $(mib "$rss") | $(per_cert "$wall" "$n")"
    echo "certbot $n $wall $cpu $rss" >>"$WORK/renew.txt"
    unset REQUESTS_CA_BUNDLE
done

# lego has no "renew every certificate" command: a cron script loops over them, one
# `lego renew` per certificate, and so does this (the loop's shell is in the figures).
[ -z "$LEGO_SIZES" ] || say "lego $LEGO_VERSION on the same workload (its own http-01 server, same Pebble)"
for n in $LEGO_SIZES; do
    ld="$WORK/lego-$n"
    mkdir -p "$ld"
    legocommon=(--server "https://127.0.0.1:$ACME_PORT/dir" --accept-tos --email ops@example.org
        --key-type ec256 --path "$ld/data")
    legoargs=("${legocommon[@]}" --http --http.port "127.0.0.1:$HTTP_PORT")
    export LEGO_CA_CERTIFICATES="$PEBBLE_CA"
    # Issuing (not timed) takes lego ~5 s a certificate, one at a time with its own http-01
    # server on the port; so after the first (which registers the account) 8 at a time,
    # each writing its challenge into a webroot one Python HTTP server serves on that port.
    start=$(date +%s.%N)
    mkdir -p "$ld/webroot"
    python3 -m http.server --bind 127.0.0.1 --directory "$ld/webroot" "$HTTP_PORT" >"$ld/http.log" 2>&1 &
    httpd=$!
    pids+=("$httpd")
    for _ in $(seq 100); do curl -so /dev/null "http://127.0.0.1:$HTTP_PORT/" && break; sleep 0.1; done
    issueargs=("${legocommon[@]}" --http --http.webroot "$ld/webroot")
    "$LEGO" "${issueargs[@]}" -d c1.test run >"$ld/run-c1.log" 2>&1 ||
        { tail -20 "$ld/run-c1.log" >&2; die "lego run c1 failed"; }
    seq 2 "$n" | xargs -P 8 -I{} sh -c '"$@" -d "c{}.test" run >"$0/run-c{}.log" 2>&1 ||
        { tail -20 "$0/run-c{}.log" >&2; exit 255; }' "$ld" "$LEGO" "${issueargs[@]}" ||
        die "lego run failed (logs in $ld)"
    kill "$httpd" && wait "$httpd" 2>/dev/null || true
    keep=()
    for p in "${pids[@]}"; do [ "$p" = "$httpd" ] || keep+=("$p"); done
    pids=("${keep[@]}")
    echo "lego issued $n certificates in $(echo "$(date +%s.%N) - $start" | bc) s" >&2
    {
        echo "set -e"
        for i in $(seq 1 "$n"); do
            # --days 9999: every certificate is due; --ari-disable: forced, as certbot's
            # --force-renewal and renewd's --force are (no renewalInfo asked first).
            printf '%q ' "$LEGO" "${legoargs[@]}" -d "c$i.test" renew --days 9999 --no-random-sleep --ari-disable
            echo
        done
    } >"$ld/renew-all.sh"
    find "$ld/data/certificates" -name 'c*.test.crt' -exec sha256sum {} + >"$WORK/before"
    timed t bash "$ld/renew-all.sh"
    cp "$WORK/last.err" "$ld/renew.log"
    find "$ld/data/certificates" -name 'c*.test.crt' -exec sha256sum {} + >"$WORK/after"
    changed=$(changed_files "$WORK/before" "$WORK/after")
    [ "$changed" -eq "$n" ] || die "lego renewed $changed of $n certificates"
    read -r wall cpu rss <<<"$t"
    row "lego renew, one per certificate | $n | $wall | $cpu | $(mib "$rss") | $(per_cert "$wall" "$n")"
    echo "lego $n $wall $cpu $rss" >>"$WORK/renew.txt"
    unset LEGO_CA_CERTIFICATES
done

# The other clients against renewd, where both ran the same N.
table "Ratio to renewd, same N | N | wall | CPU | peak RSS"
x() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1fx", a/b}'; }
while read -r tool n wall cpu rss; do
    [ "$tool" != renewd ] || continue
    read -r _ _ rwall rcpu rrss < <(grep "^renewd $n " "$WORK/renew.txt") || continue
    row "$tool / renewd | $n | $(x "$wall" "$rwall") | $(x "$cpu" "$rcpu") | $(x "$rss" "$rrss")"
done <"$WORK/renew.txt"

# --- 2. The first daemon start after a burst of work, and a quiet restart -------------------
say "first start after issuing $FIRST_SIZE certificates, and a quiet restart"
rm -rf "$WORK/tls"
cfg="$WORK/first.toml"
write_config "$cfg" "$WORK/state-first" "$FIRST_SIZE" true
timed issue "$RENEWD" run --once --config "$cfg"
echo "issued $FIRST_SIZE certificates: $issue (wall s, CPU s, peak RSS KiB)" >&2
python3 scripts/lib/state_files.py snapshot "$WORK/state-first" "$WORK/first-s0.json"
echo "$FIRST_SIZE" >"$WORK/first-size"
for start in first quiet; do
    PROBE_LOG="$WORK/daemon-$start.log" python3 scripts/lib/daemon_probe.py 1 0 -- \
        "$RENEWD" run --config "$cfg" >"$WORK/$start.json"
    python3 scripts/lib/state_files.py snapshot "$WORK/state-first" "$WORK/$start-s1.json"
    python3 scripts/lib/state_files.py diff "$WORK/$start-s0.json" "$WORK/$start-s1.json" >"$WORK/$start-written.json"
    cp "$WORK/$start-s1.json" "$WORK/quiet-s0.json" # the quiet restart starts from here
done
table "Daemon start after a burst | N | start | READY=1 after s | RSS settled (peak) | anon / file | state files written (content changed)"
for start in first quiet; do
    label=$([ "$start" = first ] && echo "first start, right after the issuing run --once" || echo "quiet restart")
    row "$(python3 -c "
import json,sys
j=json.load(open(sys.argv[1])); w=json.load(open(sys.argv[2])); m=lambda k: f'{j[k]/1024:.1f} MiB'
files=', '.join(w['files'][:3]) + (', ...' if w['written'] > 3 else '')
print(f\"renewd run | {sys.argv[3]} | {sys.argv[4]} | {j['ready_s']} | {m('rss_kib')} ({m('hwm_kib')}) | {m('rss_anon_kib')} / {m('rss_file_kib')} | {w['written']} ({w['content_changed']})\" + (f': {files}' if files else ''))" \
        "$WORK/$start.json" "$WORK/$start-written.json" "$FIRST_SIZE" "$label")"
done

# --- The large set: issued once, used by the nothing-due, start-up and idle figures --------
say "issuing $LARGEST certificates for the nothing-due, start-up and idle measurements"
rm -rf "$WORK/tls"
write_config "$WORK/large.toml" "$WORK/state" "$LARGEST" true
timed issue "$RENEWD" run --once --config "$WORK/large.toml"
read -r wall cpu rss <<<"$issue"
table "Set-up | N | wall s | CPU s | peak RSS | wall per certificate"
row "renewd run --once issuing $LARGEST | $LARGEST | $wall | $cpu | $(mib "$rss") | $(per_cert "$wall" "$LARGEST")"
for n in $(printf '%s\n' $ONCE_SIZES $START_SIZES $IDLE_SIZE | sort -un); do
    for ari in true false; do
        write_config "$WORK/large-$n-$ari.toml" "$WORK/state" "$n" "$ari"
    done
done

# --- 3. run --once with nothing due ---------------------------------------------------------
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
            read -r wall cpu _ <<<"$t"
            echo "$wall" >>"$WORK/w" && echo "$cpu" >>"$WORK/c"
        done
        label=$([ "$ari" = true ] && echo "with ARI (a renewalInfo request each)" || echo "CA without ARI")
        row "run --once, $label | $n | $(median <"$WORK/w") | $(median <"$WORK/c")"
        echo "$n $ari $(median <"$WORK/w") $(median <"$WORK/c")" >>"$WORK/once.txt"
    done
done

# --- 4 and 5. Daemon start-up, memory, a wake-up for one certificate, idle wake-ups ---------
say "daemon start-up and memory (READY=1 on NOTIFY_SOCKET), then a wake-up for one certificate"
table "Daemon start-up | N | READY=1 after s | RSS at READY | RSS settled (peak) | anon / file"
for n in $START_SIZES; do
    # c1's fullchain, rewritten with its own bytes once the daemon has settled.
    json=$(PROBE_LOG="$WORK/daemon-$n.log" python3 scripts/lib/daemon_probe.py 1 0 \
        --touch "$WORK/tls/d0/c1.pem" -- "$RENEWD" run --config "$WORK/large-$n-true.toml")
    echo "$json" >"$WORK/start-$n.json"
    row "$(python3 -c "
import json,sys
j=json.loads(sys.argv[1]); m=lambda k: f'{j[k]/1024:.1f} MiB'
print(f\"renewd run | {sys.argv[2]} | {j['ready_s']} | {m('rss_ready_kib')} | {m('rss_kib')} ({m('hwm_kib')}) | {m('rss_anon_kib')} / {m('rss_file_kib')}\")" "$json" "$n")"
done
table "Wake-up for one certificate (fullchain rewritten, same bytes) | N | CPU ms | context switches | files opened | stat calls | distinct paths opened"
for n in $START_SIZES; do
    row "$(python3 -c "
import json,sys
j=json.load(open(sys.argv[1])); g=lambda k: j.get(k, 'not counted')
print(f\"renewd run, c1 rewritten | {sys.argv[2]} | {j['wake_cpu_ms']} | {j['wake_switches']} | {g('wake_opens')} | {g('wake_stats')} | {g('wake_paths')}\")" "$WORK/start-$n.json" "$n")"
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

# --- 6. criterion ----------------------------------------------------------------------------
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

# --- 7. Issue 18's targets -------------------------------------------------------------------
say "targets"
python3 scripts/lib/bench_targets.py "$WORK" $START_SIZES | tee -a "$ROWS" >&2

# --- The results file -------------------------------------------------------------------------
{
    echo "# renewd benchmarks, $STAMP"
    echo
    echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr), $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "Load average before the run: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "$RENEWD_ABOUT; Pebble $(cat "$PEBBLE_BIN/../../.deb-version" 2>/dev/null || echo '(version unknown)') (Debian package; GOMAXPROCS=1, PEBBLE_AUTHZREUSE=0) with PEBBLE_VA_NOSLEEP=1, retryAfter 1 s; certbot $CERTBOT_VERSION ($(python3 --version))$([ -z "$LEGO_SIZES" ] || echo "; lego $LEGO_VERSION (Debian unstable)")"
    echo "Sizes: renewal $RENEW_SIZES, certbot ${CERTBOT_SIZES:-none}, lego ${LEGO_SIZES:-none}, first start $FIRST_SIZE, nothing-due $ONCE_SIZES, start-up $START_SIZES, idle $IDLE_SIZE for $IDLE_SECONDS s$([ -z "${BENCH_QUICK:-}" ] || echo ' (BENCH_QUICK)'); the run took $(((SECONDS - BEGAN + 30) / 60)) minutes"
    echo
    cat "$ROWS"
} >"$RESULTS"
cp "$RESULTS" "$OUT/results-latest.md"
say "results in $RESULTS"
cat "$RESULTS"
