#!/usr/bin/env python3
"""Turn bench/run.sh's result files into Markdown: `report.py RESULTS_DIR`."""
import glob
import json
import math
import os
import statistics
import sys

R = sys.argv[1]


def load(name):
    path = os.path.join(R, name)
    return json.load(open(path)) if os.path.exists(path) else None


def median(xs):
    return statistics.median(xs)


def p90(xs):
    s = sorted(xs)
    return s[max(0, math.ceil(0.9 * len(s)) - 1)]


def ms(x):
    return f"{x * 1000:.1f} ms"


def ratio(a, b):
    return f"{a / b:.2f}x" if b else "n/a"


def times(name):
    d = load(name)
    return d["times"] if d else None


out = []
p = out.append
m = load("machine.json")
p(f"### Run of {m['date']}\n")
p(f"- machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']}, kernel {m['kernel']}, "
  f"cgroup {m['cgroup']}, load average at start {m['load']}")
p(f"- versions: aac {m['aac']} (release build), containerd {m['containerd']}, runc {m['runc']}, "
  f"podman {m['podman']} (runc, conmon {m['conmon']}), bwrap {m['bwrap']}")
total = load("total.json")
if total:
    p(f"- total run time: {total['seconds'] // 60} min {total['seconds'] % 60} s")
p("")

# 1
p("#### 1. `run --rm IMAGE /bin/true` latency\n")
p("| command | runs | median | p90 | median vs aac |")
p("|---|---|---|---|---|")
aac = times("run-aac.json")
for label, f in [("`aac run --rm --network none`", "run-aac.json"),
                 ("`ctr run --rm` (no network namespace setup)", "run-ctr.json"),
                 ("`podman run --rm --network none`", "run-podman.json"),
                 ("`aac run --rm` (default bridge network, CNI)", "run-aac-bridge.json")]:
    t = times(f)
    if t:
        p(f"| {label} | {len(t)} | {ms(median(t))} | {ms(p90(t))} | {ratio(median(t), median(aac))} |")
p("")

# 2
p("#### 2. Process backend vs bwrap (`/bin/true`)\n")
p("| command | runs | median | p90 | aac / this |")
p("|---|---|---|---|---|")
pa = times("proc-aac.json")
pa_med = median(pa) if pa else 0
for label, f in [("`aac run --rm --runtime process --network none`", "proc-aac.json"),
                 ("bwrap, comparable isolation (see method)", "proc-bwrap.json"),
                 ("bwrap, namespaces only", "proc-bwrap-plain.json"),
                 ("`sh -c 'exec /bin/true'` (spawn floor)", "proc-sh.json")]:
    t = times(f)
    if t:
        p(f"| {label} | {len(t)} | {ms(median(t))} | {ms(p90(t))} | {ratio(pa_med, median(t)) if pa else 'n/a'} |")
probe = os.path.join(R, "process-probe.txt")
if not pa and os.path.exists(probe):
    p(f"| `aac run --rm --runtime process` | not measured: {open(probe).read().strip()} | | | |")
rules = open(os.path.join(R, "seccomp-rules.txt")).read().strip() if os.path.exists(
    os.path.join(R, "seccomp-rules.txt")) else "?"
p(f"\nbwrap's seccomp filter: aac's own profile compiled by libseccomp ({rules}).\n")

# 3
p("#### 3. Monitor memory per container (idle `sleep` containers)\n")
p("| monitor | processes | RSS mean | PSS mean | PSS vs conmon |")
p("|---|---|---|---|---|")
conmon = load("mem-conmon.json")
cm = statistics.mean(conmon["pss_kb"]) if conmon and conmon["pss_kb"] else 0
for label, f in [("aac-shim (containerd backend)", "mem-aac-shim.json"),
                 ("+ its containerd-shim-runc-v2", "mem-aac-ctr-shim.json"),
                 ("aac-shim (process backend, the only per-container process)", "mem-aac-shim-process.json"),
                 ("conmon (podman)", "mem-conmon.json"),
                 ("containerd-shim-runc-v2 (ctr)", "mem-ctr-shim.json")]:
    d = load(f)
    if d and d["pids"]:
        rss, pss = statistics.mean(d["rss_kb"]), statistics.mean(d["pss_kb"])
        p(f"| {label} | {len(d['pids'])} | {rss / 1024:.2f} MiB | {pss / 1024:.2f} MiB | {ratio(pss, cm)} |")
p("")

# 4
p("#### 4. Log throughput\n")
p("| writer | runs | median time | MB/s | lines in the log (expected) | vs raw |")
p("|---|---|---|---|---|---|")
rates = {}
for tool, label in [("raw", "`yes | head | cat > file` on the host"),
                    ("aac", "aac container -> aac-shim -> json.log"),
                    ("aac-v2", "aac container (aac's containerd shim) -> aac-shim -> json.log"),
                    ("podman", "podman container -> conmon -> k8s-file log")]:
    runs = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(R, f"log-{tool}-*.json")))]
    if not runs:
        continue
    secs = median([r["seconds"] for r in runs])
    rate = runs[0]["bytes"] / secs / 1e6
    rates[tool] = rate
    lines = ", ".join(str(r["lines"]) for r in runs)
    p(f"| {label} | {len(runs)} | {secs:.2f} s | {rate:.0f} | {lines} ({runs[0]['expected']}) | "
      f"{ratio(rate, rates.get('raw', 0))} |")
p("")

# 5
p("#### 5. `aac ps` and `aac stats --no-stream` with N running containers\n")
p("| N | `aac ps` median | `aac stats --no-stream --format prometheus` median (one reading) | "
  "`aac stats --no-stream` median (two readings 1 s apart) |")
p("|---|---|---|---|")
scales = sorted(int(f.split("-")[-1].split(".")[0]) for f in glob.glob(os.path.join(R, "ps-*.json")))
for n in scales:
    ps, prom, table = times(f"ps-{n}.json"), times(f"stats-prom-{n}.json"), times(f"stats-table-{n}.json")
    p(f"| {n} | {ms(median(ps))} | {ms(median(prom))} | {ms(median(table))} |")
if len(scales) >= 2:
    a, b = scales[0], scales[-1]
    g_ps = median(times(f"ps-{b}.json")) / median(times(f"ps-{a}.json"))
    g_st = median(times(f"stats-prom-{b}.json")) / median(times(f"stats-prom-{a}.json"))
    p(f"\nFrom {a} to {b} containers ({b / a:.0f}x): `aac ps` takes {g_ps:.2f}x as long, "
      f"one stats reading {g_st:.2f}x.")
p("")

# 6
p("#### 6. Image import\n")
img = open(os.path.join(R, "image.txt")).read().strip() if os.path.exists(os.path.join(R, "image.txt")) else ""
p(f"Archive: {img}\n")
p("| command | runs | median | p90 | vs ctr |")
p("|---|---|---|---|---|")
ic = times("import-ctr.json")
for label, f in [("`aac image import`", "import-aac.json"), ("`ctr images import`", "import-ctr.json")]:
    t = times(f)
    if t:
        p(f"| {label} | {len(t)} | {ms(median(t))} | {ms(p90(t))} | {ratio(median(t), median(ic))} |")
p("")

# 7
dens = load("mem-dens-conmon.json")
if dens:
    p("#### 7. Density: everything aac and containerd start per idle container\n")
    n = len(dens["pids"])
    p(f"{n} idle `sleep` containers at once per row; RSS and PSS summed over the per-container "
      "processes (runc's container process excluded), divided by the number of containers.\n")
    p("| per container | containers | RSS | PSS | PSS vs conmon | RSS vs conmon |")
    p("|---|---|---|---|---|---|")

    def per(files):
        ds = [load(f) for f in files]
        if not all(d and d["pids"] for d in ds):
            return None
        count = max(len(d["pids"]) for d in ds)
        return (count, sum(sum(d["rss_kb"]) for d in ds) / count,
                sum(sum(d["pss_kb"]) for d in ds) / count)
    base = per(["mem-dens-conmon.json"])
    for label, files in [
            ("aac shim alone (`containerd-shim-aac-v2`)", ["mem-dens-aac-shim.json"]),
            ("aac shim + aac-shim monitor", ["mem-dens-aac-shim.json", "mem-dens-aac-monitor.json"]),
            ("runc's Go shim + aac-shim monitor", ["mem-dens-runc-shim.json", "mem-dens-runc-monitor.json"]),
            ("conmon (podman)", ["mem-dens-conmon.json"])]:
        r = per(files)
        if r and base:
            p(f"| {label} | {r[0]} | {r[1] / 1024:.2f} MiB | {r[2] / 1024:.2f} MiB | "
              f"{ratio(r[2], base[2])} | {ratio(r[1], base[1])} |")
    p("")
    sizes = load("sizes.json")
    if sizes:
        p("Stripped sizes: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in sizes.items()) + "\n")
print("\n".join(out))
