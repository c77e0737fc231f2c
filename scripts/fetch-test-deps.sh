#!/usr/bin/env bash
# Fetch what the integration tests need, idempotently, without changing the
# system's apt configuration:
#
#  * Debian unstable's `pebble` package (Let's Encrypt's test CA, 2.10 or
#    later: ARI, profiles, /set-renewal-info/), unpacked under
#    target/test-deps/pebble. Debian stable only has 2.4. The .deb is fetched
#    with a private apt state directory (target/test-deps/apt) holding an
#    unstable source list, so the system's sources, lists and package database
#    are untouched. The binaries are static and need nothing else.
#  * The Debian packages the tests start as real programs (SYSTEM_PACKAGES
#    below), installed with the system's apt-get only when missing.
#  * The ACME servers of the interop tests (tests/it/interop.rs): Debian
#    unstable's `caddy` (its `acme_server`), unpacked like Pebble under
#    target/test-deps/caddy, and acme2certifier from PyPI in a venv under
#    target/test-deps/acme2certifier (ACME2CERTIFIER_VERSION below). Nothing is
#    installed system-wide.
#  * certbot from PyPI in a venv under target/test-deps/certbot (CERTBOT_VERSION
#    below): tests/it/import_certbot.rs has it create the lineages renewd imports.
#
# Usage: bash scripts/fetch-test-deps.sh [PACKAGE...]
#   With PACKAGEs, those Debian packages are installed (when missing) instead of
#   SYSTEM_PACKAGES: scripts/demo.sh asks only for what it uses.
# Environment:
#   RENEWD_TEST_DEPS_DIR  where to put things (default: <repo>/target/test-deps)
#   DEBIAN_MIRROR         default: http://deb.debian.org/debian
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${RENEWD_TEST_DEPS_DIR:-$ROOT/target/test-deps}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
PEBBLE_MIN_VERSION=2.10 # ARI, profiles, /set-renewal-info/
ACME2CERTIFIER_VERSION=0.46.3 # tests/it/interop.rs; pinned so a release cannot change the matrix unseen
CERTBOT_VERSION=5.8.0 # tests/it/import_certbot.rs: the lineages `renewd import certbot` reads; the version scripts/bench.sh uses

# Debian packages the tests run, one per line: add a package here when a test
# starts a new real program (e.g. bind9, lintian, rpm).
SYSTEM_PACKAGES=(
    ca-certificates
    debian-archive-keyring # verifies the unstable Release file fetched below
    strace
    procps
    curl # the dns-01 hook script tests/it/common writes (Pebble::write_dns_hook)
    openssl # scripts/lib/pebble.sh: Pebble's own HTTPS certificate (demo, probes)
    bc # scripts/idle-probe.sh
    lintian # scripts/test-packages.sh: checks the .deb
    rpm # scripts/build-packages.sh: rpmbuild builds the .rpm; scripts/test-packages.sh: rpm -qlp on it
    debootstrap # scripts/test-packages.sh: the throwaway Debian root the .deb is installed into
    cpio # scripts/test-packages.sh: unpacks the .rpm's binary (rpm2cpio | cpio) to check it is stripped
    file # scripts/test-packages.sh: says whether that binary is stripped
    prometheus # scripts/test-packages.sh: promtool check/test rules on the packaged alerting rules
    systemd # tests/it/systemd_unit.rs: systemd-analyze verify and security --offline
    nginx # tests/it/verify_proof.rs (tests/it/common/nginx.rs): a real TLS service for the post-reload proof; its own service is kept off, see below
    bind9 # tests/it/common/bind.rs: a real named for RFC 2136 dns-01 (started by the tests on a free port)
    bind9-utils # tests/it/common/bind.rs: tsig-keygen for the TSIG key
    iproute2 # tests/it/common/netns.rs: `ip link set lo up` in the interop tests' private network namespaces
    python3-venv # tests/it/common/a2c.rs: the venv acme2certifier is installed into
    prometheus # tests/it/inventory.rs (metrics_are_served_with_the_spec_names): promtool check metrics on a real scrape (its server is kept off, see below)
    acl # tests/it/deploy_safety.rs: setfacl/getfacl on a deployed key (a renewal drops the ACL: warned)
    libfaketime # tests/it/daemon.rs: renewd run with its clock 20 minutes behind (LD_PRELOAD)
    systemd-container # scripts/test-systemd-boot.sh: systemd-nspawn boots the packaged renewd
    python3 # scripts/test-systemd-boot.sh: the HTTPS proxy the daemon is sent through
)
[ "$#" -eq 0 ] || SYSTEM_PACKAGES=("$@")

say() { printf 'fetch-test-deps: %s\n' "$*"; }
die() {
    printf 'fetch-test-deps: error: %s\n' "$*" >&2
    exit 1
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}

command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 ||
    die "apt-get and dpkg-deb are required (the test dependencies come from Debian's packages)"

# ---------------------------------------------------------------------------
# 1. System packages, only those that are missing.
missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
    [ "$status" = installed ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
    say "system packages already installed: ${SYSTEM_PACKAGES[*]}"
else
    say "installing missing system packages: ${missing[*]}"
    # Another apt or dpkg (an unattended upgrade, a parallel job) may hold the locks: wait
    # for them (10 minutes at most) instead of failing at once.
    as_root apt-get -o DPkg::Lock::Timeout=600 update -q ||
        die "apt-get update failed: cannot reach the Debian mirror? (needed to install ${missing[*]})"
    # Installing bind9 would start the system's named on port 53 (and other packages
    # their services): the tests start their own processes, so services are kept from
    # starting during the install with a policy-rc.d that refuses them, removed afterwards
    # unless one was already there.
    policy=/usr/sbin/policy-rc.d
    own_policy=
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# fetch-test-deps.sh: no service starts while test packages install\nexit 101\n' |
            as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        own_policy=1
    fi
    install_rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
        --no-install-recommends "${missing[@]}" ||
        install_rc=$?
    [ -z "$own_policy" ] || as_root rm -f "$policy"
    [ "$install_rc" -eq 0 ] || die "apt-get install ${missing[*]} failed"
    for pkg in "${missing[@]}"; do
        case "$pkg" in
            nginx) service=nginx ;;
            bind9) service=named ;;
            prometheus) service=prometheus ;; # the tests only run promtool
            *) continue ;;
        esac
        # The tests start nginx and named themselves (and need no Prometheus server), each on its own configuration and a
        # free loopback port. The distribution's service installed just now must not run (a
        # machine's policy-rc.d may have let it start) nor start at the next boot: disabled
        # with systemctl (which edits the unit links offline too when PID 1 is not systemd)
        # and update-rc.d. An existing installation is left alone.
        if [ -d /run/systemd/system ]; then
            as_root systemctl disable --now "$service.service" >/dev/null 2>&1 || true
        else
            if command -v systemctl >/dev/null 2>&1; then
                as_root systemctl disable "$service.service" >/dev/null 2>&1 || true
            fi
            if [ -x "/etc/init.d/$service" ]; then
                as_root "/etc/init.d/$service" stop >/dev/null 2>&1 || true
            fi
        fi
        as_root update-rc.d "$service" disable >/dev/null 2>&1 || true
        say "$pkg installed for the tests; its system service $service is stopped and disabled"
    done
fi

# ---------------------------------------------------------------------------
# 2. Pebble from Debian unstable.
PEBBLE_BIN="$DEPS/pebble/usr/bin"

# `pebble -version` of Debian's build prints "Pebble version: dev", so the
# package version is kept in a stamp file next to the unpacked tree; a real
# version number from -version wins when there is one.
pebble_ok() {
    local out ver
    [ -x "$PEBBLE_BIN/pebble" ] && [ -x "$PEBBLE_BIN/pebble-challtestsrv" ] || return 1
    out="$("$PEBBLE_BIN/pebble" -version 2>&1)" || return 1
    ver="$(printf '%s\n' "$out" | grep -oE '[0-9]+\.[0-9]+(\.[0-9]+)?' | head -n1 || true)"
    if [ -z "$ver" ] && [ -r "$DEPS/pebble/.deb-version" ]; then
        ver="$(cat "$DEPS/pebble/.deb-version")"
    fi
    [ -n "$ver" ] || return 1
    if dpkg --compare-versions "$ver" ge "$PEBBLE_MIN_VERSION"; then
        PEBBLE_VERSION="$ver"
        return 0
    fi
    return 1
}

[ -r "$KEYRING" ] || die "$KEYRING is missing: apt-get install debian-archive-keyring"

APT="$DEPS/apt"
mkdir -p "$APT/etc" "$APT/state/lists/partial" "$APT/cache/archives/partial" "$APT/debs"
printf 'deb [signed-by=%s] %s unstable main\n' "$KEYRING" "$MIRROR" >"$APT/etc/sources.list"
: >"$APT/state/status" # an empty package database: nothing is "installed"

apt_private() {
    apt-get -q \
        -o Dir::Etc::SourceList="$APT/etc/sources.list" \
        -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::Etc::Preferences=/dev/null \
        -o Dir::Etc::PreferencesParts=/dev/null \
        -o Dir::State="$APT/state" \
        -o Dir::State::Lists="$APT/state/lists" \
        -o Dir::State::status="$APT/state/status" \
        -o Dir::Cache="$APT/cache" \
        -o APT::Sandbox::User=root \
        -o Acquire::Languages=none \
        -o APT::Get::List-Cleanup=true \
        "$@"
}

# The private index of Debian unstable, updated once per run and only when a package
# must be fetched.
index_ready=
private_index() {
    [ -z "$index_ready" ] || return 0
    say "updating a private apt index of Debian unstable ($MIRROR) in $APT"
    update_log="$APT/update.log"
    if ! apt_private update >"$update_log" 2>&1 || grep -qE '^(E|W): (Failed to fetch|Some index files failed)' "$update_log"; then
        cat "$update_log" >&2
        die "could not fetch Debian unstable's package index from $MIRROR.
    The tests need Pebble 2.10+ and Caddy from Debian unstable (Debian stable's Pebble 2.4 lacks ARI and profiles).
    Check network access to the mirror, or set DEBIAN_MIRROR to a reachable Debian mirror."
    fi
    ls "$APT/state/lists/"*_Packages* >/dev/null 2>&1 ||
        { cat "$update_log" >&2; die "apt-get update produced no Packages index for unstable (see above)"; }
    index_ready=1
}

if pebble_ok; then
    say "pebble $PEBBLE_VERSION already unpacked in $PEBBLE_BIN (nothing to fetch)"
else
    start=$SECONDS
    private_index
    say "downloading pebble .deb"
    rm -f "$APT/debs/"pebble_*.deb
    (cd "$APT/debs" && apt_private download pebble) ||
        die "apt-get download pebble failed (is the mirror reachable? see above)"
    deb="$(ls "$APT/debs/"pebble_*.deb | head -n1)"

    say "unpacking $(basename "$deb") into $DEPS/pebble"
    rm -rf "$DEPS/pebble.tmp"
    dpkg-deb -x "$deb" "$DEPS/pebble.tmp"
    dpkg-deb -f "$deb" Version >"$DEPS/pebble.tmp/.deb-version"
    rm -rf "$DEPS/pebble"
    mv "$DEPS/pebble.tmp" "$DEPS/pebble"

    pebble_ok || die "unpacked $(basename "$deb") but $PEBBLE_BIN/pebble -version does not run, or the package is older than $PEBBLE_MIN_VERSION:
$("$PEBBLE_BIN/pebble" -version 2>&1 || true)"
    say "pebble $PEBBLE_VERSION ready in $PEBBLE_BIN ($((SECONDS - start)) s)"
fi

# ---------------------------------------------------------------------------
# 3. Caddy from Debian unstable (tests/it/interop.rs: its `acme_server`), unpacked like Pebble.
CADDY_BIN="$DEPS/caddy/usr/bin"
if [ -x "$CADDY_BIN/caddy" ] && "$CADDY_BIN/caddy" version >/dev/null 2>&1; then
    say "caddy $(cat "$DEPS/caddy/.deb-version" 2>/dev/null || echo '?') already unpacked in $CADDY_BIN (nothing to fetch)"
else
    start=$SECONDS
    private_index
    say "downloading caddy .deb"
    rm -f "$APT/debs/"caddy_*.deb
    (cd "$APT/debs" && apt_private download caddy) ||
        die "apt-get download caddy failed (is the mirror reachable? see above)"
    deb="$(ls "$APT/debs/"caddy_*.deb | head -n1)"
    rm -rf "$DEPS/caddy.tmp"
    dpkg-deb -x "$deb" "$DEPS/caddy.tmp"
    dpkg-deb -f "$deb" Version >"$DEPS/caddy.tmp/.deb-version"
    rm -rf "$DEPS/caddy"
    mv "$DEPS/caddy.tmp" "$DEPS/caddy"
    "$CADDY_BIN/caddy" version >/dev/null 2>&1 ||
        die "unpacked $(basename "$deb") but $CADDY_BIN/caddy version does not run"
    say "caddy $(cat "$DEPS/caddy/.deb-version") ready in $CADDY_BIN ($((SECONDS - start)) s)"
fi

# ---------------------------------------------------------------------------
# 4. acme2certifier from PyPI in a venv (tests/it/interop.rs), kept between runs.
A2C="$DEPS/acme2certifier"
a2c_installed() {
    [ -x "$A2C/bin/python" ] &&
        [ "$("$A2C/bin/python" -c 'import importlib.metadata as m; print(m.version("acme2certifier"))' 2>/dev/null)" = "$ACME2CERTIFIER_VERSION" ]
}
if a2c_installed; then
    say "acme2certifier $ACME2CERTIFIER_VERSION already installed in $A2C (nothing to fetch)"
else
    start=$SECONDS
    command -v python3 >/dev/null 2>&1 || die "python3 is required for acme2certifier"
    rm -rf "$A2C"
    python3 -m venv "$A2C" || die "python3 -m venv $A2C failed (is python3-venv installed?)"
    "$A2C/bin/pip" install -q --disable-pip-version-check "acme2certifier==$ACME2CERTIFIER_VERSION" ||
        die "pip install acme2certifier==$ACME2CERTIFIER_VERSION failed (is PyPI reachable?)"
    a2c_installed || die "acme2certifier $ACME2CERTIFIER_VERSION is not importable from $A2C"
    say "acme2certifier $ACME2CERTIFIER_VERSION ready in $A2C ($((SECONDS - start)) s)"
fi

# ---------------------------------------------------------------------------
# 5. certbot from PyPI in a venv (tests/it/import_certbot.rs: it creates the lineages
#    `renewd import certbot` reads), kept between runs.
CERTBOT_VENV="$DEPS/certbot"
certbot_installed() {
    [ -x "$CERTBOT_VENV/bin/certbot" ] &&
        [ "$("$CERTBOT_VENV/bin/certbot" --version 2>/dev/null)" = "certbot $CERTBOT_VERSION" ]
}
if certbot_installed; then
    say "certbot $CERTBOT_VERSION already installed in $CERTBOT_VENV (nothing to fetch)"
else
    start=$SECONDS
    command -v python3 >/dev/null 2>&1 || die "python3 is required for certbot"
    rm -rf "$CERTBOT_VENV"
    python3 -m venv "$CERTBOT_VENV" || die "python3 -m venv $CERTBOT_VENV failed (is python3-venv installed?)"
    "$CERTBOT_VENV/bin/pip" install -q --disable-pip-version-check "certbot==$CERTBOT_VERSION" ||
        die "pip install certbot==$CERTBOT_VERSION failed (is PyPI reachable?)"
    certbot_installed || die "certbot $CERTBOT_VERSION does not run from $CERTBOT_VENV"
    say "certbot $CERTBOT_VERSION ready in $CERTBOT_VENV ($((SECONDS - start)) s)"
fi
