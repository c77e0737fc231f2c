#!/usr/bin/env bash
# The test command: `bash scripts/test.sh [extra cargo test args]`.
#
# Checks the Rust toolchain, fetches the test dependencies (Pebble 2.10 and Caddy
# from Debian unstable, unpacked under target/; acme2certifier from PyPI in a venv
# under target/; Debian packages the tests run), then runs every test target
# against them, then the package tests (scripts/test-packages.sh,
# scripts/test-systemd-boot.sh). Works from any directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# The crate's rust-version (Cargo.toml), the one place the minimum is written.
MIN_RUST="$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")"
# rustup installs into ~/.cargo/bin, which a non-login shell may lack.
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

die() {
    printf 'test.sh: error: %s\n' "$*" >&2
    exit 1
}

install_hint="Install a current toolchain with rustup (https://rustup.rs):
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
Debian's own cargo/rustc packages are too old for this crate (it needs Rust $MIN_RUST or later)."

command -v cargo >/dev/null 2>&1 && command -v rustc >/dev/null 2>&1 ||
    die "cargo/rustc not found in PATH ($PATH).
$install_hint"

rust_version="$(rustc --version | awk '{print $2}')"
rust_version="${rust_version%%-*}" # 1.86.0-nightly -> 1.86.0
if ! printf '%s\n%s\n' "$MIN_RUST" "$rust_version" | sort -V -C; then
    die "rustc $rust_version is too old: renewd needs Rust $MIN_RUST or later ($(command -v rustc)).
$install_hint"
fi
echo "test.sh: using $(rustc --version) and $(cargo --version)"

# rust-version must be a Rust that builds the lock file: no locked dependency may need a newer
# one (cargo would refuse it on the stated minimum).
highest="$(cargo metadata --format-version 1 --locked 2>/dev/null | python3 -c '
import json, sys
m = json.load(sys.stdin)
best = max(((tuple(int(x) for x in p["rust_version"].split(".")), p["name"] + " " + p["version"])
            for p in m["packages"] if p.get("rust_version") and p.get("source")), default=((0,), "none"))
print(".".join(map(str, best[0])), best[1])')" || die "cargo metadata --locked failed: is Cargo.lock up to date?"
if ! printf '%s\n%s\n' "${highest%% *}" "$MIN_RUST" | sort -V -C; then
    die "Cargo.toml says rust-version = $MIN_RUST, but the lock file needs ${highest%% *} (${highest#* }): raise rust-version"
fi
echo "test.sh: rust-version $MIN_RUST covers the lock file (highest need: $highest)"

bash "$ROOT/scripts/fetch-test-deps.sh"

if [ -z "${RENEWD_PEBBLE_DIR:-}" ]; then
    export RENEWD_PEBBLE_DIR="${RENEWD_TEST_DEPS_DIR:-$ROOT/target/test-deps}/pebble/usr/bin"
fi
echo "test.sh: RENEWD_PEBBLE_DIR=$RENEWD_PEBBLE_DIR"
# The interop tests' servers (tests/it/common/caddy.rs, tests/it/common/a2c.rs), from the same place.
if [ -z "${RENEWD_CADDY_DIR:-}" ]; then
    export RENEWD_CADDY_DIR="${RENEWD_TEST_DEPS_DIR:-$ROOT/target/test-deps}/caddy/usr/bin"
fi
if [ -z "${RENEWD_A2C_DIR:-}" ]; then
    export RENEWD_A2C_DIR="${RENEWD_TEST_DEPS_DIR:-$ROOT/target/test-deps}/acme2certifier"
fi
# certbot, which makes the lineages tests/it/import_certbot.rs imports (tests/it/common/certbot.rs).
if [ -z "${RENEWD_CERTBOT_DIR:-}" ]; then
    export RENEWD_CERTBOT_DIR="${RENEWD_TEST_DEPS_DIR:-$ROOT/target/test-deps}/certbot/bin"
fi

cargo test --all-targets "$@"
# The packages: build .deb and .rpm, lintian, rpm -qlp, install into a throwaway Debian root.
bash "$ROOT/scripts/test-packages.sh"
# The .deb on a booted systemd (systemd-nspawn): the README's five-minute path, reload,
# journal fields, a proxy drop-in, and a broken configuration that must not restart-loop.
bash "$ROOT/scripts/test-systemd-boot.sh"
