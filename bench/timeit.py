#!/usr/bin/env python3
"""Time a command: `timeit.py --runs N --warmup W --out FILE [--between SHELL] -- CMD ARG...`.

Every `{n}` in CMD is replaced by the run's number (unique names for `ctr run`). `--between`
runs untimed after each run (clean-up). Writes {"times": [seconds, ...]} to FILE; a failing
run stops everything with its stderr.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--out", required=True)
    p.add_argument("--between")
    p.add_argument("--fd", help="FILE:N: open FILE (afresh each run) as descriptor N")
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    times = []
    for i in range(a.warmup + a.runs):
        argv = [c.replace("{n}", str(i)) for c in cmd]
        fds = ()
        if a.fd:
            path, num = a.fd.rsplit(":", 1)
            f = os.open(path, os.O_RDONLY)
            os.dup2(f, int(num), inheritable=True)
            os.close(f)
            fds = (int(num),)
        t0 = time.perf_counter()
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, pass_fds=fds)
        dt = time.perf_counter() - t0
        if r.returncode != 0:
            sys.stderr.write(f"{argv} failed ({r.returncode}):\n{r.stderr.decode(errors='replace')}\n")
            sys.exit(1)
        if i >= a.warmup:
            times.append(dt)
        if a.between:
            subprocess.run(a.between, shell=True, stdout=subprocess.DEVNULL)
    with open(a.out, "w") as f:
        json.dump({"cmd": cmd, "times": times}, f)


if __name__ == "__main__":
    main()
