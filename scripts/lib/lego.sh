# shellcheck shell=bash
# Sourced by scripts/bench.sh: lego (the Go ACME client) from Debian unstable's `lego`
# package, fetched the way scripts/fetch-test-deps.sh fetches Pebble — a private apt state
# directory with an unstable source list, so the system's sources, lists and package
# database are untouched — and unpacked under DIR (the .deb's binary is static).
# Not in CI's fetch list: only the benchmark runs lego.
#
#   fetch_lego DIR
# sets LEGO (the binary) and LEGO_VERSION (the package's version); returns 1 on failure.

fetch_lego() {
    local dir apt deb mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
    local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    mkdir -p "$1" && dir=$(cd "$1" && pwd) # apt wants absolute directories
    LEGO="$dir/usr/bin/lego"
    if [ -x "$LEGO" ] && "$LEGO" --version >/dev/null 2>&1 && [ -r "$dir/.deb-version" ]; then
        LEGO_VERSION=$(cat "$dir/.deb-version")
        return 0
    fi
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null ||
        { echo "lego: needs apt-get and dpkg-deb" >&2; return 1; }
    [ -r "$keyring" ] || { echo "lego: $keyring is missing: apt-get install debian-archive-keyring" >&2; return 1; }
    apt="$dir.apt"
    mkdir -p "$apt/etc" "$apt/state/lists/partial" "$apt/cache/archives/partial" "$apt/debs"
    printf 'deb [signed-by=%s] %s unstable main\n' "$keyring" "$mirror" >"$apt/etc/sources.list"
    : >"$apt/state/status"
    local opts=(-q -o Dir::Etc::SourceList="$apt/etc/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
        -o Dir::State="$apt/state" -o Dir::State::Lists="$apt/state/lists"
        -o Dir::State::status="$apt/state/status" -o Dir::Cache="$apt/cache"
        -o APT::Sandbox::User=root -o Acquire::Languages=none -o APT::Get::List-Cleanup=true)
    echo "lego: updating a private apt index of Debian unstable in $apt" >&2
    if ! apt-get "${opts[@]}" update >"$apt/update.log" 2>&1 ||
        grep -qE '^(E|W): (Failed to fetch|Some index files failed)' "$apt/update.log"; then
        cat "$apt/update.log" >&2
        echo "lego: could not fetch Debian unstable's index from $mirror (set DEBIAN_MIRROR)" >&2
        return 1
    fi
    rm -f "$apt/debs/"lego_*.deb
    (cd "$apt/debs" && apt-get "${opts[@]}" download lego >&2) ||
        { echo "lego: apt-get download lego failed" >&2; return 1; }
    deb=$(ls "$apt/debs/"lego_*.deb | head -n1)
    rm -rf "$dir.tmp"
    dpkg-deb -x "$deb" "$dir.tmp"
    dpkg-deb -f "$deb" Version >"$dir.tmp/.deb-version"
    rm -rf "$dir"
    mv "$dir.tmp" "$dir"
    "$LEGO" --version >/dev/null 2>&1 || { echo "lego: $LEGO does not run" >&2; return 1; }
    LEGO_VERSION=$(cat "$dir/.deb-version")
}
