#!/usr/bin/env bash
# CI's VM step (after the host suite): runs vm/test.sh [its argument] when QEMU can be used
# here, else says why and exits 0. AAC_VM=0 skips it; AAC_VM=1 makes a missing QEMU an error.
set -uo pipefail
source "$(dirname "$0")/lib.sh"

skip() {
  echo "vm: skipped: $*"
  if [ "${AAC_VM:-}" = 1 ]; then exit 1; fi
  exit 0
}

[ "${AAC_VM:-}" = 0 ] && skip "AAC_VM=0"
[ "$(uname -m)" = x86_64 ] || skip "not an x86_64 host"
if [ "$(id -u)" -ne 0 ] && ! sudo -n true 2>/dev/null; then
  skip "building the guest image needs root or passwordless sudo"
fi
command -v apt-get >/dev/null || command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64 and no apt-get"
ensure_qemu || skip "qemu-system-x86 could not be installed"
if ! qemu-system-x86_64 -accel help 2>/dev/null | grep -qx tcg; then
  skip "this qemu-system-x86_64 has no TCG"
fi
mkdir -p "$AAC_VM_CACHE" 2>/dev/null || true
avail_mb=$(df -Pm "$AAC_VM_CACHE" 2>/dev/null | awk 'NR == 2 { print $4 }')
[ -n "$avail_mb" ] && [ "$avail_mb" -lt 6000 ] && skip "less than 6 GB free for the VM image"

exec "$VM_DIR/test.sh" "$@"
