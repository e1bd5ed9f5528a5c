#!/bin/bash
# aac's tests inside the Debian 12 test VM (pure cgroup v2, systemd), as root; the rootless
# part runs as the test user `aac` in its systemd user instance (cgroup delegation).
#
# The payload (made by vm/test.sh, a disk mounted at /aac in the VM or the synced folder of
# the Vagrantfile) is $AAC_VM_DIR (default /aac):
#   tests.list          test binaries, paths relative to $AAC_VM_DIR, one a line
#   host-root           the workspace path on the build host (tests may embed it at compile time)
#   src/                the repository's files; src/target -> ../target
#   target/release/     aac, aac-shim (when built) and deps/<test binaries>
#
# Test binaries run with --test-threads=1, each under a timeout. Binaries whose name starts
# with "rootless" (from tests/tests/rootless*.rs) also run as user aac with AAC_ROOTLESS=1.
# Ends with one line "vm: N passed, N failed, N skipped" and exits 1 if anything failed.
set -uo pipefail

AAC_VM_DIR=${AAC_VM_DIR:-/aac}
TEST_TIMEOUT=${AAC_VM_TEST_TIMEOUT:-600}
# Under software emulation a container start costs ~20x the host's: the stress test that runs
# 50 containers on the host (networking.rs) runs 10 here when it runs here at all
# (AAC_VM_TESTS=all: by default vm/test.sh leaves networking to the host).
export AAC_TEST_CONTAINERS_EACH=${AAC_TEST_CONTAINERS_EACH:-2}
USER_NAME=aac
passed=0 failed=0 skipped=0
failures=()

section() { printf '\n===== %s\n' "$*"; }
ok() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAILED: $*"; failed=$((failed + 1)); failures+=("$*"); }

# Adds the counts of cargo's "test result:" lines in file $1.
count_results() {
  local p f i
  read -r p f i < <(awk '/^test result:/ { p += $4; f += $6; i += $8 } END { print p + 0, f + 0, i + 0 }' "$1")
  passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + i))
}

# Runs test binary $2 (absolute) as described by label $1 with the rest of the arguments as a
# command prefix; counts its results; a binary that fails without a failing test counts once.
run_binary() {
  local label=$1 bin=$2
  shift 2
  local out rc
  out=$(mktemp)
  echo "--- $label: $(basename "$bin")"
  timeout -k 10 "$TEST_TIMEOUT" "$@" "$bin" --test-threads=1 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  local before=$failed
  count_results "$out"
  if [ "$rc" -ne 0 ] && [ "$failed" -eq "$before" ]; then
    fail "$label $(basename "$bin") exited $rc$([ "$rc" -eq 124 ] && echo " (timeout ${TEST_TIMEOUT}s)")"
  elif [ "$rc" -ne 0 ]; then
    failures+=("$label $(basename "$bin")")
  fi
  rm -f "$out"
}

section "environment"
echo "kernel:      $(uname -r)"
echo "cgroup fs:   $(stat -fc %T /sys/fs/cgroup)"
echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null)"
echo "systemd:     $(systemctl --version | head -n1)"
echo "containerd:  $(containerd --version 2>&1)"
echo "runc:        $(runc --version 2>&1 | head -n1)"
echo "cpus:        $(nproc), memory: $(awk '/MemTotal/ { print int($2 / 1024) " MiB" }' /proc/meminfo)"
echo "payload:     $AAC_VM_DIR ($(wc -l <"$AAC_VM_DIR/tests.list" 2>/dev/null || echo 0) test binaries)"
if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then ok "pure cgroup v2"; else fail "cgroup v2 not mounted at /sys/fs/cgroup"; fi

# Tests may refer to the workspace by the path it had on the build host (env!("CARGO_..."));
# make that path lead to the payload's copy.
if [ -f "$AAC_VM_DIR/host-root" ]; then
  host_root=$(cat "$AAC_VM_DIR/host-root")
  if [ -n "$host_root" ] && [ ! -e "$host_root" ]; then
    mkdir -p "$(dirname "$host_root")"
    ln -s "$AAC_VM_DIR/src" "$host_root"
  fi
fi
export PATH="$AAC_VM_DIR/target/release:$PATH"

section "containerd"
systemctl start containerd.service
for _ in $(seq 60); do
  ctr version >/dev/null 2>&1 && break
  sleep 1
done
if ctr version >/dev/null 2>&1; then ok "system containerd answers"; else fail "system containerd does not answer"; fi

section "aac system check"
aac system check
check_json=$(aac system check --format json 2>&1)
if echo "$check_json" | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["cgroup"]["mode"] == "unified", r["cgroup"]["mode"]
assert r["cgroup"]["driver"] == {"driver": "systemd", "slice": "system.slice"}, r["cgroup"]["driver"]
assert r["containerd"]["reachable"], r["containerd"]
assert r["auto_backend"]["backend"] == "containerd", r["auto_backend"]
'; then
  ok "aac system check: cgroup v2, systemd driver, containerd reachable"
else
  fail "aac system check does not report cgroup v2 + systemd driver + containerd"
fi

section "cgroup v2 limits from inside a container"
smoke_rootfs=$(mktemp -d)
mkdir -p "$smoke_rootfs"/{bin,proc,sys,dev,tmp,etc}
cp /bin/busybox "$smoke_rootfs/bin/busybox"
ln -s busybox "$smoke_rootfs/bin/sh"
# Reads its memory.max (with or without a cgroup namespace), then holds 200 MB in a shell variable: must be OOM-killed under 64M.
smoke_cmd='cg=$(busybox cut -d: -f3 /proc/self/cgroup); for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup$cg/memory.max; do [ -r $f ] && { busybox cat $f; break; }; done || { echo "no memory.max; cgroup $cg"; busybox grep cgroup /proc/self/mountinfo; busybox ls /sys/fs/cgroup; }
x=$(busybox head -c 200000000 /dev/zero | busybox tr "\000" a); echo survived ${#x}'
aac image import --rootfs "$smoke_rootfs" aac-busybox:latest
out=$(timeout 120 aac run --name oom-check --memory 64m aac-busybox:latest /bin/busybox sh -c "$smoke_cmd" 2>&1)
rc=$?
tool="aac run --memory 64m"
echo "$out"
case $out in
  67108864*) ok "$tool: memory.max is 64 MiB inside" ;;
  *) fail "$tool: memory.max inside is not 67108864" ;;
esac
if [ "$rc" -eq 137 ]; then ok "$tool: over-allocation OOM-killed (137)"; else fail "$tool: over-allocation exited $rc, want 137"; fi
if aac inspect oom-check >/tmp/oom-check.json && grep -q '"OOMKilled": true' /tmp/oom-check.json; then
  ok "aac inspect reports OOMKilled"
else
  fail "aac inspect does not report OOMKilled"
fi
aac rm -f oom-check >/dev/null 2>&1

section "systemd cgroup driver"
# systemd is PID 1 on cgroup v2: aac creates containers with runc's systemd driver, so the
# container is the scope system.slice/aac-<id>.scope; its memory.max read from the host side.
if aac run -d --name sd-check --memory 64m aac-busybox:latest /bin/busybox sleep 120 >/dev/null; then
  sd_id=$(aac inspect sd-check | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["Id"])')
  scope=/sys/fs/cgroup/system.slice/aac-$sd_id.scope
  echo "container $sd_id; scope $scope"
  ls -d /sys/fs/cgroup/system.slice/aac-*.scope 2>/dev/null
  mem=$(cat "$scope/memory.max" 2>/dev/null)
  if [ "$mem" = 67108864 ]; then
    ok "aac run --memory 64m: $scope/memory.max is 67108864"
  else
    fail "aac run --memory 64m: $scope/memory.max is '${mem:-missing}', want 67108864"
  fi
  if systemctl is-active --quiet "aac-$sd_id.scope"; then ok "systemd knows aac-$sd_id.scope"; else fail "systemd has no active aac-$sd_id.scope"; fi
  aac rm -f sd-check >/dev/null 2>&1
  if [ ! -d "$scope" ]; then ok "the scope is gone after aac rm -f"; else fail "$scope remains after aac rm -f"; fi
else
  fail "aac run -d --memory 64m (systemd driver) failed"
fi
rm -rf "$smoke_rootfs"

section "integration tests as root"
mapfile -t bins < <(grep -v '^[[:space:]]*$' "$AAC_VM_DIR/tests.list" 2>/dev/null)
[ "${#bins[@]}" -eq 0 ] && echo "(no test binaries in the payload)"
workdir=$(mktemp -d)
chmod 0755 "$workdir"
cd "$workdir" || exit 1
for rel in "${bins[@]}"; do
  run_binary root "$AAC_VM_DIR/$rel"
done
cd / || exit 1

section "rootless: user $USER_NAME"
uid=$(id -u "$USER_NAME")
for _ in $(seq 60); do
  systemctl is-active --quiet "user@$uid.service" && break
  sleep 1
done
as_user=(runuser -u "$USER_NAME" -- env XDG_RUNTIME_DIR="/run/user/$uid"
  DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$uid/bus" HOME="/home/$USER_NAME")
as_user() { "${as_user[@]}" "$@"; }
if systemctl is-active --quiet "user@$uid.service"; then ok "user@$uid.service runs (linger)"; else fail "user@$uid.service is not active"; fi
echo "--- aac system check as $USER_NAME"
as_user aac system check
delegated=$(cat "/sys/fs/cgroup/user.slice/user-$uid.slice/user@$uid.service/cgroup.controllers" 2>/dev/null)
echo "delegated controllers: $delegated"
case " $delegated " in *" memory "*) ok "memory controller delegated to $USER_NAME" ;; *) fail "memory controller not delegated to $USER_NAME" ;; esac
if as_user systemd-run --user --quiet --scope -p MemoryMax=64M true; then
  ok "systemd-run --user --scope -p MemoryMax=64M true"
else
  fail "systemd-run --user --scope -p MemoryMax=64M true"
fi
as_user systemd-run --user --quiet --scope -p MemoryMax=64M -p MemorySwapMax=0 \
  python3 -c 'b = bytearray(200 << 20); print("survived", len(b))'
rc=$?
if [ "$rc" -eq 137 ]; then ok "rootless scope with MemoryMax=64M: over-allocation OOM-killed"; else fail "rootless scope over-allocation exited $rc, want 137"; fi

echo "--- rootless containerd (RootlessKit) for $USER_NAME"
rootless_sock=/run/user/$uid/containerd/containerd.sock
as_user systemd-run --user --quiet --collect --unit aac-rootless-containerd \
  "$AAC_VM_DIR/src/vm/guest/rootless-containerd.sh"
for _ in $(seq 90); do
  [ -S "$rootless_sock" ] && [ -f "/run/user/$uid/containerd-rootless/child_pid" ] && break
  sleep 1
done
if [ -S "$rootless_sock" ]; then
  ok "rootless containerd listens at $rootless_sock"
  as_user aac system check | grep -i containerd
else
  fail "rootless containerd did not start"
  journalctl --no-pager _SYSTEMD_USER_UNIT=aac-rootless-containerd.service | tail -n 40
fi

rootless=()
for rel in "${bins[@]}"; do
  case $(basename "$rel") in rootless*) rootless+=("$rel") ;; esac
done
[ "${#rootless[@]}" -eq 0 ] && echo "(no rootless-capable test binaries yet: tests/tests/rootless*.rs)"
userdir=$(mktemp -d)
chown "$USER_NAME:" "$userdir"
cd "$userdir" || exit 1
for rel in "${rootless[@]}"; do
  run_binary rootless "$AAC_VM_DIR/$rel" "${as_user[@]}" AAC_ROOTLESS=1 AAC_ROOTLESS_CONTAINERD=1 \
    systemd-run --user --quiet --scope -p Delegate=yes --
done
cd / || exit 1
as_user systemctl --user stop aac-rootless-containerd.service 2>/dev/null
rm -rf "$workdir" "$userdir"

section "summary"
for f in "${failures[@]}"; do echo "failed: $f"; done
echo "vm: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
