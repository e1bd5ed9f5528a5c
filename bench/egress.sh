#!/usr/bin/env bash
# Egress policy cost: TCP connection setup from an agent to an allowed host, with and without
# the policy (`sudo bench/egress.sh`; see BENCHMARKS.md). Asserts nothing.
#
# Starts a private containerd and aac state under $BENCH_DIR, a host namespace "bench world"
# joined by a veth pair (dnsmasq answering bench.test, a TCP server that accepts and closes),
# then two agents on aac's default network: one with no policy, one with
# `--allow-host bench.test`. The second resolves bench.test through aac's resolver first (so
# its address is in the allow set), then both measure COUNT connections to the same address
# from inside their network namespace (bench/connect_time.py under nsenter): the difference is
# what the nftables rules add once the name is resolved. It also times DNS lookups through
# aac's resolver against asking dnsmasq directly.
#
# Knobs: COUNT (connections per measurement, default 2000), ROUNDS (default 3, alternating),
# BENCH_DIR (default /tmp/aac-bench-egress), SKIP_BUILD=1, BIN_DIR (aac and aac-shim to use,
# default target/release; the connection numbers are the kernel's and do not depend on it).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
REPO=$(dirname "$HERE")
COUNT=${COUNT:-2000}
ROUNDS=${ROUNDS:-3}
B=${BENCH_DIR:-/tmp/aac-bench-egress}
WNS=aacbench-world
NET=10.214.250

[ "$(id -u)" = 0 ] || { echo "bench/egress.sh needs root" >&2; exit 1; }
for t in containerd nft dnsmasq nsenter python3 busybox; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install containerd nftables dnsmasq-base busybox-static)" >&2; exit 1; }
done
log() { printf '== %s (%s)\n' "$*" "$(date +%T)" >&2; }

BIN_DIR=${BIN_DIR:-$REPO/target/release}
if [ -z "${SKIP_BUILD:-}" ]; then
    log "cargo build --release"
    (cd "$REPO" && cargo build --release -q -p aac -p aac-shim)
fi
AAC_BIN=$BIN_DIR/aac
export AAC_SHIM=$BIN_DIR/aac-shim
aac() { "$AAC_BIN" "$@"; }

cleanup() {
    set +e
    if [ -d "$B/aac/data/containers" ]; then
        for id in $(ls "$B/aac/data/containers"); do aac rm -f "$id" >/dev/null 2>&1; done
    fi
    for p in $(pgrep -f "aac-shim.*$B/"; pgrep -f "containerd-shim.*$B/"); do kill -9 "$p" 2>/dev/null; done
    [ -n "${CTRD_PID:-}" ] && kill "$CTRD_PID" 2>/dev/null && wait "$CTRD_PID" 2>/dev/null
    [ -n "${WORLD_PIDS:-}" ] && kill $WORLD_PIDS 2>/dev/null
    ip netns del "$WNS" 2>/dev/null
    ip link del aacbe0 2>/dev/null
    ip link del aacbenchw0 2>/dev/null
    grep " $B/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$B"
}
rm -rf "$B"
mkdir -p "$B/ctrd" "$B/aac/run" "$B/aac/data" "$B/world"
trap cleanup EXIT

start_containerd
export CONTAINERD_ADDRESS=$B/ctrd/c.sock AAC_NAMESPACE=bench-egress AAC_RUN_DIR=$B/aac/run
export AAC_DATA_DIR=$B/aac/data AAC_DEFAULT_BRIDGE=aacbenchw0 AAC_LOG=error

log "image and test world"
busybox_rootfs "$B/rootfs"
aac image import --rootfs "$B/rootfs" bench-busybox:latest --cmd /bin/sh --env PATH=/bin >/dev/null

ip netns add "$WNS"
ip link add aacbe0 type veth peer name aacbe1
ip link set aacbe1 netns "$WNS"
ip addr add "$NET.1/24" dev aacbe0 && ip link set aacbe0 up
ip netns exec "$WNS" ip link set lo up
ip netns exec "$WNS" ip addr add "$NET.2/24" dev aacbe1
ip netns exec "$WNS" ip link set aacbe1 up
ip netns exec "$WNS" ip route add default via "$NET.1"
ip netns exec "$WNS" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
    --bind-interfaces --listen-address="$NET.2" --pid-file="$B/world/dns.pid" --user=root \
    --local=/test/ --host-record="bench.test,$NET.2,300" >"$B/world/dns.log" 2>&1 &
WORLD_PIDS="$!"
ip netns exec "$WNS" python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9000)); s.listen(1024)
while True:
    c, _ = s.accept(); c.close()
' "$NET.2" >"$B/world/tcp.log" 2>&1 &
WORLD_PIDS="$WORLD_PIDS $!"
sleep 1

log "agents"
aac run -d --name open --dns "$NET.2" bench-busybox:latest sleep 3600 >/dev/null
aac run -d --name fenced --dns "$NET.2" --allow-host bench.test bench-busybox:latest sleep 3600 >/dev/null
netns() { aac inspect "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Network"]["netns"])'; }
NS_OPEN=$(netns open)
NS_FENCED=$(netns fenced)
# The fenced agent resolves the name through aac's resolver: its address enters the allow set
# (TTL 300 s, longer than this run).
aac exec fenced nslookup bench.test >/dev/null
aac exec fenced wget -q -O /dev/null "http://$NET.2:9000/" 2>/dev/null || true
nsenter --net="$NS_FENCED" nft list set inet aac_egress allow4 | grep -q "$NET.2" \
    || { echo "bench.test is not in the fenced agent's allow set" >&2; exit 1; }

measure() { nsenter --net="$1" python3 "$HERE/connect_time.py" "$NET.2" 9000 "$COUNT"; }
dns_time() {
    # $1 netns, $2 server: median microseconds of 500 A queries for bench.test
    nsenter --net="$1" python3 - "$2" <<'EOF'
import socket, statistics, sys, time, struct
server = (sys.argv[1], 53)
q = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x05bench\x04test\x00" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
times = []
for i in range(550):
    t0 = time.perf_counter(); s.sendto(q, server); s.recv(512); dt = time.perf_counter() - t0
    if i >= 50: times.append(dt * 1e6)
print(round(statistics.median(times), 1))
EOF
}

printf '\n%-8s %-7s %10s %10s %10s %10s\n' round agent median_us mean_us p90_us p99_us
for r in $(seq "$ROUNDS"); do
    for agent in open fenced; do
        ns=$NS_OPEN; [ "$agent" = fenced ] && ns=$NS_FENCED
        measure "$ns" | python3 -c "
import json,sys; d=json.load(sys.stdin)
print('%-8s %-7s %10s %10s %10s %10s' % ('$r', '$agent', d['median_us'], d['mean_us'], d['p90_us'], d['p99_us']))"
    done
done
printf '\nDNS lookup of bench.test, median of 500 (us): fenced agent via aac resolver %s, open agent straight to dnsmasq %s\n' \
    "$(dns_time "$NS_FENCED" 127.0.0.11)" "$(dns_time "$NS_OPEN" "$NET.2")"
