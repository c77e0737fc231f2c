# renewd %post: what %systemd_post expands to, written out (cargo-generate-rpm
# does not expand RPM macros). $1 is 1 on first install, 2+ on upgrade.
# On first install the unit is enabled or not according to the system's preset
# policy (RPM distributions start new services only when the admin says so).

# Read after renewd.toml; cargo-generate-rpm cannot ship an empty directory.
mkdir -p /etc/renewd/conf.d

if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload preset renewd.service >/dev/null 2>&1 || :
fi
