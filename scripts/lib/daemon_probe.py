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

With --touch FILE (a deployed fullchain), after the idle window, two wake-ups for that one
certificate: FILE is rewritten in place with the bytes it holds (same size, new mtime),
and the probe waits until the daemon has used no CPU for 2 s:
  wake_cpu_ms       CPU the daemon used for the first wake-up: the sum over its threads
                    of /proc/PID/task/*/schedstat run time (nanoseconds, so a wake-up
                    under one clock tick still counts)
  wake_cpu_ticks_ms the same from /proc/PID/stat utime + stime (clock ticks, a check)
  wake_switches     context switches of its threads during that wake-up
  wake_s            seconds from the rewrite until the daemon was settled again, less
                    the 2 quiet seconds that tell it is
  wake_opens        files opened (open, openat, openat2 calls) during the second wake-up,
                    traced with `strace -f -p PID` (absent when strace is not installed;
                    wake_note says so); wake_stats the stat calls, wake_paths the distinct
                    paths opened
The first wake-up is not traced, so ptrace's cost is not in its CPU figure.

Usage: daemon_probe.py IDLE_SECONDS WATCHDOG_SEC [--touch FILE] -- renewd run --config FILE
WATCHDOG_SEC 0 leaves the watchdog off (no WATCHDOG_USEC in the environment).
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
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


def run_ns(pid):
    """CPU nanoseconds of the live threads (first field of each task's schedstat)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def wait_settled(pid, quiet=2.0, timeout=120.0):
    """Wait until the threads have used no CPU for `quiet` seconds; returns when the
    last CPU use was seen (monotonic)."""
    last = run_ns(pid)
    quiet_since = time.monotonic()
    deadline = quiet_since + timeout
    while time.monotonic() - quiet_since < quiet:
        if time.monotonic() > deadline:
            raise RuntimeError(f"daemon still busy after {timeout} s")
        time.sleep(0.05)
        now = run_ns(pid)
        if now != last:
            last, quiet_since = now, time.monotonic()
    return quiet_since


def rewrite(path):
    """Rewrite a file in place with its own bytes: same size and content, new mtime/ctime
    (an inotify IN_MODIFY and IN_CLOSE_WRITE for its directory's watch)."""
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "r+b") as f:
        f.write(data)


def wake(pid, touch, out):
    """Measure two wake-ups for one certificate (see the module's doc)."""
    wait_settled(pid)
    n0, c0, (s0, _) = run_ns(pid), cpu_seconds(pid), switches(pid)
    t0 = time.monotonic()
    rewrite(touch)
    t1 = wait_settled(pid)
    n1, c1, (s1, _) = run_ns(pid), cpu_seconds(pid), switches(pid)
    out["wake_cpu_ms"] = round((n1 - n0) / 1e6, 2)
    out["wake_cpu_ticks_ms"] = round((c1 - c0) * 1000, 1)
    out["wake_switches"] = s1 - s0
    out["wake_s"] = round(t1 - t0, 3)
    strace = shutil.which("strace")
    if not strace:
        out["wake_note"] = "strace not installed: files opened not counted"
        return
    trace = os.path.join(tempfile.mkdtemp(prefix="renewd-wake-"), "trace")
    tracer = subprocess.Popen(
        [strace, "-f", "-e", "trace=open,openat,openat2,stat,lstat,newfstatat,statx",
         "-o", trace, "-p", str(pid)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    attached, said = [], []

    def read_attached():
        # strace says "Process PID attached with N threads" (or "Process TID attached" for
        # each thread it seizes, depending on its version).
        for line in tracer.stderr:
            m = re.search(r"attached with (\d+) threads", line)
            if m:
                attached.extend([line] * int(m.group(1)))
            elif "attached" in line:
                attached.append(line)
            else:
                said.append(line.strip())

    reader = threading.Thread(target=read_attached, daemon=True)
    reader.start()
    try:
        # Wait for every thread there is to be seized (bounded: a thread may exit meanwhile).
        deadline = time.monotonic() + 30
        while len(attached) < len(os.listdir(f"/proc/{pid}/task")):
            if tracer.poll() is not None:
                # No ptrace here (a container without CAP_SYS_PTRACE, Yama): no count.
                reader.join(timeout=5)
                out["wake_note"] = f"strace failed ({tracer.returncode}): {' '.join(said)[:200]}"
                shutil.rmtree(os.path.dirname(trace))
                return
            if time.monotonic() > deadline:
                out["wake_note"] = f"strace attached {len(attached)} threads in 30 s"
                break
            time.sleep(0.02)
        rewrite(touch)
        wait_settled(pid)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    opens, stats, paths = 0, 0, set()
    with open(trace) as f:
        for line in f:
            call = re.match(r"\d+\s+(\w+)\(", line)
            if not call:
                continue  # "<... resumed>" halves, signals, exits
            if call.group(1).startswith("open"):
                opens += 1
                quoted = re.search(r'"([^"]*)"', line)
                if quoted:
                    paths.add(quoted.group(1))
            else:
                stats += 1
    os.unlink(trace)
    os.rmdir(os.path.dirname(trace))
    out["wake_opens"] = opens
    out["wake_stats"] = stats
    out["wake_paths"] = len(paths)


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
    sep = sys.argv.index("--")
    opts = sys.argv[3:sep]
    touch = opts[opts.index("--touch") + 1] if "--touch" in opts else None
    cmd = sys.argv[sep + 1 :]
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
        if touch:
            wake(pid, touch, out)
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
