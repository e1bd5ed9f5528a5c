#!/usr/bin/python3
"""Compile the seccomp section of an OCI runtime spec into the raw BPF program bwrap's
`--seccomp FD` loads: `seccomp_bpf.py SPEC.json OUT.bpf`.

Needs Debian's python3-seccomp (libseccomp's bindings), hence /usr/bin/python3. Rules on
syscalls this libseccomp does not know are skipped, as runc does.
"""
import errno
import json
import sys

import seccomp

OPS = {
    "SCMP_CMP_NE": seccomp.NE,
    "SCMP_CMP_LT": seccomp.LT,
    "SCMP_CMP_LE": seccomp.LE,
    "SCMP_CMP_EQ": seccomp.EQ,
    "SCMP_CMP_GE": seccomp.GE,
    "SCMP_CMP_GT": seccomp.GT,
    "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ,
}


def action(name, errno_ret):
    if name == "SCMP_ACT_ALLOW":
        return seccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return seccomp.ERRNO(errno_ret)
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return seccomp.KILL
    if name == "SCMP_ACT_KILL_PROCESS":
        return seccomp.KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return seccomp.TRAP
    if name == "SCMP_ACT_LOG":
        return seccomp.LOG
    raise SystemExit(f"unsupported seccomp action {name}")


def main():
    spec = json.load(open(sys.argv[1]))
    sc = spec["linux"]["seccomp"]
    default_errno = sc.get("defaultErrnoRet", errno.EPERM)
    default = sc["defaultAction"]
    f = seccomp.SyscallFilter(defaction=action(default, default_errno))
    added = skipped = 0
    for rule in sc.get("syscalls", []):
        if rule["action"] == default and rule["action"] != "SCMP_ACT_ERRNO":
            continue
        act = action(rule["action"], rule.get("errnoRet", default_errno))
        args = [
            seccomp.Arg(a["index"], OPS[a["op"]], a.get("value", 0), a.get("valueTwo", 0))
            for a in rule.get("args", [])
        ]
        for name in rule["names"]:
            try:
                f.add_rule(act, name, *args)
                added += 1
            except (RuntimeError, ValueError, OSError):
                skipped += 1
    with open(sys.argv[2], "wb") as out:
        f.export_bpf(out)
    print(f"{added} rules, {skipped} skipped", file=sys.stderr)


if __name__ == "__main__":
    main()
