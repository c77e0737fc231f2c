# shellcheck shell=bash
# The PASS/FAIL bookkeeping of the package test scripts (scripts/test-packages.sh,
# scripts/test-systemd-boot.sh). Source it after defining `say MESSAGE`.
#   check DESCRIPTION COMMAND...   runs COMMAND, records PASS or FAIL
#   pass/fail DESCRIPTION          records one result
# ${results[@]} holds every result line, $failures the number of failures.
results=()
failures=0
pass() {
    results+=("PASS  $*")
    say "PASS: $*"
}
fail() {
    results+=("FAIL  $*")
    failures=$((failures + 1))
    say "FAIL: $*" >&2
}
check() {
    local what="$1"
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}
