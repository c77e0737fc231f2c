# renewd %postun: %systemd_postun_with_restart written out. $1 is 0 on erase,
# 1+ on upgrade, when a running daemon is restarted on the new binary.
# /var/lib/renewd (account keys, certificate records) is not part of the
# package and is kept on erase.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        systemctl try-restart renewd.service >/dev/null 2>&1 || :
    fi
fi
