#!/usr/bin/env bash
# Test renewd's packages: `bash scripts/test-packages.sh`. Needs root (chroot,
# mount) and the Debian packages lintian, rpm and debootstrap
# (scripts/fetch-test-deps.sh installs them). Works from any directory.
#
#  1. Builds the .deb and the .rpm with scripts/build-packages.sh.
#  2. lintian --pedantic on the .deb: no error, warning, info or pedantic tag
#     (each accepted tag is in packaging/debian/lintian-overrides with its reason).
#  3. rpm -qlp / -qcp / -qLp on the .rpm: the binary (stripped), the unit, the
#     man pages, the configuration file (marked %config), /etc/renewd owned,
#     the licence and third-party notices marked %license, URL and description.
#     The packaged Prometheus rules pass `promtool check rules` and their unit
#     tests (`promtool test rules`, e.g. one of two hosts down).
#  4. Installs the .deb into a throwaway Debian 12 root (debootstrap minbase,
#     cached under target/pkgtest/ and copied afresh for every run) with
#     `chroot ROOT apt-get install ./renewd.deb` (its Depends come from the mirror): the
#     unit is enabled, `renewd check` accepts the
#     shipped configuration, a reinstall (upgrade path) works, `dpkg -r` keeps
#     /var/lib/renewd and the configuration, `dpkg -P` removes them.
#
# Prints a summary; exits non-zero if any check failed.
# Environment:
#   DEBIAN_MIRROR         default: http://deb.debian.org/debian
#   RENEWD_PKGTEST_DIR    where the cached and throwaway roots live
#                         (default: <repo>/target/pkgtest)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
WORK="${RENEWD_PKGTEST_DIR:-$ROOT/target/pkgtest}"
CACHE="$WORK/bookworm-minbase" # pristine debootstrap, reused across runs
CHROOT="$WORK/root"            # this run's copy, the package goes in here

# shellcheck source=scripts/lib/debian-root.sh
source "$ROOT/scripts/lib/debian-root.sh"

say() { printf 'test-packages: %s\n' "$*"; }
die() {
    printf 'test-packages: error: %s\n' "$*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mount /proc); run it as root or with sudo"
for tool in lintian rpm rpm2cpio cpio debootstrap dpkg-deb chroot mount promtool file; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool not found: run 'bash scripts/fetch-test-deps.sh' (it installs lintian, rpm, debootstrap and prometheus' promtool)"
done

mkdir -p "$WORK"
exec 9>"$WORK/lock"
flock -n 9 || die "another test-packages.sh is running (lock $WORK/lock)"

# ---------------------------------------------------------------------------
# Results.
# shellcheck source=scripts/lib/checks.sh
. "$ROOT/scripts/lib/checks.sh"
summary() {
    printf '\ntest-packages: summary\n'
    printf '  %s\n' "${results[@]}"
    printf '  timings: build %s s, lintian %s s, debootstrap %s, install tests %s s, total %s s\n' \
        "${t_build:-?}" "${t_lintian:-?}" "${t_debootstrap:-?}" "${t_chroot:-?}" "$SECONDS"
    if [ "$failures" -eq 0 ]; then
        printf 'test-packages: all %d checks passed\n' "${#results[@]}"
    else
        printf 'test-packages: %d of %d checks FAILED\n' "$failures" "${#results[@]}" >&2
    fi
}

# The throwaway root's /proc, unmounted whatever happens.
unmount_chroot() {
    if mountpoint -q "$CHROOT/proc" 2>/dev/null; then
        umount "$CHROOT/proc" || umount -l "$CHROOT/proc" || true
    fi
}
trap unmount_chroot EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------
# 1. Build.
start=$SECONDS
build_out="$(bash "$ROOT/scripts/build-packages.sh")" || die "scripts/build-packages.sh failed"
deb="$(printf '%s\n' "$build_out" | tail -n2 | head -n1)"
rpm_file="$(printf '%s\n' "$build_out" | tail -n1)"
t_build=$((SECONDS - start))
case "$deb" in *.deb) [ -f "$deb" ] ;; *) false ;; esac ||
    die "build-packages.sh did not print a .deb path (got '$deb')"
case "$rpm_file" in *.rpm) [ -f "$rpm_file" ] ;; *) false ;; esac ||
    die "build-packages.sh did not print an .rpm path (got '$rpm_file')"
say "built $deb and $rpm_file in $t_build s"

# ---------------------------------------------------------------------------
# 2. lintian --pedantic. Every tag fails, down to pedantic: each accepted one is
#    overridden with a reason.
start=$SECONDS
say "lintian --pedantic $(basename "$deb")"
if lintian_out="$(lintian --pedantic --display-info --fail-on error,warning,info,pedantic "$deb" 2>&1)"; then
    pass "lintian --pedantic: no tags (overrides: packaging/debian/lintian-overrides)"
else
    fail "lintian --pedantic: tags (fix them, or override with a reason in packaging/debian/lintian-overrides)"
fi
printf '%s\n' "$lintian_out" | grep -v 'running with root privileges is not recommended' | sed 's/^/    /' || true
t_lintian=$((SECONDS - start))

# ---------------------------------------------------------------------------
# 3. The .rpm's contents.
rpm_list="$(rpm -qlp "$rpm_file" 2>/dev/null)" || { fail "rpm -qlp $(basename "$rpm_file")"; rpm_list=""; }
rpm_conf="$(rpm -qcp "$rpm_file" 2>/dev/null)" || rpm_conf=""
printf '%s\n' "$rpm_list" | sed 's/^/    /'
for f in /usr/bin/renewd /usr/lib/systemd/system/renewd.service /etc/renewd/renewd.toml \
    /etc/renewd /etc/renewd/conf.d /usr/share/man/man8/renewd.8.gz \
    /usr/share/man/man8/renewd-check.8.gz /usr/share/man/man5/renewd.toml.5.gz \
    /usr/share/renewd/prometheus/renewd-alerts.yml; do
    check "rpm lists $f" grep -qxF "$f" <<<"$rpm_list"
done
check "rpm marks /etc/renewd/renewd.toml as %config" grep -qxF /etc/renewd/renewd.toml <<<"$rpm_conf"
rpm_licenses="$(rpm -qLp "$rpm_file" 2>/dev/null)" || rpm_licenses=""
for f in LICENSE THIRD-PARTY-NOTICES; do
    check "rpm marks $f as %license" grep -q "/$f\$" <<<"$rpm_licenses"
done
rpm_info="$(rpm -qip "$rpm_file" 2>/dev/null)" || rpm_info=""
check "rpm has a URL" grep -q '^URL *: https://' <<<"$rpm_info"
check "rpm has a full description" test "$(sed -n '/^Description/,$p' <<<"$rpm_info" | wc -l)" -ge 5
check "rpm requires ca-certificates" grep -qx 'ca-certificates' <<<"$(rpm -qRp "$rpm_file" 2>/dev/null)"
rpm_x="$WORK/rpm-extract"
rm -rf "$rpm_x" && mkdir -p "$rpm_x"
(cd "$rpm_x" && rpm2cpio "$rpm_file" | cpio -idm --quiet ./usr/bin/renewd) || true
stripped() { file -b "$rpm_x/usr/bin/renewd" | grep -q ', stripped'; }
check "rpm's /usr/bin/renewd is stripped ($(du -h "$rpm_x/usr/bin/renewd" 2>/dev/null | cut -f1))" stripped
# Every page renewd(8) names is shipped.
named_pages_shipped() {
    local page missing=0
    for page in $(zcat "$ROOT/target/assets/man/renewd.8.gz" | grep -o 'renewd\\-[a-z-]*(8)' | sed 's/\\//; s/(8)//' | sort -u); do
        grep -qxF "/usr/share/man/man8/$page.8.gz" <<<"$rpm_list" || { say "renewd(8) names $page(8), not shipped"; missing=1; }
    done
    [ "$missing" -eq 0 ]
}
check "every page renewd(8) names is shipped" named_pages_shipped

# Every crate linked into the binary has its licence in the notices both packages ship.
notices_cover_the_tree() {
    local crate missing=0
    while read -r crate; do
        grep -qxF "  $crate" "$ROOT/packaging/THIRD-PARTY-NOTICES" || { say "THIRD-PARTY-NOTICES lacks $crate"; missing=1; }
    done < <(cargo tree --locked -e normal --prefix none --target x86_64-unknown-linux-gnu -f '{p}' 2>/dev/null |
        sed 's/ (.*//; s/ v\([0-9]\)/ \1/' | grep -v '^renewd ' | sort -u)
    [ "$missing" -eq 0 ] || say "regenerate it: bash scripts/notices.sh"
    [ "$missing" -eq 0 ]
}
check "THIRD-PARTY-NOTICES covers every crate in the binary" notices_cover_the_tree

# ---------------------------------------------------------------------------
# 3b. The packaged Prometheus rules.
check "promtool check rules renewd-alerts.yml" promtool check rules "$ROOT/packaging/prometheus/renewd-alerts.yml"
check "promtool test rules renewd-alerts.test.yml (e.g. one of two hosts down)" \
    promtool test rules "$ROOT/packaging/prometheus/renewd-alerts.test.yml"
rpm_scripts="$(rpm -qp --scripts "$rpm_file" 2>/dev/null)" || rpm_scripts=""
for s in postinstall preuninstall postuninstall; do
    check "rpm has a $s scriptlet" grep -q "^$s scriptlet" <<<"$rpm_scripts"
done

# ---------------------------------------------------------------------------
# 4. Install into a throwaway Debian root.
# The pristine root is shared with scripts/test-systemd-boot.sh (scripts/lib/debian-root.sh).
ensure_minbase "$CACHE" "$MIRROR" "$WORK/debootstrap.log" || die "no Debian root in $CACHE (see above)"
t_debootstrap=$T_DEBOOTSTRAP

start=$SECONDS
unmount_chroot
rm -rf --one-file-system "$CHROOT"
cp -a "$CACHE" "$CHROOT"
mount -t proc proc "$CHROOT/proc"
cp "$deb" "$CHROOT/tmp/renewd.deb"

# Run a command in the root with a clean environment; its output is indented.
in_root() {
    chroot "$CHROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive "$@" 2>&1 | sed 's/^/    /'
    return "${PIPESTATUS[0]}"
}
exists() { [ -e "$CHROOT$1" ] || [ -L "$CHROOT$1" ]; }
absent() { ! exists "$1"; }
# shellcheck disable=SC2016 # ${...} are dpkg-query's fields
status_is() { [ "$(chroot "$CHROOT" dpkg-query -W -f='${db:Status-Abbrev}' renewd 2>/dev/null | tr -d ' ')" = "$1" ]; }
# shellcheck disable=SC2016
conffile_registered() { chroot "$CHROOT" dpkg-query -W -f='${Conffiles}\n' renewd | grep -q "^ $1 "; }
unit_enabled() { compgen -G "$CHROOT/etc/systemd/system/*.wants/renewd.service" >/dev/null; }
unit_not_enabled() { ! unit_enabled; }
unknown_to_dpkg() { ! chroot "$CHROOT" dpkg-query -W renewd >/dev/null 2>&1; }

# apt-get, not dpkg -i: the Depends (procps, ca-certificates) are not in a minbase root and
# come from the mirror, so a Depends naming a package that does not exist fails here.
apt_install_deb() {
    in_root apt-get install -y -q --no-install-recommends /tmp/renewd.deb && return 0
    # The cached package lists may be older than the mirror's files.
    in_root apt-get update -q && in_root apt-get install -y -q --no-install-recommends /tmp/renewd.deb
}
check "apt-get install ./renewd.deb (Depends from the mirror; no systemd running in the root)" apt_install_deb
# shellcheck disable=SC2016
dep_installed() { [ "$(chroot "$CHROOT" dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | tr -d ' ')" = ii ]; }
check "the Depends brought procps (/bin/kill for ExecReload=)" dep_installed procps
check "the Depends brought ca-certificates (the system trust roots)" dep_installed ca-certificates
check "package is installed" status_is ii
for f in /usr/bin/renewd /usr/lib/systemd/system/renewd.service /etc/renewd/renewd.toml \
    /usr/share/man/man8/renewd.8.gz /usr/share/bash-completion/completions/renewd \
    /usr/share/zsh/vendor-completions/_renewd /usr/share/fish/vendor_completions.d/renewd.fish \
    /usr/share/doc/renewd/changelog.Debian.gz /usr/share/doc/renewd/copyright; do
    check "installed $f" exists "$f"
done
check "installed the empty directory /etc/renewd/conf.d/" test -d "$CHROOT/etc/renewd/conf.d"
check "dpkg registers /etc/renewd/renewd.toml as a conffile" conffile_registered /etc/renewd/renewd.toml
check "postinst enabled the unit (deb-systemd-helper)" unit_enabled
check "renewd check accepts the shipped configuration" in_root renewd check
check "man page renders" in_root sh -c 'zcat /usr/share/man/man8/renewd.8.gz | grep -q "^\.TH"'
check "reinstall (upgrade path: prerm upgrade, postinst configure VERSION)" in_root dpkg -i /tmp/renewd.deb

mkdir -p "$CHROOT/var/lib/renewd/accounts"
echo "account key stand-in" >"$CHROOT/var/lib/renewd/accounts/marker.json"
check "dpkg -r renewd" in_root dpkg -r renewd
check "after remove: state in /var/lib/renewd kept" exists /var/lib/renewd/accounts/marker.json
check "after remove: configuration kept" exists /etc/renewd/renewd.toml
check "after remove: binary gone" absent /usr/bin/renewd
check "after remove: package in config-files state" status_is rc
check "dpkg -P renewd" in_root dpkg -P renewd
check "after purge: /var/lib/renewd removed" absent /var/lib/renewd
check "after purge: /etc/renewd removed" absent /etc/renewd
check "after purge: unit enablement removed" unit_not_enabled
check "after purge: package unknown to dpkg" unknown_to_dpkg

unmount_chroot
t_chroot=$((SECONDS - start))

summary
[ "$failures" -eq 0 ]
