#!/usr/bin/env bash
# renewd in two minutes, on this machine only: starts a private Pebble (Let's Encrypt's
# test CA) that issues 30-second certificates, lets renewd issue one, shows the deployed
# files, then runs the daemon and watches it renew, swap and reload on its own.
#
# Usage: bash scripts/demo.sh            (needs a Rust toolchain; fetches Pebble itself)
# Outside target/ it changes one thing, only when missing: it installs the Debian packages it
# uses (openssl, curl, and debian-archive-keyring to check Pebble's download) with apt-get.
# Pebble is unpacked under target/test-deps; the demo works in target/demo. No service is
# installed or enabled; everything started is stopped on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DEMO="$ROOT/target/demo"
WATCH_SECONDS="${DEMO_SECONDS:-45}"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }


source "$ROOT/scripts/lib/pebble.sh"

step "Fetching Pebble 2.10 (Debian unstable, unpacked under target/) and building renewd"
bash scripts/fetch-test-deps.sh debian-archive-keyring openssl curl >/dev/null
cargo build --quiet
RENEWD="$ROOT/target/debug/renewd"

rm -rf "$DEMO"
mkdir -p "$DEMO/tls"

step "Starting Pebble (30-second certificates) and its DNS, on free loopback ports"
start_pebble "$DEMO/pebble" 30

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

$(pebble_ca_toml)

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
