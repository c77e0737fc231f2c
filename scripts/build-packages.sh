#!/usr/bin/env bash
# Build renewd's .deb and .rpm: `bash scripts/build-packages.sh`. Works from any
# directory and from a clean clone.
#
#  1. Installs cargo-deb from crates.io with `cargo install --locked` when it is
#     missing (a few minutes of compiling, once). rpmbuild comes from Debian's
#     `rpm` package (scripts/fetch-test-deps.sh installs it).
#  2. `cargo build --release` (stripped: profile.release strip = true).
#  3. Generates into target/assets/, by running the built binary, the man pages
#     (renewd.8 and one renewd-SUBCOMMAND.8 per subcommand, gzipped) and the
#     bash, zsh and fish completions; adds renewd.toml(5) from packaging/man/
#     and the third-party licence notices from packaging/THIRD-PARTY-NOTICES.
#  4. `cargo deb --no-build` into target/debian/, then adds to it what
#     cargo-deb cannot make: the empty /etc/renewd/conf.d/ and DEBIAN/md5sums
#     (dpkg-deb rebuilds the archive, as debhelper would have built it).
#  5. `rpmbuild -bb packaging/rpm/renewd.spec` into target/rpm/.
#
# Package metadata: [package.metadata.deb] in Cargo.toml and
# packaging/rpm/renewd.spec; maintainer scripts, changelog, copyright and
# lintian overrides in packaging/debian/.
#
# The last two lines of standard output are the paths of the .deb and the .rpm.
# Environment: CARGO_DEB_VERSION pins the cargo-deb installed when missing
# (default: the version this was verified with).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { printf 'build-packages: %s\n' "$*" >&2; }
die() {
    printf 'build-packages: error: %s\n' "$*" >&2
    exit 1
}

if ! command -v cargo >/dev/null 2>&1 && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain with rustup (see README.md)"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found (it comes with dpkg, on any Debian system)"
command -v rpmbuild >/dev/null 2>&1 || die "rpmbuild not found: apt-get install rpm (or run scripts/fetch-test-deps.sh)"

# ---------------------------------------------------------------------------
# 1. The packaging tools, only when missing.
install_tool() { # subcommand crate version
    local sub="$1" crate="$2" version="$3" start=$SECONDS
    if cargo "$sub" --version >/dev/null 2>&1; then
        return 0
    fi
    say "installing $crate from crates.io (cargo install --locked; compiles for a few minutes, once)"
    cargo install --locked ${version:+--version "$version"} "$crate" >&2 ||
        die "cargo install --locked $crate failed (is crates.io reachable?)"
    say "installed $crate in $((SECONDS - start)) s"
}
install_tool deb cargo-deb "${CARGO_DEB_VERSION:-3.8.0}"

# ---------------------------------------------------------------------------
# 2. The binary.
say "cargo build --release"
cargo build --release >&2 || die "cargo build --release failed"
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -n "$TARGET_DIR" ] || TARGET_DIR="$ROOT/target"
BIN="$TARGET_DIR/release/renewd"
[ -x "$BIN" ] || die "$BIN was not built"

# ---------------------------------------------------------------------------
# 3. Man page and completions, from the binary itself. The paths are the
#    `target/assets/...` sources named in Cargo.toml's package metadata, which
#    cargo-deb resolves against the repository root.
ASSETS="$ROOT/target/assets"
rm -rf "$ASSETS"
mkdir -p "$ASSETS"
# The binary as packaged: stripped by cargo (profile.release strip = true), and without the
# .comment section (compiler versions), which lintian flags in a package.
objcopy --remove-section=.comment "$BIN" "$ASSETS/renewd" || die "objcopy $BIN failed"
mkdir -p "$ASSETS/man"
"$BIN" manpage "$ASSETS/man" || die "'renewd manpage' failed"
[ -s "$ASSETS/man/renewd.8" ] || die "'renewd manpage' wrote no renewd.8"
cp "$ROOT/packaging/man/renewd.toml.5" "$ASSETS/man/"
gzip -9n "$ASSETS"/man/* # -n: no name or timestamp, so the build is reproducible
cp "$ROOT/packaging/THIRD-PARTY-NOTICES" "$ASSETS/THIRD-PARTY-NOTICES"
"$BIN" completions bash >"$ASSETS/renewd.bash" || die "'renewd completions bash' failed"
"$BIN" completions zsh >"$ASSETS/_renewd" || die "'renewd completions zsh' failed"
"$BIN" completions fish >"$ASSETS/renewd.fish" || die "'renewd completions fish' failed"
for f in renewd.bash _renewd renewd.fish; do
    [ -s "$ASSETS/$f" ] || die "'renewd completions' wrote an empty $f"
done
say "generated man pages and completions in $ASSETS"

# ---------------------------------------------------------------------------
# 4. The .deb.
DEB_DIR="$TARGET_DIR/debian"
rm -f "$DEB_DIR"/renewd_*.deb
say "cargo deb --no-build"
deb="$(cargo deb --no-build --output "$DEB_DIR/")" || die "cargo deb failed"
deb="$(printf '%s\n' "$deb" | tail -n1)"
[ -f "$deb" ] || die "cargo deb did not print the path of a .deb (got '$deb')"

# Finish what cargo-deb leaves out, as debhelper would have: the empty
# /etc/renewd/conf.d/ (dh_installdirs), so dpkg owns it, and DEBIAN/md5sums
# (dh_md5sums; `dpkg --verify` and debsums use it). Rebuilt with the
# compression cargo-deb uses, root ownership, and cargo-deb's timestamps.
repack="$TARGET_DIR/debian/repack"
rm -rf "$repack"
dpkg-deb --raw-extract "$deb" "$repack"
install -d -m 0755 "$repack/etc/renewd/conf.d"
(cd "$repack" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum >DEBIAN/md5sums)
chmod 0644 "$repack/DEBIAN/md5sums"
mtime="$(stat -c %Y "$repack/usr/bin/renewd")"
find "$repack" -type d -exec touch -h -d "@$mtime" {} +
SOURCE_DATE_EPOCH="$mtime" dpkg-deb --root-owner-group -Zxz --build "$repack" "$deb" >/dev/null ||
    die "dpkg-deb --build failed"
rm -rf "$repack"

# ---------------------------------------------------------------------------
# 5. The .rpm, by rpmbuild from the files built and generated above (the spec
#    has no %build). Everything rpmbuild writes stays under target/rpm/.
RPM_DIR="$TARGET_DIR/rpm"
rm -rf "$RPM_DIR"
mkdir -p "$RPM_DIR/SOURCES/man" "$RPM_DIR/RPMS"
cp "$ASSETS/renewd" "$ROOT/systemd/renewd.service" "$ROOT/packaging/renewd.toml" \
    "$ASSETS/renewd.bash" "$ASSETS/_renewd" "$ASSETS/renewd.fish" \
    "$ROOT/packaging/prometheus/renewd-alerts.yml" "$ROOT/LICENSE" \
    "$ASSETS/THIRD-PARTY-NOTICES" "$ROOT/README.md" "$RPM_DIR/SOURCES/"
cp "$ROOT/packaging/debian/changelog" "$RPM_DIR/SOURCES/changelog"
cp "$ASSETS"/man/* "$RPM_DIR/SOURCES/man/"
version="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"name":"renewd","version":"\([^"]*\)".*/\1/p')"
homepage="$(sed -n 's/^homepage = "\(.*\)"/\1/p' "$ROOT/Cargo.toml")"
[ -n "$version" ] && [ -n "$homepage" ] || die "cannot read the version or homepage from Cargo.toml"
say "rpmbuild -bb packaging/rpm/renewd.spec (version $version)"
HOME="$RPM_DIR" rpmbuild -bb --quiet \
    --define "_topdir $RPM_DIR" \
    --define "renewd_version $version" \
    --define "renewd_url $homepage" \
    --define "_build_id_links none" \
    "$ROOT/packaging/rpm/renewd.spec" >&2 || die "rpmbuild failed"
rpm_file="$(find "$RPM_DIR/RPMS" -name 'renewd-*.rpm' -type f | head -n1)"
[ -n "$rpm_file" ] || die "rpmbuild produced no renewd-*.rpm under $RPM_DIR/RPMS"

say "built:"
printf '%s\n' "$deb" "$rpm_file"
