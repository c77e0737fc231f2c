#!/usr/bin/env bash
# Regenerate packaging/THIRD-PARTY-NOTICES, the licence texts of every crate
# statically linked into renewd, which the .deb and .rpm ship:
#     bash scripts/notices.sh
# Run it after any change to Cargo.lock; scripts/test-packages.sh fails while
# the file lacks a crate of the dependency tree.
#
# Uses cargo-about (installed with `cargo install --locked` when missing, a few
# minutes once), with packaging/about.toml (the accepted licences) and
# packaging/about.hbs (the layout). A crate whose licence is not accepted makes
# it fail: look at the licence before shipping the crate.
# Environment: CARGO_ABOUT_VERSION pins the cargo-about installed when missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
if ! cargo about --version >/dev/null 2>&1; then
    echo "notices: installing cargo-about from crates.io (cargo install --locked)" >&2
    cargo install --locked --features cli --version "${CARGO_ABOUT_VERSION:-0.9.3}" cargo-about >&2
fi
cargo about generate --locked --config packaging/about.toml \
    --output-file packaging/THIRD-PARTY-NOTICES packaging/about.hbs
echo "notices: wrote packaging/THIRD-PARTY-NOTICES ($(grep -c '^  [a-z0-9_-]* [0-9]' packaging/THIRD-PARTY-NOTICES) crate uses)" >&2
