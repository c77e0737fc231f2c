#!/usr/bin/env python3
"""Which files of a state directory did a daemon start write?

Used by scripts/bench.sh around the first `renewd run` after the `run --once` that issued
the certificates (and around a quiet restart).

  state_files.py snapshot DIR OUT   records, for every regular file under DIR, its size,
                                    mtime, ctime (nanoseconds), inode and SHA-256
  state_files.py diff BEFORE AFTER  prints one JSON object: "written", the number of files
                                    created, removed, or whose content, inode, mtime or
                                    ctime changed; "content_changed", those of them whose
                                    bytes differ (or that appeared or went); "files", up to
                                    10 of their paths

A file rewritten with the same bytes counts as written (its mtime/ctime moved): the target
is a start that writes nothing that has not changed.
"""

import hashlib
import json
import os
import sys


def snapshot(root):
    files = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
                if not os.path.isfile(path) or os.path.islink(path):
                    continue
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            except FileNotFoundError:
                continue
            files[os.path.relpath(path, root)] = [
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_ino,
                digest,
            ]
    return files


def main():
    if sys.argv[1] == "snapshot":
        with open(sys.argv[3], "w") as f:
            json.dump(snapshot(sys.argv[2]), f)
        return
    with open(sys.argv[2]) as f:
        before = json.load(f)
    with open(sys.argv[3]) as f:
        after = json.load(f)
    written, content = [], 0
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path), after.get(path)
        if a == b:
            continue
        written.append(path)
        if a is None or b is None or a[4] != b[4]:
            content += 1
    print(json.dumps({"written": len(written), "content_changed": content, "files": written[:10]}))


if __name__ == "__main__":
    main()
