#!/usr/bin/env python3
"""Memory of monitor processes: `procmem.py OUT.json WORD...` reads Rss and Pss from
/proc/PID/smaps_rollup of every process whose command line holds every WORD (argv[0]'s file
name counts as a word too) and writes {"pids": [...], "rss_kb": [...], "pss_kb": [...]}.
"""
import json
import os
import sys


def main():
    out, words = sys.argv[1], sys.argv[2:]
    res = {"pids": [], "rss_kb": [], "pss_kb": []}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode()
            rollup = open(f"/proc/{pid}/smaps_rollup").read()
        except OSError:
            continue
        if not cmd or not all(w in cmd for w in words):
            continue
        fields = {}
        for line in rollup.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1])
        res["pids"].append(int(pid))
        res["rss_kb"].append(fields.get("Rss", 0))
        res["pss_kb"].append(fields.get("Pss", 0))
    with open(out, "w") as f:
        json.dump(res, f)
    print(f"{' '.join(words)}: {len(res['pids'])} processes", file=sys.stderr)


if __name__ == "__main__":
    main()
