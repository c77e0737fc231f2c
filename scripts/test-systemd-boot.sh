#!/usr/bin/env bash
# The packaged renewd on a real, booted systemd: `bash scripts/test-systemd-boot.sh [DEB]`.
# Needs root, systemd-nspawn (Debian's systemd-container), debootstrap, python3, openssl and
# the test Pebble (scripts/fetch-test-deps.sh installs and fetches them all). Without DEB,
# builds the package with scripts/build-packages.sh. Works from any directory.
#
#  1. A Debian 12 root with systemd, dbus and nginx (the minbase root of
#     scripts/test-packages.sh plus those packages, cached under target/pkgtest/; each run
#     boots an overlay of it) is booted with `systemd-nspawn -b` inside a private network
#     namespace this script makes, where it runs Pebble (http-01 validated on port 80,
#     pebble-challtestsrv resolving every name to 127.0.0.1) and an HTTPS proxy. Pebble's
#     HTTPS root is added to the container's system trust (update-ca-certificates).
#  2. `apt-get install ./renewd_*.deb` in the booted system (the Depends come from the Debian
#     mirror): postinst starts the unit, which runs with the shipped configuration.
#  3. README.md's "Your first certificate in five minutes", its TOML blocks taken from the
#     README itself (only the CA's directory URL is Pebble's): a webroot certificate served
#     through the container's nginx, `renewd check`, `renewd renew --dry-run`, `systemctl
#     start renewd`; then, nginx stopped, a second certificate with the README's `listen`
#     challenge, read by `systemctl reload renewd`. `journalctl CERT=www` finds the renewal.
#  4. HTTPS_PROXY in a drop-in: the daemon's ACME traffic goes through the proxy.
#  5. A broken conf.d file and a restart: the unit is failed (exit 78) and not restarted
#     (NRestarts=0 once a unit with the same RestartSec has restarted twice), `systemctl
#     status renewd` shows FILE:LINE:COL.
#
# The shipped unit is used unchanged (checked). Takes about 2-3 minutes once the root is cached.
# Environment:
#   DEBIAN_MIRROR         default: http://deb.debian.org/debian
#   RENEWD_PKGTEST_DIR    where the cached and throwaway roots live (default: <repo>/target/pkgtest)
#   RENEWD_PEBBLE_DIR     Pebble's binaries (default: <repo>/target/test-deps/pebble/usr/bin)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# shellcheck source=scripts/lib/debian-root.sh
source "$ROOT/scripts/lib/debian-root.sh"

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
WORK="${RENEWD_PKGTEST_DIR:-$ROOT/target/pkgtest}"
MINBASE="$WORK/bookworm-minbase" # pristine debootstrap, shared with test-packages.sh
BOOTBASE="$WORK/bookworm-boot"   # minbase + systemd, dbus, nginx: cached
MACHINE="$WORK/boot-root"        # this run's root: an overlay on BOOTBASE
UPPER="$WORK/boot-upper"         # what this run changed in it (kept for reading afterwards)
RUN="$WORK/boot-run"             # this run's Pebble, proxy and logs (host side)
PEBBLE_BIN="${RENEWD_PEBBLE_DIR:-$ROOT/target/test-deps/pebble/usr/bin}"
# Ports inside the private network namespace (nothing else listens there).
ACME_PORT=14000
MGMT_PORT=15000
DNS_PORT=8053
PROXY_PORT=3128

say() { printf 'test-systemd-boot: %s\n' "$*"; }
die() {
    printf 'test-systemd-boot: error: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, systemd-nspawn, network namespaces)"
for tool in systemd-nspawn debootstrap nsenter unshare ip python3 openssl chroot; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool not found: run 'bash scripts/fetch-test-deps.sh' (systemd-container, debootstrap, python3, ...)"
done
[ -x "$PEBBLE_BIN/pebble" ] && [ -x "$PEBBLE_BIN/pebble-challtestsrv" ] ||
    die "no Pebble in $PEBBLE_BIN: run 'bash scripts/fetch-test-deps.sh'"

mkdir -p "$WORK"
exec 9>"$WORK/boot.lock"
flock -n 9 || die "another test-systemd-boot.sh is running (lock $WORK/boot.lock)"

# ---------------------------------------------------------------------------
# Results.
# shellcheck source=scripts/lib/checks.sh
. "$ROOT/scripts/lib/checks.sh"

# ---------------------------------------------------------------------------
# Everything started is stopped on exit.
holder= nspawn= started=()
cleanup() {
    set +e
    if [ -n "$nspawn" ] && kill -0 "$nspawn" 2>/dev/null; then
        # SIGTERM asks nspawn to shut the container down cleanly; SIGKILL if it lingers.
        kill -TERM "$nspawn"
        for _ in $(seq 100); do kill -0 "$nspawn" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$nspawn" 2>/dev/null
        wait "$nspawn" 2>/dev/null
    fi
    for p in "${started[@]}"; do kill "$p" 2>/dev/null; done
    [ -z "$holder" ] || kill "$holder" 2>/dev/null
    wait 2>/dev/null
    if mountpoint -q "$MACHINE"; then umount "$MACHINE" || umount -l "$MACHINE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.2 s until it succeeds.
wait_for() {
    local limit=$1 what=$2
    local deadline=$((SECONDS + limit))
    shift 2
    until "$@"; do
        [ $SECONDS -lt $deadline ] || { say "timed out after $limit s waiting for: $what" >&2; return 1; }
        sleep 0.2
    done
}

# ---------------------------------------------------------------------------
# 1. The package.
start=$SECONDS
if [ $# -ge 1 ]; then
    deb="$1"
else
    build_out="$(bash "$ROOT/scripts/build-packages.sh")" || die "scripts/build-packages.sh failed"
    deb="$(printf '%s\n' "$build_out" | tail -n2 | head -n1)"
fi
case "$deb" in *.deb) [ -f "$deb" ] ;; *) false ;; esac || die "no .deb to test (got '$deb')"
t_build=$((SECONDS - start))

# ---------------------------------------------------------------------------
# 2. The bootable root: cached, copied afresh.
start=$SECONDS
ensure_minbase "$MINBASE" "$MIRROR" "$WORK/debootstrap.log" || die "no Debian root in $MINBASE"
if ! [ -f "$BOOTBASE/.complete" ]; then
    say "making the bootable root $BOOTBASE (minbase + systemd, dbus, nginx), once"
    rm -rf --one-file-system "$BOOTBASE.tmp"
    cp -a "$MINBASE" "$BOOTBASE.tmp"
    rm -f "$BOOTBASE.tmp/.complete"
    # Nothing starts in the chroot while packages install.
    printf '#!/bin/sh\nexit 101\n' >"$BOOTBASE.tmp/usr/sbin/policy-rc.d"
    chmod 755 "$BOOTBASE.tmp/usr/sbin/policy-rc.d"
    mount -t proc proc "$BOOTBASE.tmp/proc"
    rc=0
    chroot "$BOOTBASE.tmp" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive sh -c \
        'apt-get update -q && apt-get install -y -q --no-install-recommends systemd systemd-sysv dbus nginx' \
        >"$WORK/bootbase.log" 2>&1 || rc=$?
    umount "$BOOTBASE.tmp/proc" || umount -l "$BOOTBASE.tmp/proc"
    [ "$rc" -eq 0 ] || { tail -n 20 "$WORK/bootbase.log" >&2; die "could not install systemd and nginx into the root (log: $WORK/bootbase.log)"; }
    rm -f "$BOOTBASE.tmp/usr/sbin/policy-rc.d"
    # The container needs no console login, and the machine id is made at each boot.
    : >"$BOOTBASE.tmp/etc/machine-id"
    echo renewd-boot >"$BOOTBASE.tmp/etc/hostname"
    touch "$BOOTBASE.tmp/.complete"
    mv "$BOOTBASE.tmp" "$BOOTBASE"
fi
if mountpoint -q "$MACHINE"; then umount "$MACHINE" || umount -l "$MACHINE"; fi
rm -rf --one-file-system "$MACHINE" "$UPPER" "$WORK/boot-work" "$RUN"
mkdir -p "$MACHINE" "$UPPER" "$WORK/boot-work" "$RUN"
# An overlay, not a copy: the cached root stays pristine and a run starts in a moment.
mount -t overlay overlay -o "lowerdir=$BOOTBASE,upperdir=$UPPER,workdir=$WORK/boot-work" "$MACHINE" ||
    die "cannot mount an overlay of $BOOTBASE on $MACHINE"
cp "$deb" "$MACHINE/root/$(basename "$deb")"
t_root=$((SECONDS - start))

# ---------------------------------------------------------------------------
# 3. A private network namespace (held by a sleeping process) with Pebble, its DNS and a
# proxy; the container shares it, so its port 80 and the CA meet on 127.0.0.1/::1.
unshare --net sleep infinity &
holder=$!
own_netns() { [ "$(readlink "/proc/$holder/ns/net")" != "$(readlink /proc/self/ns/net)" ]; }
wait_for 5 "the network namespace" own_netns
innet() { nsenter --net="/proc/$holder/ns/net" -- "$@"; }
# innet_bg COMMAND... &: the same in the background, $! being the command's own pid.
innet_bg() { exec nsenter --net="/proc/$holder/ns/net" -- "$@"; }
innet ip link set lo up

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=renewd boot test CA" -keyout "$RUN/ca.key" -out "$RUN/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=localhost" \
    -keyout "$RUN/key.pem" -out "$RUN/csr.pem" 2>/dev/null
openssl x509 -req -in "$RUN/csr.pem" -CA "$RUN/ca.pem" -CAkey "$RUN/ca.key" -CAcreateserial \
    -days 2 -out "$RUN/cert.pem" -extfile <(printf 'subjectAltName=DNS:localhost,IP:127.0.0.1') 2>/dev/null
cat >"$RUN/pebble.json" <<EOF
{"pebble": {
  "listenAddress": "127.0.0.1:$ACME_PORT", "managementListenAddress": "127.0.0.1:$MGMT_PORT",
  "certificate": "$RUN/cert.pem", "privateKey": "$RUN/key.pem",
  "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "",
  "externalAccountBindingRequired": false, "retryAfter": {"authz": 1, "order": 1},
  "profiles": {
    "default": {"description": "90 days", "validityPeriod": 7776000},
    "shortlived": {"description": "90 days", "validityPeriod": 7776000}
  }
}}
EOF
innet_bg "$PEBBLE_BIN/pebble-challtestsrv" -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
    -dnsserver "127.0.0.1:$DNS_PORT" -management "127.0.0.1:8055" \
    -http01 "" -https01 "" -tlsalpn01 "" -doh "" >"$RUN/challtestsrv.log" 2>&1 &
started+=($!)
innet_bg env GOMAXPROCS=1 PEBBLE_VA_NOSLEEP=1 PEBBLE_AUTHZREUSE=0 "$PEBBLE_BIN/pebble" \
    -config "$RUN/pebble.json" -dnsserver "127.0.0.1:$DNS_PORT" >"$RUN/pebble.log" 2>&1 &
started+=($!)

# The proxy: HTTP CONNECT only, one line per tunnel in its log.
cat >"$RUN/proxy.py" <<'EOF'
import socket, sys, threading
log = open(sys.argv[2], "a", buffering=1)
def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
def serve(client):
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        chunk = client.recv(4096)
        if not chunk:
            return client.close()
        head += chunk
    method, target = head.split(b" ")[:2]
    if method != b"CONNECT":
        client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        return client.close()
    host, port = target.decode().rsplit(":", 1)
    log.write("CONNECT %s\n" % target.decode())
    upstream = socket.create_connection((host.strip("[]"), int(port)))
    client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    pipe(upstream, client)
server = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
EOF
: >"$RUN/proxy.log"
innet_bg python3 "$RUN/proxy.py" "$PROXY_PORT" "$RUN/proxy.log" >"$RUN/proxy.err" 2>&1 &
started+=($!)
pebble_up() { innet curl -fsS --cacert "$RUN/ca.pem" "https://127.0.0.1:$ACME_PORT/dir" >/dev/null 2>&1; }
wait_for 30 "Pebble's directory" pebble_up || die "Pebble did not start (log: $RUN/pebble.log)"

# ---------------------------------------------------------------------------
# 4. Boot.
start=$SECONDS
innet_bg systemd-nspawn --quiet --boot --register=no --keep-unit --console=passive \
    --directory="$MACHINE" --machine=renewd-boot >"$RUN/nspawn.log" 2>&1 &
nspawn=$!
# The container's PID 1 (systemd): the descendant of nspawn that is PID 1 in its namespace.
container_init() {
    local p
    for p in $(pgrep -f -- 'systemd' 2>/dev/null); do
        [ "$(awk '/^NSpid:/ {print $NF}' "/proc/$p/status" 2>/dev/null)" = 1 ] || continue
        local q=$p
        while [ "$q" -gt 1 ]; do
            q="$(awk '/^PPid:/ {print $2}' "/proc/$q/status" 2>/dev/null)" || break
            [ -n "$q" ] || break
            if [ "$q" = "$nspawn" ]; then
                echo "$p"
                return 0
            fi
        done
    done
    return 1
}
found_init() { kill -0 "$nspawn" 2>/dev/null && cpid="$(container_init)"; }
cpid=
wait_for 30 "the container's systemd" found_init || { cat "$RUN/nspawn.log" >&2; die "the container did not boot (log: $RUN/nspawn.log)"; }
# Commands in the container: every namespace of its PID 1, a clean environment.
in_box() {
    nsenter -t "$cpid" -m -u -i -n -p -r -w /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        LC_ALL=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}
# The same, but on this machine's network (for apt and the Debian mirror).
in_box_hostnet() {
    nsenter -t "$cpid" -m -u -i -p -r -w /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}
booted() {
    local s
    s="$(in_box systemctl is-system-running 2>/dev/null)" || true
    [ "$s" = running ] || [ "$s" = degraded ]
}
wait_for 90 "the container's boot to finish" booted || {
    in_box systemctl --failed --no-pager >&2 || true
    die "the container's systemd did not finish booting"
}
t_boot=$((SECONDS - start))
say "container booted in $t_boot s (PID 1 is $cpid on this machine)"
in_box systemctl --failed --no-legend --no-pager | sed 's/^/    failed at boot: /' || true

# ---------------------------------------------------------------------------
# 5. Install the package as a user would: apt resolves its Depends from the mirror.
start=$SECONDS
inst_log="$RUN/apt-install.log"
install_deb() { in_box_hostnet apt-get install -y -q "/root/$(basename "$deb")" >>"$inst_log" 2>&1; }
if ! install_deb; then
    # The cached package lists may be older than the mirror's files.
    in_box_hostnet apt-get update -q >>"$inst_log" 2>&1 || true
    install_deb || true
fi
pkg_installed() { [ "$(in_box dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | tr -d ' ')" = ii ]; }
check "apt-get install ./$(basename "$deb") in the booted system" pkg_installed renewd
for dep in procps ca-certificates; do
    check "the package's Depends brought $dep" pkg_installed "$dep"
done
t_install=$((SECONDS - start))
check "the shipped unit is installed unchanged" cmp -s "$ROOT/systemd/renewd.service" "$MACHINE/usr/lib/systemd/system/renewd.service"
no_dropins() { ! compgen -G "$MACHINE/etc/systemd/system/renewd.service.d/*" >/dev/null; }
check "no drop-in changes the unit" no_dropins
unit_is() { [ "$(in_box systemctl show -P "$2" renewd)" = "$1" ]; }
check "postinst started renewd.service (shipped configuration)" wait_for 30 "renewd active" unit_is active ActiveState

# Pebble's HTTPS root joins the container's system trust, as a private CA's would.
mkdir -p "$MACHINE/usr/local/share/ca-certificates"
cp "$RUN/ca.pem" "$MACHINE/usr/local/share/ca-certificates/renewd-boot-test.crt"
in_box update-ca-certificates >/dev/null 2>&1 || fail "update-ca-certificates"

# ---------------------------------------------------------------------------
# 6. README.md, "Your first certificate in five minutes", as written.
readme_section="$(awk '/^## Your first certificate in five minutes/ {on=1; next} /^## / {on=0} on' README.md)"
# toml_block N: the Nth ```toml block of the section, unindented.
toml_block() {
    printf '%s\n' "$readme_section" | awk -v want="$1" '
        /^ *```toml/ {n++; if (n == want) {on=1; match($0, /^ */); ind=RLENGTH}; next}
        /^ *```/ {on=0; next}
        on {print substr($0, ind + 1)}'
}
ca_toml="$(toml_block 1)"
www_toml="$(toml_block 2)"
listen_line="$(printf '%s\n' "$readme_section" | grep -o 'challenge = { type = "http-01", listen = "[^"]*" }' | head -n1)"
[ -n "$ca_toml" ] && [ -n "$www_toml" ] && [ -n "$listen_line" ] ||
    die "README.md's five-minute section no longer has the two TOML blocks and the listen line this test follows"
ca_toml="$(printf '%s\n' "$ca_toml" | sed "s|^directory = .*|directory = \"https://127.0.0.1:$ACME_PORT/dir\"|")"

# Step 1: the CA, appended to the shipped example.
printf '\n%s\n' "$ca_toml" >>"$MACHINE/etc/renewd/renewd.toml"
# Step 2: the certificate; nginx serves /var/www/html on port 80 (its default site).
check "nginx is running in the container" wait_for 30 "nginx active" in_box systemctl is-active --quiet nginx
printf '%s\n' "$www_toml" >"$MACHINE/etc/renewd/conf.d/www.toml"
# Step 3.
check "README step 3: mkdir -p /etc/nginx/tls && renewd check" in_box sh -c 'mkdir -p /etc/nginx/tls && renewd check' 
# Step 4: the daemon the package started has not read www.toml; the dry run goes in-process.
check "README step 4: systemctl stop renewd && renewd renew --dry-run www" \
    in_box sh -c 'systemctl stop renewd && renewd renew --dry-run www'
check "dry run deployed nothing" test ! -e "$MACHINE/etc/nginx/tls/www.pem"
# Step 5.
nginx_reloads() { { in_box journalctl -q -o cat -u nginx.service --grep '^Reloaded' || true; } | wc -l; }
reloads_before="$(nginx_reloads)"
check "README step 5: systemctl start renewd" in_box systemctl start renewd
deployed() { [ -s "$MACHINE$1" ] && [ -s "$MACHINE$2" ]; }
check "the daemon issued www and wrote both files" wait_for 60 "www.pem and www.key" \
    deployed /etc/nginx/tls/www.pem /etc/nginx/tls/www.key
covers_www() {
    openssl x509 -in "$MACHINE/etc/nginx/tls/www.pem" -noout -ext subjectAltName 2>/dev/null |
        grep -q 'DNS:example.org, DNS:www.example.org'
}
check "www.pem covers example.org and www.example.org" covers_www
key_matches() {
    deployed /etc/nginx/tls/www.pem /etc/nginx/tls/www.key && [ "$(openssl pkey -in "$MACHINE/etc/nginx/tls/www.key" -pubout 2>/dev/null | sha256sum)" = \
        "$(openssl x509 -in "$MACHINE/etc/nginx/tls/www.pem" -noout -pubkey 2>/dev/null | sha256sum)" ]
}
check "www.key matches www.pem" key_matches
nginx_reloaded() { [ "$(nginx_reloads)" -gt "$reloads_before" ]; }
check "renewd reloaded nginx (systemctl reload nginx)" wait_for 30 "nginx's reload" nginx_reloaded
status_shows() {
    local out
    out="$(in_box renewd status "$1")" || return 1
    printf '%s\n' "$out" >>"$RUN/status.txt"
    grep -qx "$1" <<<"$out" && grep -qE '^  not after: +[0-9]{4}-[0-9]{2}-[0-9]{2}T' <<<"$out" && grep -q '^  next: ' <<<"$out"
}
check "renewd status shows www deployed, with its next renewal" status_shows www
journal_cert() { [ -n "$(in_box journalctl -q -o cat -u renewd.service "CERT=$1")" ]; }
check "journalctl CERT=www finds the renewal" journal_cert www

# The listen variant: nothing on port 80, renewd answers the CA itself.
in_box systemctl stop nginx
mainpid="$(in_box systemctl show -P MainPID renewd)"
printf '%s\n' "$www_toml" | sed \
    -e 's/^name = .*/name = "api"/' \
    -e 's/^domains = .*/domains = ["api.example.org"]/' \
    -e 's|/etc/nginx/tls/www\.|/etc/nginx/tls/api.|g' \
    -e "s|^challenge = .*|$listen_line|" \
    -e '/^reload = /d' >"$MACHINE/etc/renewd/conf.d/api.toml"
check "renewd check accepts the listen certificate" in_box renewd check
check "systemctl reload renewd (listen certificate added)" in_box systemctl reload renewd
check "the reload kept the daemon (same MainPID, no restart)" unit_is "$mainpid" MainPID
check "the daemon issued api through its own port-80 listener" wait_for 60 "api.pem and api.key" \
    deployed /etc/nginx/tls/api.pem /etc/nginx/tls/api.key
check "journalctl CERT=api finds the renewal" journal_cert api

# ---------------------------------------------------------------------------
# 7. HTTPS_PROXY from a drop-in routes the ACME traffic through the proxy.
mkdir -p "$MACHINE/etc/systemd/system/renewd.service.d"
printf '[Service]\nEnvironment=HTTPS_PROXY=http://127.0.0.1:%s\n' "$PROXY_PORT" \
    >"$MACHINE/etc/systemd/system/renewd.service.d/proxy.conf"
in_box systemctl daemon-reload
check "restart with the HTTPS_PROXY drop-in" in_box systemctl restart renewd
check "renewd renew --force api (through the daemon)" in_box renewd renew --force api
proxied() { grep -q "^CONNECT 127.0.0.1:$ACME_PORT\$" "$RUN/proxy.log"; }
check "the ACME traffic went through HTTPS_PROXY" wait_for 10 "a CONNECT in the proxy's log" proxied
rm -r "$MACHINE/etc/systemd/system/renewd.service.d"
in_box systemctl daemon-reload

# ---------------------------------------------------------------------------
# 8. A broken configuration: failed, not restarted, and saying where.
# One mistake: a misspelt key (`ownr`) in an otherwise complete certificate.
broken="$MACHINE/etc/renewd/conf.d/zz-broken.toml"
printf '%s\n' "$www_toml" | sed -e 's/^name = .*/name = "broken"/' -e 's/^owner = /ownr = /' \
    -e 's|/etc/nginx/tls/www\.|/etc/nginx/tls/broken.|g' >"$broken"
line="$(grep -n '^ownr = ' "$broken" | cut -d: -f1)"
[ -n "$line" ] || die "README's certificate block has no owner line to misspell"
where="/etc/renewd/conf.d/zz-broken.toml:$line:1"
in_box systemctl restart renewd >/dev/null 2>&1 || true
check "broken conf.d: the unit is failed" wait_for 30 "renewd failed" unit_is failed ActiveState
check "broken conf.d: the main process exited 78" unit_is 78 ExecMainStatus
# The absence of a restart, shown against systemd's own timer: a unit with the same
# Restart=on-failure and RestartSec=, failing just after renewd, restarts twice.
restart_sec="$(in_box systemctl show -P RestartUSec renewd)"
cat >"$MACHINE/etc/systemd/system/restart-probe.service" <<EOF
[Service]
ExecStart=/bin/false
Restart=on-failure
RestartSec=$restart_sec
StartLimitIntervalSec=0
EOF
in_box systemctl daemon-reload
in_box systemctl start restart-probe.service >/dev/null 2>&1 || true
probe_restarted_twice() { [ "$(in_box systemctl show -P NRestarts restart-probe)" -ge 2 ]; }
check "the probe unit restarted twice (RestartSec=$restart_sec)" wait_for 150 "the probe's restarts" probe_restarted_twice
check "broken conf.d: NRestarts=0 after that" unit_is 0 NRestarts
check "broken conf.d: the unit is still failed" unit_is failed ActiveState
in_box systemctl stop restart-probe.service >/dev/null 2>&1 || true
status_text="$(in_box systemctl status --no-pager --lines=20 renewd 2>&1 || true)"
printf '%s\n' "$status_text" >"$RUN/status-broken.txt"
check "systemctl status renewd shows $where" grep -qF "$where" <<<"$status_text"
check "systemctl status renewd shows the STATUS= line" grep -qE "^ *Status: \".*$where" <<<"$status_text"
journal_has_where() { in_box journalctl -q -o cat -u renewd.service | grep -qF "$where"; }
check "the journal has $where" journal_has_where
rm "$broken"
in_box systemctl reset-failed renewd
check "fixed configuration: systemctl start renewd" in_box systemctl start renewd

# ---------------------------------------------------------------------------
printf '\ntest-systemd-boot: summary\n'
printf '  %s\n' "${results[@]}"
printf '  timings: build %s s, root %s s (debootstrap %s), boot %s s, install %s s, total %s s\n' \
    "$t_build" "$t_root" "${T_DEBOOTSTRAP:-?}" "$t_boot" "$t_install" "$SECONDS"
printf '  logs: %s, the container'"'"'s files (journal included): %s\n' "$RUN" "$UPPER"
if [ "$failures" -eq 0 ]; then
    printf 'test-systemd-boot: all %d checks passed\n' "${#results[@]}"
else
    printf 'test-systemd-boot: %d of %d checks FAILED\n' "$failures" "${#results[@]}" >&2
    exit 1
fi
