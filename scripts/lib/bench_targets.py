#!/usr/bin/env python3
"""Issue 18's targets, each with its figure from this run of scripts/bench.sh and whether it
is met, computed from the files the script left in its work directory:

  start-N.json          daemon_probe.py on N certificates (READY=1, settled RSS, wake-up)
  once.txt              "N ARI WALL CPU" medians of the nothing-due `run --once` passes
  first.json, quiet.json, first-written.json, first-size
                        the first start after the issuing `run --once`, the quiet restart,
                        the state files the first start wrote (state_files.py diff), and
                        how many certificates that `run --once` issued
  renew.txt             "TOOL N WALL CPU PEAK_RSS_KIB" of the renewal rows

Prints a Markdown table. A target whose figure this run did not measure (BENCH_QUICK sizes)
says so instead of met / not met.

Usage: bench_targets.py WORK START_SIZE...
"""

import json
import os
import sys

MIB = 1024


def load(work, name):
    path = os.path.join(work, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def verdict(ok):
    return "met" if ok else "**not met**"


def main():
    work = sys.argv[1]
    sizes = sorted(int(n) for n in sys.argv[2:])
    start = {n: load(work, f"start-{n}.json") for n in sizes}
    once = {}
    if os.path.exists(os.path.join(work, "once.txt")):
        with open(os.path.join(work, "once.txt")) as f:
            for line in f:
                n, ari, wall, cpu = line.split()
                once[(int(n), ari)] = float(cpu)
    rows = []

    def settled(n, limit_mib):
        j = start.get(n)
        target = f"settled RSS with {n:,} certificates ≤ {limit_mib} MiB"
        if not j:
            rows.append((target, f"not measured (start-up sizes: {' '.join(map(str, sizes))})", "—"))
            return
        rss = j["rss_kib"] / MIB
        rows.append((target, f"{rss:.1f} MiB ({j['rss_anon_kib'] / MIB:.1f} anon / "
                     f"{j['rss_file_kib'] / MIB:.1f} file)", verdict(rss <= limit_mib)))

    settled(1000, 10)
    settled(10000, 32)

    j = start.get(10000)
    target = "READY=1 with 10,000 certificates ≤ 0.5 s"
    if j:
        rows.append((target, f"{j['ready_s']} s", verdict(j["ready_s"] <= 0.5)))
    else:
        rows.append((target, "not measured", "—"))

    # O(1) wake-up: the two largest start-up sizes compared; about equal means the larger
    # opens at most 10% (or 2) more files and uses at most twice the CPU (or 1 ms more).
    woke = [n for n in sizes if start.get(n) and "wake_cpu_ms" in start[n]]
    target = "a wake-up for one certificate costs O(1): CPU and files opened do not grow with N"
    if len(woke) >= 2:
        a, b = woke[-2], woke[-1]
        ja, jb = start[a], start[b]
        cpu_ok = jb["wake_cpu_ms"] <= max(2 * ja["wake_cpu_ms"], ja["wake_cpu_ms"] + 1)
        figure = f"CPU {ja['wake_cpu_ms']} ms ({a:,}) vs {jb['wake_cpu_ms']} ms ({b:,})"
        if "wake_opens" in ja and "wake_opens" in jb:
            opens_ok = jb["wake_opens"] <= max(1.1 * ja["wake_opens"], ja["wake_opens"] + 2)
            figure += f"; files opened {ja['wake_opens']} vs {jb['wake_opens']}"
        else:
            opens_ok = True
            figure += f"; files opened not counted ({jb.get('wake_note', 'no strace')})"
        rows.append((target, figure, verdict(cpu_ok and opens_ok)))
    else:
        rows.append((target, "needs two start-up sizes", "—"))

    for n, limit in ((1000, 50), (10000, 400)):
        target = f"nothing-due `run --once` over {n:,} certificates (CA without ARI) ≤ {limit} ms CPU"
        cpu = once.get((n, "false"))
        if cpu is None:
            rows.append((target, "not measured", "—"))
        else:
            figure = f"{cpu * 1000:.0f} ms"
            if (n, "true") in once:
                figure += f" (with ARI: {once[(n, 'true')] * 1000:.0f} ms)"
            rows.append((target, figure, verdict(cpu * 1000 <= limit)))

    first, quiet = load(work, "first.json"), load(work, "quiet.json")
    written = load(work, "first-written.json")
    burst = load(work, "first-size")
    burst = f" ({burst:,} certificates)" if burst else ""
    target = f"a start writes nothing that has not changed: state files written by the first start after the issuing `run --once`{burst}"
    if written is not None:
        files = ", ".join(written["files"][:3]) + (", …" if written["written"] > 3 else "")
        rows.append((target, f"{written['written']} ({written['content_changed']} with new content)"
                     + (f": {files}" if files else ""), verdict(written["written"] == 0)))
    else:
        rows.append((target, "not measured", "—"))
    target = f"settled RSS on the first start after a burst{burst} within 5% of a quiet restart's"
    if first and quiet:
        a, b = first["rss_kib"], quiet["rss_kib"]
        rows.append((target, f"{a / MIB:.1f} MiB vs {b / MIB:.1f} MiB ({100 * (a - b) / b:+.1f}%)",
                     verdict(abs(a - b) <= 0.05 * b)))
    else:
        rows.append((target, "not measured", "—"))

    renew = {}
    if os.path.exists(os.path.join(work, "renew.txt")):
        with open(os.path.join(work, "renew.txt")) as f:
            for line in f:
                tool, n, wall, cpu, rss = line.split()
                renew[(tool, int(n))] = (float(wall), float(cpu), int(rss))
    for n in (10, 100):
        target = f"renewd, certbot and lego renewing the same {n} due certificates: wall, CPU, peak RSS"
        have = [t for t in ("renewd", "certbot", "lego") if (t, n) in renew]
        if "renewd" not in have:
            rows.append((target, "not measured", "—"))
            continue
        r = renew[("renewd", n)]
        parts = [f"renewd {r[0]:.2f} s, {r[1]:.2f} s CPU, {r[2] / MIB:.1f} MiB"]
        for t in have[1:]:
            o = renew[(t, n)]
            parts.append(f"{t} {o[0] / r[0]:.1f}x wall, {o[1] / r[1]:.1f}x CPU, {o[2] / r[2]:.1f}x RSS")
        missing = [t for t in ("certbot", "lego") if t not in have]
        rows.append((target, "; ".join(parts), "reported" if not missing else f"not measured: {', '.join(missing)}"))

    print("\n| Target (issue 18) | Measured | |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
