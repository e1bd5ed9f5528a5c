#!/usr/bin/env bash
# The scaled agent's published port: requests per second and latency through aac's proxy (the
# supervisor's userspace L4 proxy on the host port) against straight to one replica, and the
# supervisor's memory (`sudo bench/proxy.sh`; see BENCHMARKS.md). Asserts nothing.
#
# Starts a private containerd and aac state under $BENCH_DIR, brings up an agent of REPLICAS
# busybox httpd replicas behind one published port, then runs wrk (keep-alive connections;
# busybox httpd closes each after one response, so every request is a new connection on both
# paths) for DURATION against 127.0.0.1:PORT (the proxy) and against the first replica's
# address (direct), ROUNDS times alternating. Then PSS/RSS of aac-supervisor and of one
# aac-shim for comparison.
#
# Knobs: REPLICAS (default 1: same capacity on both paths), DURATION (10s), CONNECTIONS (32),
# THREADS (2), ROUNDS (3), BENCH_DIR (/tmp/aac-bench-proxy), SKIP_BUILD=1, BIN_DIR (default
# target/release).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
REPO=$(dirname "$HERE")
REPLICAS=${REPLICAS:-1}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
B=${BENCH_DIR:-/tmp/aac-bench-proxy}
PORT=${PORT:-18931}

[ "$(id -u)" = 0 ] || { echo "bench/proxy.sh needs root" >&2; exit 1; }
for t in containerd wrk python3 busybox; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install containerd wrk busybox-static)" >&2; exit 1; }
done
log() { printf '== %s (%s)\n' "$*" "$(date +%T)" >&2; }

BIN_DIR=${BIN_DIR:-$REPO/target/release}
if [ -z "${SKIP_BUILD:-}" ]; then
    log "cargo build --release"
    (cd "$REPO" && cargo build --release -q -p aac -p aac-shim)
fi
AAC_BIN=$BIN_DIR/aac
export AAC_SHIM=$BIN_DIR/aac-shim AAC_SUPERVISOR=$BIN_DIR/aac-supervisor
aac() { "$AAC_BIN" "$@"; }

cleanup() {
    set +e
    aac down bench >/dev/null 2>&1
    if [ -d "$B/aac/data/containers" ]; then
        for id in $(ls "$B/aac/data/containers"); do aac rm -f "$id" >/dev/null 2>&1; done
    fi
    for p in $(pgrep -f "aac-supervisor.*$B/"; pgrep -f "aac-shim.*$B/"; pgrep -f "containerd-shim.*$B/"); do kill -9 "$p" 2>/dev/null; done
    [ -n "${CTRD_PID:-}" ] && kill "$CTRD_PID" 2>/dev/null && wait "$CTRD_PID" 2>/dev/null
    ip link del aacbenchp0 2>/dev/null
    grep " $B/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$B"
}
rm -rf "$B"
mkdir -p "$B/ctrd" "$B/aac/run" "$B/aac/data" "$B/agent/srv"
trap cleanup EXIT

start_containerd
export CONTAINERD_ADDRESS=$B/ctrd/c.sock AAC_NAMESPACE=bench-proxy AAC_RUN_DIR=$B/aac/run
export AAC_DATA_DIR=$B/aac/data AAC_DEFAULT_BRIDGE=aacbenchp0 AAC_LOG=error

log "image and agent ($REPLICAS replicas)"
busybox_rootfs "$B/rootfs"
aac image import --rootfs "$B/rootfs" bench-busybox:latest --cmd /bin/sh --env PATH=/bin >/dev/null
head -c 512 /dev/zero | tr '\0' x >"$B/agent/srv/index.html"
cat >"$B/agent/agent.yaml" <<EOF
apiVersion: agent.dev/v1
kind: Agent
metadata:
  name: bench
spec:
  image: bench-busybox:latest
  command: [httpd, -f, -p, "8080", -h, /srv]
  ports:
    - container: 8080
      host: $PORT
  volumes:
    - source: $B/agent/srv
      target: /srv
      readOnly: true
  scaling:
    replicas: $REPLICAS
    maxReplicas: $REPLICAS
EOF
aac up -d "$B/agent" >/dev/null
REPLICA_IP=$(aac inspect bench-1 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Network"]["ip"])')
for _ in $(seq 100); do wget -q -O /dev/null "http://127.0.0.1:$PORT/index.html" 2>/dev/null && break; sleep 0.1; done

run_wrk() {
    # $1 label, $2 url: "label rps p50_ms p99_ms errors"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$2" | tee -a "${WRK_RAW:-/dev/null}" | python3 -c '
import re, sys
label = sys.argv[1]
t = sys.stdin.read()
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)", v or "")
    if not m:
        return float("nan")
    n, u = m.groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[u]
def found(pattern):
    m = re.search(pattern, t)
    if not m:
        # A round without answers (no latency distribution): say so, keep the others.
        sys.stderr.write(t)
    return m.group(1) if m else None
rps = float(found(r"Requests/sec:\s+([\d.]+)") or 0)
# Lines of the latency distribution only ("  50%  2.21ms"), not a "+/- Stdev" ending in 50%.
p50 = ms(found(r"(?m)^\s+50%\s+(\S+)"))
p99 = ms(found(r"(?m)^\s+99%\s+(\S+)"))
err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
errors = (sum(map(int, err.groups())) if err else 0) + (int(non2xx.group(1)) if non2xx else 0)
print(label, round(rps), round(p50, 3), round(p99, 3), errors)
' "$1"
}

log "wrk: $ROUNDS rounds of $DURATION, $CONNECTIONS connections"
: >"$B/wrk.txt"
for r in $(seq "$ROUNDS"); do
    run_wrk direct "http://$REPLICA_IP:8080/index.html" | tee -a "$B/wrk.txt" >&2
    run_wrk proxy "http://127.0.0.1:$PORT/index.html" | tee -a "$B/wrk.txt" >&2
done
python3 "$HERE/procmem.py" "$B/sup.json" aac-supervisor "$B/"
python3 "$HERE/procmem.py" "$B/shim.json" aac-shim "$B/"

python3 - "$B/wrk.txt" "$B/sup.json" "$B/shim.json" "$REPLICAS" "$CONNECTIONS" <<'EOF'
import json, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def med(label, i):
    return statistics.median(float(r[i]) for r in rows if r[0] == label)
d_rps, p_rps = med("direct", 1), med("proxy", 1)
d_p50, p_p50 = med("direct", 2), med("proxy", 2)
d_p99, p_p99 = med("direct", 3), med("proxy", 3)
errors = sum(int(r[4]) for r in rows if r[0] == "proxy")
sup, shim = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
print(f"### Published port through aac's proxy ({sys.argv[4]} replica(s), {sys.argv[5]} connections, medians of the rounds)\n")
print("| path | requests/s | p50 ms | p99 ms |")
print("|---|---:|---:|---:|")
print(f"| straight to the replica | {d_rps:.0f} | {d_p50:.3f} | {d_p99:.3f} |")
print(f"| through aac's published port | {p_rps:.0f} | {p_p50:.3f} | {p_p99:.3f} |")
print(f"| ratio / added | {p_rps / d_rps:.2f}x | +{p_p50 - d_p50:.3f} | +{p_p99 - d_p99:.3f} |")
print(f"\nFailed requests through the proxy: {errors}.")
if sup["pss_kb"]:
    print(f"\naac-supervisor: PSS {sup['pss_kb'][0] / 1024:.1f} MiB, RSS {sup['rss_kb'][0] / 1024:.1f} MiB "
          f"(one aac-shim: PSS {statistics.median(shim['pss_kb']) / 1024:.1f} MiB, RSS {statistics.median(shim['rss_kb']) / 1024:.1f} MiB).")
EOF
