#!/usr/bin/env bash
# Run the example agent (examples/hello: a busybox HTTP agent on port 8080) on a fresh Debian 12
# machine: installs what it needs, builds aac, then runs the agent on containerd when a
# containerd answers, else with the process backend, and shows it answering.
#
#   examples/run.sh            run it, show the answer, leave it running (aac ps / aac rm -f hello)
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(protobuf-compiler busybox-static containernetworking-plugins iptables curl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo build --release -q -p aac -p aac-shim
aac_bin="$PWD/target/release/aac"
if [ "$(id -u)" -eq 0 ]; then as_root=""; else as_root="sudo "; fi
aac() { sudo_if_needed env AAC_SHIM="$PWD/target/release/aac-shim" "$PWD/target/release/aac" "$@"; }

aac rm -f hello >/dev/null 2>&1 || true
if aac images >/dev/null 2>&1; then
  echo "== containerd answers: running examples/hello as a container"
  if ! grep -qx 'aac-busybox:latest' <<<"$(aac images -q)"; then
    rootfs=$(mktemp -d)
    trap 'rm -rf "$rootfs"' EXIT
    mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc"
    cp /bin/busybox "$rootfs/bin/busybox"
    for applet in $(/bin/busybox --list); do
      [ "$applet" = busybox ] || ln -s busybox "$rootfs/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
    aac image import --rootfs "$rootfs" aac-busybox:latest --cmd /bin/sh --env PATH=/bin
  fi
  aac up -d examples/hello
else
  echo "== no containerd: running examples/hello with the process backend"
  aac up -d --runtime process examples/hello
fi
aac ps
echo "== GET http://127.0.0.1:8080/"
curl -fsS --retry 5 --retry-connrefused --retry-delay 1 http://127.0.0.1:8080/
if command -v aac >/dev/null 2>&1 && [ "$(command -v aac)" -ef "$aac_bin" ]; then
  aac_cmd="${as_root}aac"
else
  # not on PATH: the full command (examples/install.sh puts aac on PATH, with completions)
  aac_cmd="${as_root}$aac_bin"
fi
echo "== it keeps running; stop and remove it with: $aac_cmd rm -f hello"
echo "   (examples/install.sh installs aac on PATH with shell completions and man pages)"
