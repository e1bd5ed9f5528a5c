#!/usr/bin/env bash
# aac's benchmarks, all of them, on this machine: `sudo bench/run.sh` (see BENCHMARKS.md).
#
# Builds aac with --release, starts a private containerd (and private podman storage) under
# $BENCH_DIR, measures aac against ctr, podman (runc) and bwrap in the same run, prints the
# results as Markdown and writes them to bench/results.md. It asserts nothing. Nothing outside
# $BENCH_DIR is touched except a bridge named aacbench0 (removed at the end).
#
# Knobs: RUNS (latency runs, default 30), SCALES (default "10 50 100"), IDLE (default 20),
# LOG_LINES (default 2000000 lines of 100 bytes + newline = 202 MB), IMAGE_MIB (default 30),
# BENCH_DIR (default /tmp/aac-bench; short, for unix socket paths), SKIP_BUILD=1,
# DENSITY (idle containers of the density case, default 100), ONLY=density (set up, then run
# only the density case: aac's own shim vs runc's shim vs conmon, and its log throughput).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
REPO=$(dirname "$HERE")
RUNS=${RUNS:-30}
SCALES=${SCALES:-"10 50 100"}
IDLE=${IDLE:-20}
LOG_LINES=${LOG_LINES:-2000000}
IMAGE_MIB=${IMAGE_MIB:-30}
DENSITY=${DENSITY:-100}
ONLY=${ONLY:-}
B=${BENCH_DIR:-/tmp/aac-bench}
R=$B/results
OUT=${OUT:-$HERE/results.md}
PY=python3

[ "$(id -u)" = 0 ] || { echo "bench/run.sh needs root (containerd, runc, cgroups)" >&2; exit 1; }
for t in containerd ctr runc podman conmon bwrap /usr/bin/python3 busybox; do
    command -v "$t" >/dev/null || { echo "missing $t (apt-get install podman bubblewrap python3-seccomp busybox)" >&2; exit 1; }
done
/usr/bin/python3 -c 'import seccomp' 2>/dev/null || { echo "missing python3-seccomp" >&2; exit 1; }

log() { printf '\n== %s (%s)\n' "$*" "$(date +%T)" >&2; }
T0=$(date +%s)

# --- build -----------------------------------------------------------------------------------
if [ -z "${SKIP_BUILD:-}" ]; then
    log "cargo build --release"
    (cd "$REPO" && cargo build --release -q -p aac -p aac-shim)
    log "cargo build --profile shim -p containerd-shim-aac-v2"
    (cd "$REPO" && cargo build --profile shim -q -p containerd-shim-aac-v2)
fi
AAC_BIN=$REPO/target/release/aac
# aac's own containerd shim, by absolute path (containerd needs nothing on its PATH).
AAC_V2=$REPO/target/shim/containerd-shim-aac-v2
export AAC_SHIM=$REPO/target/release/aac-shim

# --- private state ---------------------------------------------------------------------------
cleanup() {
    set +e
    log "cleaning up"
    if [ -n "${AAC_DATA_DIR:-}" ] && [ -d "$AAC_DATA_DIR/containers" ]; then
        for id in $(ls "$AAC_DATA_DIR/containers"); do "$AAC_BIN" rm -f "$id" >/dev/null 2>&1; done
    fi
    pod rm -af -t 0 >/dev/null 2>&1
    for c in $(ctr_ containers ls -q 2>/dev/null); do
        ctr_ tasks kill -s KILL "$c" >/dev/null 2>&1
        ctr_ tasks rm -f "$c" >/dev/null 2>&1
        ctr_ containers rm "$c" >/dev/null 2>&1
    done
    for p in $(pgrep -f "aac-shim.*$B/" ; pgrep -f "containerd-shim.*$B/"; pgrep -f "conmon.*$B/"); do kill -9 "$p" 2>/dev/null; done
    [ -n "${CTRD_PID:-}" ] && kill "$CTRD_PID" 2>/dev/null && wait "$CTRD_PID" 2>/dev/null
    ip link del aacbench0 2>/dev/null
    grep " $B/" /proc/self/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$B/ctrd" "$B/podman" "$B/aac" "$B/rootfs" "$B"/*.tar "$B"/*.out
}
if [ -d "$B" ]; then
    { grep " $B/" /proc/self/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$B"
fi
mkdir -p "$B/ctrd" "$B/aac/run" "$B/aac/data" "$B/podman/tmp" "$R"
# aac's volatile state on tmpfs, as its default /run/aac is (the cleanup unmounts it).
mount -t tmpfs -o mode=0700 aac-bench-run "$B/aac/run"
trap cleanup EXIT

start_containerd
SOCK=$B/ctrd/c.sock
NS=bench
export CONTAINERD_ADDRESS=$SOCK AAC_NAMESPACE=$NS AAC_RUN_DIR=$B/aac/run AAC_DATA_DIR=$B/aac/data
export AAC_DEFAULT_BRIDGE=aacbench0 AAC_LOG=error
aac() { "$AAC_BIN" "$@"; }
ctr_() { ctr -a "$SOCK" -n "$NS" "$@"; }

# podman asks for nofile=1048576 and nproc=4194304, more than root may set here (no
# CAP_SYS_RESOURCE): keep nofile at our hard limit, and nproc at the 32768 podman itself
# falls back to (runc raises the limit of a process that inherited podman's).
cat >"$B/podman/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$B/podman/events.log"
tmp_dir = "$B/podman/tmp"
EOF
cat >"$B/podman/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$B/podman/root"
runroot = "$B/podman/runroot"
EOF
export CONTAINERS_CONF=$B/podman/containers.conf CONTAINERS_STORAGE_CONF=$B/podman/storage.conf
pod() { podman "$@"; }

# The busybox image, the same bytes for everyone.
log "images"
busybox_rootfs "$B/rootfs"
printf 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >>"$B/rootfs/etc/passwd"
printf 'nogroup:x:65534:\n' >>"$B/rootfs/etc/group"
aac image import --rootfs "$B/rootfs" bench-busybox:latest --cmd /bin/sh --env PATH=/bin >/dev/null
IMG=$(ctr_ images ls -q | grep bench-busybox | head -1)
tar -C "$B/rootfs" -cf "$B/rootfs.tar" .
pod import --change 'ENV PATH=/bin' "$B/rootfs.tar" localhost/bench-busybox:latest >/dev/null

# --- 7. density: aac's own shim ---------------------------------------------------------------
# Everything aac and containerd start per container, $DENSITY idle containers at once: with
# aac's shim (containerd-shim-aac-v2 + the aac-shim monitor) and with runc's Go shim
# (containerd-shim-runc-v2 + aac-shim), against podman's conmon at the same count. Then the
# log throughput through aac's shim. Sizes of the stripped binaries.
density() {
    log "7. density: $DENSITY idle containers (aac shim, runc shim, conmon)"
    local i
    for rt in aac runc; do
        for i in $(seq "$DENSITY"); do
            AAC_CONTAINERD_RUNTIME=$([ $rt = aac ] && echo "$AAC_V2" || echo runc) \
                aac run -d --network none --name "dens-$i" bench-busybox sleep 3600 >/dev/null
        done
        sleep 2
        $PY "$HERE/procmem.py" "$R/mem-dens-$rt-monitor.json" aac-shim "$B/aac/run"
        if [ $rt = aac ]; then
            $PY "$HERE/procmem.py" "$R/mem-dens-$rt-shim.json" containerd-shim-aac-v2 "$B/ctrd"
        else
            $PY "$HERE/procmem.py" "$R/mem-dens-$rt-shim.json" containerd-shim-runc-v2 "$B/ctrd"
        fi
        for i in $(seq "$DENSITY"); do aac rm -f "dens-$i" >/dev/null; done
    done
    for i in $(seq "$DENSITY"); do pod run -d --network none --name "dens-$i" localhost/bench-busybox sleep 3600 >/dev/null; done
    sleep 2
    $PY "$HERE/procmem.py" "$R/mem-dens-conmon.json" conmon "$B/podman"
    pod rm -af -t 0 >/dev/null
    local sizes="{" f t
    for f in "$AAC_BIN" "$AAC_SHIM" "$AAC_V2"; do
        t=$B/stripped.$(basename "$f")
        strip -o "$t" "$f" 2>/dev/null || cp "$f" "$t"
        sizes="$sizes\"$(basename "$f")\": $(stat -c %s "$t"), "
        rm -f "$t"
    done
    echo "${sizes%, }}" >"$R/sizes.json"
}

# --- machine ---------------------------------------------------------------------------------
cgmode() {
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then echo "v2 (unified)";
    elif [ -d /sys/fs/cgroup/unified ]; then echo "hybrid"; else echo "v1 (legacy)"; fi
}
rev=$(git -C "$REPO" rev-parse --short HEAD)
git -C "$REPO" diff --quiet HEAD -- . 2>/dev/null || rev="$rev+dirty"
$PY - "$R/machine.json" <<EOF
import json, sys
json.dump({
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "nproc": "$(nproc)",
  "memory": "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)",
  "kernel": "$(uname -r)",
  "cgroup": "$(cgmode)",
  "cpu": "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)",
  "load": "$(cut -d' ' -f1-3 /proc/loadavg)",
  "aac": "$rev",
  "containerd": "$(containerd --version | awk '{print $3}')",
  "runc": "$(runc --version | awk 'NR==1 {print $3}')",
  "podman": "$(podman --version | awk '{print $3}')",
  "conmon": "$(conmon --version | awk 'NR==1 {print $3}')",
  "bwrap": "$(bwrap --version | awk '{print $2}')",
}, open(sys.argv[1], "w"))
EOF

timeit() { $PY "$HERE/timeit.py" "$@"; }

# The log writer's case (section 4) and the density case (7) share these.
LINE=$(printf '%0100d' 0)
LOG_BYTES=$((LOG_LINES * 101))
logrun() { # tool run-number -> seconds and lines into $R/log-<tool>-<n>.json
    local tool=$1 n=$2 t0 t1 lines file
    t0=$(date +%s.%N)
    case $tool in
    aac)
        id=$(aac run -d --network none --log-opt max-size=2g --name "log-$n" bench-busybox \
            sh -c "yes $LINE | head -n $LOG_LINES")
        aac wait "log-$n" >/dev/null
        t1=$(date +%s.%N)
        file=$B/aac/data/containers/$id/json.log
        lines=$(cat "$file"* | wc -l)
        aac rm -f "log-$n" >/dev/null ;;
    aac-v2)
        id=$(AAC_CONTAINERD_RUNTIME=$AAC_V2 aac run -d --network none --log-opt max-size=2g \
            --name "log-$n" bench-busybox sh -c "yes $LINE | head -n $LOG_LINES")
        aac wait "log-$n" >/dev/null
        t1=$(date +%s.%N)
        file=$B/aac/data/containers/$id/json.log
        lines=$(cat "$file"* | wc -l)
        aac rm -f "log-$n" >/dev/null ;;
    podman)
        file=$B/podman/log-$n.log
        pod run -d --network none --log-driver k8s-file --log-opt "path=$file" --name "log-$n" \
            localhost/bench-busybox sh -c "yes $LINE | head -n $LOG_LINES" >/dev/null
        pod wait "log-$n" >/dev/null
        t1=$(date +%s.%N)
        # k8s-file splits long writes into partial (P) records: count the full (F) ones.
        lines=$(grep -c '^[^ ]* stdout F ' "$file")
        pod rm -f "log-$n" >/dev/null; rm -f "$file" ;;
    raw)
        busybox sh -c "yes $LINE | head -n $LOG_LINES" | cat >"$B/aac/data/raw.out"
        t1=$(date +%s.%N)
        lines=$(wc -l <"$B/aac/data/raw.out")
        rm -f "$B/aac/data/raw.out" ;;
    esac
    echo "{\"seconds\": $(awk "BEGIN {print $t1 - $t0}"), \"lines\": $lines, \"bytes\": $LOG_BYTES, \"expected\": $LOG_LINES}" >"$R/log-$tool-$n.json"
}
if [ "$ONLY" = density ]; then
    density
    log "7. log throughput through aac's shim: $LOG_LINES lines"
    for n in 1 2 3; do logrun raw "$n"; logrun aac-v2 "$n"; logrun aac "$n"; done
    echo "{\"seconds\": $(( $(date +%s) - T0 ))}" >"$R/total.json"
    $PY "$HERE/report.py" "$R" | tee "$OUT"
    exit 0
fi

# --- 1. run --rm /bin/true -------------------------------------------------------------------
log "1. run --rm latency ($RUNS runs each)"
timeit --runs "$RUNS" --out "$R/run-aac.json" -- "$AAC_BIN" run --rm --network none bench-busybox /bin/true
timeit --runs "$RUNS" --out "$R/run-ctr.json" -- ctr -a "$SOCK" -n "$NS" run --rm "$IMG" "ctr-{n}" /bin/true
timeit --runs "$RUNS" --out "$R/run-podman.json" -- podman run --rm --network none localhost/bench-busybox /bin/true
timeit --runs "$RUNS" --out "$R/run-aac-bridge.json" -- "$AAC_BIN" run --rm bench-busybox /bin/true

# --- 2. process backend vs bwrap -------------------------------------------------------------
log "2. process backend vs bwrap"
# The seccomp profile and capabilities aac gives every container (both backends share the
# spec builder), for bwrap.
aac run -d --network none --name specprobe bench-busybox sleep 60 >/dev/null
aac inspect specprobe | $PY -c 'import json,sys; json.dump(json.load(sys.stdin)[0]["Spec"], open(sys.argv[1],"w"))' "$R/process-spec.json"
aac rm -f specprobe >/dev/null
/usr/bin/python3 "$HERE/seccomp_bpf.py" "$R/process-spec.json" "$B/seccomp.bpf" 2>"$R/seccomp-rules.txt"
# bwrap's capabilities: the ones aac keeps (docker's default set).
CAPS=()
for c in $($PY -c 'import json,sys; print(" ".join(json.load(open(sys.argv[1]))["process"]["capabilities"]["bounding"]))' "$R/process-spec.json"); do
    CAPS+=(--cap-add "$c")
done
printf '%s\n' "${CAPS[@]}" | grep -v -- --cap-add | paste -sd' ' >"$R/bwrap-caps.txt"
# aac's process backend gives the agent a user namespace (run by root: a range of the aac
# user's subordinate ids) and a read-only host tree: bwrap gets a user namespace too.
BWRAP=(bwrap --unshare-user --uid 0 --gid 0 --unshare-pid --unshare-ipc --unshare-uts
       --unshare-net --unshare-cgroup-try
       --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp --tmpfs /dev/shm
       --cap-drop ALL "${CAPS[@]}" --new-session --die-with-parent)
echo "${BWRAP[*]} --seccomp 9 /bin/true 9<seccomp.bpf" >"$R/bwrap-cmd.txt"
PROCESS_OK=
if aac run --rm --runtime process --network none /bin/true 2>"$R/process-probe.txt"; then
    PROCESS_OK=1
    timeit --runs "$RUNS" --out "$R/proc-aac.json" -- "$AAC_BIN" run --rm --runtime process --network none /bin/true
fi
timeit --runs "$RUNS" --fd "$B/seccomp.bpf:9" --out "$R/proc-bwrap.json" -- "${BWRAP[@]}" --seccomp 9 /bin/true
timeit --runs "$RUNS" --out "$R/proc-bwrap-plain.json" -- bwrap --unshare-pid --unshare-ipc --unshare-uts --unshare-net --ro-bind / / --dev /dev --proc /proc /bin/true
timeit --runs "$RUNS" --out "$R/proc-sh.json" -- sh -c 'exec /bin/true'

# --- 3. monitor memory with $IDLE idle containers --------------------------------------------
log "3. monitor memory, $IDLE idle containers each"
for i in $(seq "$IDLE"); do ctr_ run -d "$IMG" "idle-$i" sleep 3600 >/dev/null; done
sleep 2
$PY "$HERE/procmem.py" "$R/mem-ctr-shim.json" containerd-shim-runc-v2 "$B/ctrd"
for i in $(seq "$IDLE"); do ctr_ tasks kill -s KILL "idle-$i" >/dev/null; done
sleep 1
for i in $(seq "$IDLE"); do ctr_ tasks rm -f "idle-$i" >/dev/null 2>&1; ctr_ containers rm "idle-$i" >/dev/null; done

for i in $(seq "$IDLE"); do pod run -d --network none --name "idle-$i" localhost/bench-busybox sleep 3600 >/dev/null; done
sleep 2
$PY "$HERE/procmem.py" "$R/mem-conmon.json" conmon "$B/podman"
pod rm -af -t 0 >/dev/null

if [ -n "$PROCESS_OK" ]; then
    for i in $(seq "$IDLE"); do aac run -d --runtime process --network none --name "pidle-$i" /bin/sleep 3600 >/dev/null; done
    sleep 2
    $PY "$HERE/procmem.py" "$R/mem-aac-shim-process.json" aac-shim "$B/aac/run"
    for i in $(seq "$IDLE"); do aac rm -f "pidle-$i" >/dev/null; done
fi

# --- 4. log throughput -----------------------------------------------------------------------
log "4. log throughput: $LOG_LINES lines"
for n in 1 2 3; do logrun raw "$n"; logrun aac "$n"; logrun aac-v2 "$n"; logrun podman "$n"; done

# --- 5. aac ps / stats at scale, and aac-shim memory on containerd -----------------------------
log "5. aac ps and aac stats with $SCALES running containers"
running=0
scale_to() {
    while [ "$running" -lt "$1" ]; do
        running=$((running + 1))
        aac run -d --network none --name "scale-$running" bench-busybox sleep 3600 >/dev/null
    done
}
for s in $SCALES; do
    if [ "$running" -lt "$IDLE" ] && [ "$s" -ge "$IDLE" ]; then
        scale_to "$IDLE"; sleep 2
        $PY "$HERE/procmem.py" "$R/mem-aac-shim.json" aac-shim "$B/aac/run"
        $PY "$HERE/procmem.py" "$R/mem-aac-ctr-shim.json" containerd-shim-runc-v2 "$B/ctrd"
    fi
    scale_to "$s"; sleep 1
    timeit --runs 10 --warmup 2 --out "$R/ps-$s.json" -- "$AAC_BIN" ps
    timeit --runs 10 --warmup 2 --out "$R/stats-prom-$s.json" -- "$AAC_BIN" stats --no-stream --format prometheus
    timeit --runs 3 --warmup 1 --out "$R/stats-table-$s.json" -- "$AAC_BIN" stats --no-stream
done
for i in $(seq "$running"); do aac rm -f "scale-$i" >/dev/null; done

# --- 6. image import -------------------------------------------------------------------------
log "6. image import: busybox + $IMAGE_MIB MiB two-layer docker-save archive"
$PY "$HERE/make_image.py" "$B/rootfs" "$IMAGE_MIB" "$B/big.tar" bench-big:latest 2>"$R/image.txt"
gc='for i in $(ctr -a '"$SOCK"' -n '"$NS"' images ls -q | grep bench-big); do ctr -a '"$SOCK"' -n '"$NS"' images rm --sync "$i"; done'
timeit --runs 5 --warmup 1 --between "$gc" --out "$R/import-aac.json" -- "$AAC_BIN" image import "$B/big.tar"
timeit --runs 5 --warmup 1 --between "$gc" --out "$R/import-ctr.json" -- ctr -a "$SOCK" -n "$NS" images import "$B/big.tar"

density
echo "{\"seconds\": $(( $(date +%s) - T0 ))}" >"$R/total.json"
$PY "$HERE/report.py" "$R" | tee "$OUT"
