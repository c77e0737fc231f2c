#!/usr/bin/env bash
# renewd in two minutes, on this machine only: starts a private Pebble (Let's Encrypt's
# test CA) that issues 30-second certificates, lets renewd issue one, shows the deployed
# files, then runs the daemon and watches it renew, swap and reload on its own.
#
# Usage: bash scripts/demo.sh            (needs a Rust toolchain; fetches Pebble itself)
# Nothing outside target/demo is touched; everything started is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEMO="$ROOT/target/demo"
PEBBLE_BIN="$ROOT/target/test-deps/pebble/usr/bin"
WATCH_SECONDS="${DEMO_SECONDS:-45}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}

step "Fetching Pebble 2.10 (Debian unstable, unpacked under target/) and building renewd"
bash scripts/fetch-test-deps.sh >/dev/null
command -v openssl >/dev/null || { echo "demo needs openssl: apt-get install openssl" >&2; exit 1; }
cargo build --quiet
RENEWD="$ROOT/target/debug/renewd"

rm -rf "$DEMO"
mkdir -p "$DEMO/tls" "$DEMO/pebble"
ACME_PORT=$(free_port); MGMT_PORT=$(free_port); HTTP_PORT=$(free_port)
DNS_PORT=$(free_port); CTS_PORT=$(free_port)

step "Starting Pebble on 127.0.0.1:$ACME_PORT (30-second certificates) and its DNS"
# Pebble's own HTTPS certificate, from a throwaway CA that renewd is told to trust.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=demo CA" -keyout "$DEMO/pebble/ca.key" -out "$DEMO/pebble/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$DEMO/pebble/key.pem" -out "$DEMO/pebble/csr.pem" 2>/dev/null
openssl x509 -req -in "$DEMO/pebble/csr.pem" -CA "$DEMO/pebble/ca.pem" -CAkey "$DEMO/pebble/ca.key" \
    -CAcreateserial -days 2 -out "$DEMO/pebble/cert.pem" \
    -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1') 2>/dev/null
cat >"$DEMO/pebble/config.json" <<EOF
{"pebble": {
  "listenAddress": "127.0.0.1:$ACME_PORT", "managementListenAddress": "127.0.0.1:$MGMT_PORT",
  "certificate": "$DEMO/pebble/cert.pem", "privateKey": "$DEMO/pebble/key.pem",
  "httpPort": $HTTP_PORT, "tlsPort": 5001, "ocspResponderURL": "",
  "externalAccountBindingRequired": false, "retryAfter": {"authz": 1, "order": 1},
  "profiles": {
    "default": {"description": "demo", "validityPeriod": 30},
    "shortlived": {"description": "demo", "validityPeriod": 30}
  }
}}
EOF
"$PEBBLE_BIN/pebble-challtestsrv" -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
    -dnsserver "127.0.0.1:$DNS_PORT" -management "127.0.0.1:$CTS_PORT" \
    -http01 "" -https01 "" -tlsalpn01 "" -doh "" >"$DEMO/pebble/challtestsrv.log" 2>&1 &
pids+=($!)
PEBBLE_VA_NOSLEEP=1 "$PEBBLE_BIN/pebble" -config "$DEMO/pebble/config.json" \
    -dnsserver "127.0.0.1:$DNS_PORT" >"$DEMO/pebble/pebble.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -fsS --cacert "$DEMO/pebble/ca.pem" "https://127.0.0.1:$ACME_PORT/dir" >/dev/null 2>&1 && break
    sleep 0.1
done

step "renewd configuration ($DEMO/renewd.toml)"
cat >"$DEMO/reload.sh" <<EOF
#!/bin/sh
# Stands in for 'systemctl reload nginx': renewd runs it once per batch, with no shell.
echo "\$(date +%T) reload: \$RENEWD_NAME now serves serial \$RENEWD_SERIAL" >> "$DEMO/reload.log"
EOF
chmod 755 "$DEMO/reload.sh"
cat >"$DEMO/renewd.toml" <<EOF
state_dir = "$DEMO/state"
control_socket = "$DEMO/control.sock"

[ca.pebble]
directory = "https://127.0.0.1:$ACME_PORT/dir"
contact = ["mailto:ops@example.org"]
accept_terms = true
trust_roots = "$DEMO/pebble/ca.pem"

[[certificate]]
name = "www"
domains = ["www.demo.test", "demo.test"]
owner = "ops@example.org"
service = "demo"
renew_before = "20s"            # the certificate lives 30 s: renew every ~10 s
challenge = { type = "http-01", listen = "127.0.0.1:$HTTP_PORT" }
files = { fullchain = "$DEMO/tls/www.pem", key = "$DEMO/tls/www.key", combined = "$DEMO/tls/www.combined" }
reload = [["$DEMO/reload.sh"]]
EOF
cat "$DEMO/renewd.toml"
"$RENEWD" check --config "$DEMO/renewd.toml"

step "renewd run --once: issue what is missing"
"$RENEWD" run --once --config "$DEMO/renewd.toml" 2>&1 | sed 's/^/  /'
ls -l "$DEMO/tls"
openssl x509 -in "$DEMO/tls/www.pem" -noout -subject -serial -enddate -ext subjectAltName
cat "$DEMO/reload.log"

step "renewd run: the daemon renews, swaps and reloads on its own (watching ${WATCH_SECONDS}s)"
"$RENEWD" run --config "$DEMO/renewd.toml" >"$DEMO/daemon.log" 2>&1 &
daemon=$!
pids+=($daemon)
sleep 3
"$RENEWD" status --config "$DEMO/renewd.toml" | sed 's/^/  /'
end=$((SECONDS + WATCH_SECONDS)); shown=1
while [ $SECONDS -lt $end ]; do
    n=$(wc -l <"$DEMO/reload.log")
    if [ "$n" -gt "$shown" ]; then sed -n "$((shown + 1)),${n}p" "$DEMO/reload.log"; shown=$n; fi
    sleep 1
done

step "Deleting the deployed certificate: renewd notices and re-issues at once"
before=$(wc -l <"$DEMO/reload.log")
rm "$DEMO/tls/www.pem"
for _ in $(seq 100); do [ "$(wc -l <"$DEMO/reload.log")" -gt "$before" ] && break; sleep 0.1; done
tail -n 1 "$DEMO/reload.log"
openssl x509 -in "$DEMO/tls/www.pem" -noout -serial

step "Key and certificate still match"
a=$(openssl pkey -in "$DEMO/tls/www.key" -pubout | sha256sum)
b=$(openssl x509 -in "$DEMO/tls/www.pem" -noout -pubkey | sha256sum)
[ "$a" = "$b" ] && echo "  yes: $(echo "$a" | cut -c1-16)…"
kill -TERM "$daemon"; wait "$daemon" 2>/dev/null || true
echo
echo "Daemon log: $DEMO/daemon.log   Pebble log: $DEMO/pebble/pebble.log"
