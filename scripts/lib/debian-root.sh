# Sourced by scripts/test-packages.sh and scripts/test-systemd-boot.sh: the pristine Debian 12
# root both start from, made once with debootstrap and cached.
#
#   ensure_minbase DIR MIRROR LOG
# makes DIR (debootstrap --variant=minbase bookworm from MIRROR, output in LOG) unless a
# complete one is there; sets T_DEBOOTSTRAP ("cached" or the seconds it took). Two scripts
# asking at once wait for each other (flock on DIR.lock, at most 15 minutes).

ensure_minbase() {
    local dir=$1 mirror=$2 log=$3 start=$SECONDS
    mkdir -p "$(dirname "$dir")"
    (
        flock -w 900 8 || { echo "debian-root: $dir.lock held for 15 minutes" >&2; exit 1; }
        if [ -x "$dir/usr/bin/dpkg" ] && [ -f "$dir/.complete" ]; then
            exit 0
        fi
        echo "debian-root: debootstrap --variant=minbase bookworm ($mirror) into $dir: ~200 MB, a few minutes, once" >&2
        rm -rf --one-file-system "$dir.tmp"
        debootstrap --variant=minbase bookworm "$dir.tmp" "$mirror" >"$log" 2>&1 || {
            tail -n 20 "$log" >&2
            echo "debian-root: debootstrap failed (log: $log); is $mirror reachable? set DEBIAN_MIRROR to another mirror" >&2
            exit 1
        }
        touch "$dir.tmp/.complete"
        rm -rf --one-file-system "$dir"
        mv "$dir.tmp" "$dir"
    ) 8>"$dir.lock" || return 1
    if [ $((SECONDS - start)) -lt 2 ]; then T_DEBOOTSTRAP=cached; else T_DEBOOTSTRAP="$((SECONDS - start)) s"; fi
}
