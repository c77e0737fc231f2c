#!/usr/bin/env python3
"""Run a command and print its wall time, CPU time and peak resident memory.

Used by scripts/bench.sh for every renewal row. Prints one line:
  WALL_S CPU_S PEAK_RSS_KIB
WALL_S is seconds from fork to exit; CPU_S the user + system seconds of the command and
every descendant it waited for (getrusage(RUSAGE_CHILDREN)); PEAK_RSS_KIB the largest
resident set any one of those processes reached (ru_maxrss is a maximum over the processes,
not a sum: for a shell loop running one client after another it is the largest client).
The command's stdout and stderr go to OUT and ERR. Exits with the command's status.

Usage: measure.py OUT ERR -- COMMAND...
"""

import resource
import subprocess
import sys
import time


def main():
    out, err = sys.argv[1], sys.argv[2]
    cmd = sys.argv[sys.argv.index("--") + 1 :]
    with open(out, "w") as o, open(err, "w") as e:
        start = time.monotonic()
        rc = subprocess.call(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e)
        wall = time.monotonic() - start
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"{wall:.3f} {ru.ru_utime + ru.ru_stime:.3f} {ru.ru_maxrss}")
    sys.exit(rc)


if __name__ == "__main__":
    main()
