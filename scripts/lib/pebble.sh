# Sourced by the demo and probe scripts: start a private Pebble and its DNS on free loopback
# ports, with certificates of a chosen lifetime. Not used by the Rust tests (tests/it/common
# does the same in Rust, per test).
#
#   start_pebble DIR VALIDITY_SECONDS
# sets ACME_PORT HTTP_PORT PEBBLE_CA (PEM renewd must trust).

# Everything started here (and whatever the caller appends to `pids`) is stopped on exit.
pids=()
stop_started() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap stop_started EXIT

PEBBLE_BIN="${PEBBLE_BIN:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/target/test-deps/pebble/usr/bin}"

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + RANDOM % 20000))
}

start_pebble() {
    local dir=$1 validity=$2 mgmt dns cts
    command -v openssl >/dev/null || { echo "needs openssl: apt-get install openssl" >&2; return 1; }
    mkdir -p "$dir"
    ACME_PORT=$(free_port); mgmt=$(free_port); HTTP_PORT=$(free_port); dns=$(free_port); cts=$(free_port)
    # Pebble's own HTTPS certificate, from a throwaway CA that renewd is told to trust.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=throwaway CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
        -keyout "$dir/key.pem" -out "$dir/csr.pem" 2>/dev/null
    openssl x509 -req -in "$dir/csr.pem" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -days 2 -out "$dir/cert.pem" \
        -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1') 2>/dev/null
    PEBBLE_CA="$dir/ca.pem"
    cat >"$dir/config.json" <<EOF
{"pebble": {
  "listenAddress": "127.0.0.1:$ACME_PORT", "managementListenAddress": "127.0.0.1:$mgmt",
  "certificate": "$dir/cert.pem", "privateKey": "$dir/key.pem",
  "httpPort": $HTTP_PORT, "tlsPort": $(free_port), "ocspResponderURL": "",
  "externalAccountBindingRequired": false, "retryAfter": {"authz": 1, "order": 1},
  "profiles": {
    "default": {"description": "local", "validityPeriod": $validity},
    "shortlived": {"description": "local", "validityPeriod": $validity}
  }
}}
EOF
    "$PEBBLE_BIN/pebble-challtestsrv" -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
        -dnsserver "127.0.0.1:$dns" -management "127.0.0.1:$cts" \
        -http01 "" -https01 "" -tlsalpn01 "" -doh "" >"$dir/challtestsrv.log" 2>&1 &
    pids+=($!)
    # PEBBLE_AUTHZREUSE=0: every order validates afresh, as a renewal weeks later does at a
    # real CA. GOMAXPROCS=1: Pebble 2.10's in-memory store has a lock-order inversion
    # (FindValidAuthorization holds the store's read lock and waits for an authorization's
    # lock, whose holder waits for the store's write lock in AddChallenge); with dozens of
    # concurrent new-orders it deadlocked in 2 of 4 runs of 100 orders, never in 6 with one P.
    GOMAXPROCS=1 PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 "$PEBBLE_BIN/pebble" -config "$dir/config.json" \
        -dnsserver "127.0.0.1:$dns" >"$dir/pebble.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        curl -fsS --cacert "$PEBBLE_CA" "https://127.0.0.1:$ACME_PORT/dir" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "pebble did not start; see $dir/pebble.log" >&2
    return 1
}

# The [ca.pebble] table for a renewd configuration pointing at the started Pebble.
pebble_ca_toml() {
    cat <<EOF
[ca.pebble]
directory = "https://127.0.0.1:$ACME_PORT/dir"
contact = ["mailto:ops@example.org"]
accept_terms = true
trust_roots = "$PEBBLE_CA"
EOF
}
