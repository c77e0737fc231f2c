#!/usr/bin/env python3
"""Start `renewd run` as systemd would (Type=notify), and measure it.

Used by scripts/bench.sh. Prints one JSON object:
  ready_s       seconds from exec to READY=1 on $NOTIFY_SOCKET
  rss_ready_kib resident memory at READY=1
  rss_kib       resident memory once the daemon has settled (no CPU used for 2 s), of
                which rss_anon_kib is its heap and stacks and rss_file_kib pages of the
                binary and libraries mapped from the page cache (shared, reclaimable)
  hwm_kib       peak resident memory
  threads       threads once settled
  cpu_start_s   CPU seconds (user + system) used up to settling
  idle_s        length of the idle window
  wakeups       context switches of all its threads during the idle window (each time a
                thread slept and was woken; voluntary + involuntary)
  watchdog_pings WATCHDOG=1 messages received during the idle window
  cpu_idle_s    CPU seconds used during the idle window

Usage: daemon_probe.py IDLE_SECONDS WATCHDOG_SEC -- renewd run --config FILE
WATCHDOG_SEC 0 leaves the watchdog off (no WATCHDOG_USEC in the environment).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def status_field(pid, task, field):
    with open(f"/proc/{pid}/task/{task}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def proc_field(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime, stime are fields 14 and 15 (1-based) of the whole line; after the comm they
    # are at 11 and 12 (0-based).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def switches(pid):
    total = 0
    tasks = os.listdir(f"/proc/{pid}/task")
    for t in tasks:
        try:
            total += status_field(pid, t, "voluntary_ctxt_switches")
            total += status_field(pid, t, "nonvoluntary_ctxt_switches")
        except FileNotFoundError:
            pass
    return total, len(tasks)


def drain(sock, counts):
    while True:
        try:
            msg = sock.recv(4096).decode(errors="replace")
        except BlockingIOError:
            return
        for line in msg.split("\n"):
            counts[line] = counts.get(line, 0) + 1


def main():
    idle = float(sys.argv[1])
    watchdog = float(sys.argv[2])
    cmd = sys.argv[sys.argv.index("--") + 1 :]
    tmp = tempfile.mkdtemp(prefix="renewd-probe-")
    path = os.path.join(tmp, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    env = dict(os.environ, NOTIFY_SOCKET=path)
    env.pop("WATCHDOG_USEC", None)
    env.pop("WATCHDOG_PID", None)
    if watchdog > 0:
        env["WATCHDOG_USEC"] = str(int(watchdog * 1_000_000))
    log = open(os.environ.get("PROBE_LOG", os.devnull), "w")
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    out = {}
    try:
        sock.settimeout(300)
        while True:
            msg = sock.recv(4096).decode(errors="replace")
            if "READY=1" in msg.split("\n"):
                out["ready_s"] = round(time.monotonic() - start, 4)
                break
        pid = proc.pid
        out["rss_ready_kib"] = proc_field(pid, "VmRSS")
        # Settled: no CPU used for 2 s (start-up work and any first ARI polls are over).
        last = cpu_seconds(pid)
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 2.0:
            time.sleep(0.25)
            now = cpu_seconds(pid)
            if now != last:
                last, quiet_since = now, time.monotonic()
        # tokio's blocking-pool threads exit after 10 s without work; let them go first so
        # thread exits are not counted as idle activity.
        time.sleep(11)
        out["rss_kib"] = proc_field(pid, "VmRSS")
        out["rss_anon_kib"] = proc_field(pid, "RssAnon")
        out["rss_file_kib"] = proc_field(pid, "RssFile")
        out["hwm_kib"] = proc_field(pid, "VmHWM")
        out["cpu_start_s"] = round(cpu_seconds(pid), 3)
        sock.setblocking(False)
        counts = {}
        drain(sock, counts)
        counts.clear()
        s0, threads = switches(pid)
        c0 = cpu_seconds(pid)
        t0 = time.monotonic()
        time.sleep(idle)
        s1, threads_end = switches(pid)
        out["idle_s"] = round(time.monotonic() - t0, 1)
        out["cpu_idle_s"] = round(cpu_seconds(pid) - c0, 3)
        drain(sock, counts)
        out["threads"] = threads_end
        out["wakeups"] = s1 - s0
        out["watchdog_pings"] = counts.get("WATCHDOG=1", 0)
        if threads != threads_end:
            out["note"] = f"thread count changed {threads} -> {threads_end}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        sock.close()
        os.unlink(path)
        os.rmdir(tmp)
    out["exit"] = proc.returncode
    print(json.dumps(out))


if __name__ == "__main__":
    main()
