# renewd %preun: %systemd_preun written out. $1 is 0 on erase, 1+ on upgrade.
# On erase the unit is disabled and, when systemd is running, stopped.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    systemctl --no-reload disable renewd.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl stop renewd.service >/dev/null 2>&1 || :
    fi
fi
