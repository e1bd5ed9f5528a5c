#!/usr/bin/env bash
# aac's tests in a Debian 12 VM (pure cgroup v2 + systemd, rootful and rootless), under QEMU.
#
#   vm/test.sh                 build aac and the integration tests, boot the VM, run them there
#   vm/test.sh --payload-only  only build and lay out the payload in target/vm/payload (what
#                              the Vagrantfile syncs to /aac)
#   vm/test.sh --prepare       build the payload and the guest image, do not boot (CI runs this
#                              niced beside the host suite, whose tests leave the CPU mostly idle)
#   vm/test.sh --prepared      boot with the payload and image a --prepare run left
#
# Steps: the guest image (vm/build-image.sh, cached under ${AAC_VM_CACHE:-~/.cache/aac-vm});
# `cargo build --release` of aac/aac-shim (those that exist) and the aac-tests integration test
# binaries; a payload disk (ext4 made with mkfs.ext4 -d, label aactest) holding them, the
# repository and vm/guest/; a headless QEMU boot (KVM only if a probe boot works, else TCG)
# whose systemd unit aac-vm-tests.service runs vm/guest/run-tests.sh and powers off; then the
# log and exit code are read back from the payload disk with debugfs. Exits with the guest's
# code (1 if the VM gave none).
#
# Environment: AAC_VM_TIMEOUT (whole VM run, s, default 3000), AAC_VM_MEMORY (MiB, 2048),
# AAC_VM_CPUS (2), AAC_VM_TESTS (a regex of test file names to run, or "all"; by default
# all but $VM_HOST_ONLY), AAC_VM_ACCEL (tcg|kvm: skip the probe), AAC_VM_VERBOSE=1 (stream the
# serial console).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$REPO_DIR"

mode=${1:-all}
case $mode in
  all | --payload-only | --prepare | --prepared) ;;
  *) die "unknown argument $mode (--payload-only, --prepare or --prepared)" ;;
esac
t0=$(date +%s)
timeout_s=${AAC_VM_TIMEOUT:-3000}

metadata=$(cargo metadata --no-deps --format-version 1)
packages=$(python3 -c 'import json,sys; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"]))' <<<"$metadata")
tests_id=$(python3 -c 'import json,sys; print("".join(p["id"] for p in json.load(sys.stdin)["packages"] if p["name"] == "aac-tests"))' <<<"$metadata")
target_dir=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' <<<"$metadata")
payload="$target_dir/vm/payload"

# Test files the VM leaves to the host suite by default: their subject is aac's command line,
# parsers, image store and registry client, or CNI networking, none of which depends on the
# cgroup version, systemd or the kernel the VM adds; under software emulation they took about
# 13 minutes (networking alone 9) of a full run that did not fit 37. `AAC_VM_TESTS=all` runs them.
VM_HOST_ONLY="bad_input|registry|save_load_cli|images|images_cli|login_cli|logs_secrets_cli|docker_cli|networking"

# --- build and payload (a function: --prepared skips it) ---------------------------------
build_payload() {
has_package() { case " $packages " in *" $1 "*) return 0 ;; esac; return 1; }
bin_args=()
for p in aac aac-shim containerd-shim-aac-v2; do has_package "$p" && bin_args+=(-p "$p"); done
if [ "${#bin_args[@]}" -gt 0 ]; then
  log "cargo build --release ${bin_args[*]}"
  cargo build --release -q "${bin_args[@]}"
fi
test_bins=()
if has_package aac-tests; then
  log "cargo test --release -p aac-tests --no-run"
  # Into a file first: a failed build must fail this script (a process substitution would not).
  build_json=$(mktemp)
  cargo test --release -q -p aac-tests --no-run --message-format=json >"$build_json" ||
    { rm -f "$build_json"; die "building the aac-tests test binaries failed"; }
  mapfile -t test_bins < <(python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    if not m.get("profile", {}).get("test") or "test" not in m["target"]["kind"]:
        continue
    if m["package_id"] == sys.argv[1]:
        print(m["executable"])
' "$tests_id" <"$build_json")
  rm -f "$build_json"
  [ "${#test_bins[@]}" -gt 0 ] || die "cargo built no aac-tests test binaries"
fi

rm -rf "$payload"
mkdir -p "$payload/src" "$payload/target/release/deps" "$payload/results"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$payload/src"
ln -s ../target "$payload/src/target"
echo "$REPO_DIR" >"$payload/host-root"
for b in aac aac-shim aac-supervisor containerd-shim-aac-v2; do
  [ -x "$target_dir/release/$b" ] && cp "$target_dir/release/$b" "$payload/target/release/"
done
: >"$payload/tests.list"
for t in "${test_bins[@]}"; do
  # AAC_VM_TESTS: only the test files whose names match this extended regex (say
  # "sandbox|process_backend"), or all; by default all but those in $VM_HOST_ONLY.
  name=$(basename "$t")
  case ${AAC_VM_TESTS:-} in
    all) ;;
    "") [[ "$name" =~ ^(${VM_HOST_ONLY})-[0-9a-f]+$ ]] && continue ;;
    *) [[ "$name" =~ ^(${AAC_VM_TESTS})-[0-9a-f]+$ ]] || continue ;;
  esac
  cp "$t" "$payload/target/release/deps/"
  echo "target/release/deps/$name" >>"$payload/tests.list"
done
chmod -R a+rX "$payload"
log "payload: $(wc -l <"$payload/tests.list") test binaries, $(du -sm "$payload" | cut -f1) MiB in $payload"
}

if [ "$mode" = --prepared ]; then
  [ -s "$payload/tests.list" ] || die "no prepared payload in $payload (run vm/test.sh --prepare)"
  log "prepared payload: $(wc -l <"$payload/tests.list") test binaries in $payload"
else
  build_payload
fi
t_build=$(date +%s)
[ "$mode" = --payload-only ] && exit 0

# --- image and QEMU --------------------------------------------------------------------
ensure_qemu || die "qemu-system-x86_64 is not available and could not be installed"
image=$("$VM_DIR/build-image.sh" | tail -n1)
[ -f "$image/root.img" ] || die "no image in $image"
t_image=$(date +%s)
if [ "$mode" = --prepare ]; then
  log "prepared in $((t_image - t0)) s: payload $payload, image $image"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/aac-vm.XXXXXX")
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ] && kill -0 "$qemu_pid" 2>/dev/null; then
    kill "$qemu_pid" 2>/dev/null || true
    wait "$qemu_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

disk="$work/payload.img"
size=$(($(du -sm "$payload" | cut -f1) + 256))
qemu-img create -q -f raw "$disk" "${size}M"
mkfs.ext4 -q -L aactest -d "$payload" "$disk"

read -r -a accel <<<"$(accel_args "$image/vmlinuz")"
guest_timeout=$((timeout_s - 180))
log "booting the VM (${accel[*]}, ${AAC_VM_MEMORY:-2048} MiB, ${AAC_VM_CPUS:-2} CPUs, timeout ${timeout_s}s)"
console="$work/console.log"
: >"$console"
t_boot=$(date +%s)
timeout -k 10 "$timeout_s" qemu-system-x86_64 "${accel[@]}" \
  -m "${AAC_VM_MEMORY:-2048}" -smp "${AAC_VM_CPUS:-2}" \
  -display none -monitor none -serial "file:$console" -no-reboot \
  -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 loglevel=4 aac.test aac.timeout=$guest_timeout" \
  -drive "file=$image/root.img,format=raw,if=virtio,snapshot=on" \
  -drive "file=$disk,format=raw,if=virtio" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 </dev/null &
qemu_pid=$!
if [ "${AAC_VM_VERBOSE:-0}" = 1 ]; then
  tail -n +1 -f --pid="$qemu_pid" "$console" &
fi
# Note when the tests start (host clock) while waiting.
t_tests=""
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [ -z "$t_tests" ] && grep -q "AAC-VM: tests start" "$console" 2>/dev/null; then t_tests=$(date +%s); fi
  sleep 1
done
qemu_rc=0
wait "$qemu_pid" || qemu_rc=$?
qemu_pid=""
t_end=$(date +%s)

# --- results ---------------------------------------------------------------------------
read_file() { debugfs -R "cat $1" "$disk" 2>/dev/null; }
code=$(read_file /results/exit | tr -dc '0-9')
log_text=$(read_file /results/log)
if [ -n "$log_text" ]; then
  printf '%s\n' "$log_text"
else
  echo "-- no test log on the payload disk; last lines of the serial console:"
  tail -n 60 "$console"
fi
[ "$qemu_rc" -eq 124 ] && echo "vm: QEMU killed after ${timeout_s}s"
echo
echo "vm timings: build $((t_build - t0)) s, image $((t_image - t_build)) s, boot to tests" \
  "$([ -n "$t_tests" ] && echo "$((t_tests - t_boot)) s" || echo "n/a"), VM run $((t_end - t_boot)) s," \
  "total $((t_end - t0)) s (${accel[*]})"
# The guest's one closing line last.
grep '^vm: [0-9]* passed' <<<"$log_text" | tail -n1 || true
if [ -z "$code" ]; then
  echo "vm: the guest left no exit code"
  exit 1
fi
exit "$code"
