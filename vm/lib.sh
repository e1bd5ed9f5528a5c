# Shared helpers of the vm/ scripts (sourced, not run).
# shellcheck shell=bash

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$VM_DIR/.." && pwd)
AAC_VM_CACHE=${AAC_VM_CACHE:-${HOME:-/root}/.cache/aac-vm}

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'vm: %s\n' "$*" >&2; exit 1; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# The Debian mirror (and security mirror) the host's apt uses, as "URI" strings; falls back
# to deb.debian.org.
apt_mirror() {
  local want=$1 uri=""
  # deb822 .sources files: a URIs: line followed (in the same stanza) by Suites: with $want.
  uri=$(awk -v want="$want" '
      /^[[:space:]]*$/ { u = ""; s = ""; next }
      /^URIs:/ { u = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) s = 1 }
      u != "" && s { print u; exit }' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
  if [ -z "$uri" ] && [ -r /etc/apt/sources.list ]; then
    uri=$(awk -v want="$want" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1) == want) { print $i; exit } } }' \
      /etc/apt/sources.list)
  fi
  if [ -z "$uri" ]; then
    case $want in
      *-security) uri=http://deb.debian.org/debian-security ;;
      *) uri=http://deb.debian.org/debian ;;
    esac
  fi
  printf '%s\n' "$uri"
}

# Installs Debian packages that are missing (quietly). Package names may carry "/suite".
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "${p%%/*}" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  log "installing ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# qemu-system-x86_64. On Debian 12 hosts that carry qemu-utils from bookworm-backports (as
# this project's machines do) the bookworm qemu-system-x86 conflicts with it, so it comes from
# backports too, through a private sources dir (the host's apt configuration is not changed).
ensure_qemu() {
  command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null && return 0
  command -v apt-get >/dev/null || { echo "no apt-get to install qemu-system-x86"; return 1; }
  local parts target=()
  parts=$(mktemp -d)
  cp /etc/apt/sources.list.d/*.sources "$parts/" 2>/dev/null || true
  [ -r /etc/apt/sources.list ] && cp /etc/apt/sources.list "$parts/main.list"
  cat >"$parts/aac-backports.sources" <<EOF
Types: deb
URIs: $(apt_mirror bookworm)
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  if dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null | grep -q bpo; then
    target=(-t bookworm-backports)
  fi
  log "installing qemu-system-x86 ${target[*]}"
  local rc=0
  sudo_if_needed apt-get update -qq -o Dir::Etc::sourceparts="$parts" -o Dir::Etc::sourcelist=/dev/null &&
    sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      -o Dir::Etc::sourceparts="$parts" -o Dir::Etc::sourcelist=/dev/null "${target[@]}" \
      qemu-system-x86 qemu-utils >/dev/null || rc=$?
  rm -rf "$parts"
  [ "$rc" -eq 0 ] && command -v qemu-system-x86_64 >/dev/null
}

# Prints the -accel/-cpu arguments: KVM only when the guest kernel ($1) really boots under it
# (a probe boot without a root file system must reach the kernel's "VFS: Unable to mount root"
# panic within 30 s), else TCG. A nested KVM that merely opens (like kvm_pvm) crashes a stock
# kernel early and so fails the probe. AAC_VM_ACCEL=tcg or =kvm skips the probe.
accel_args() {
  local kernel=$1 accel=${AAC_VM_ACCEL:-}
  if [ -z "$accel" ]; then
    accel=tcg
    if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
      if timeout -k 5 30 qemu-system-x86_64 -accel kvm -cpu host -m 256 -display none \
          -monitor none -serial stdio -no-reboot -kernel "$kernel" \
          -append "console=ttyS0 root=/dev/aac-no-such-disk panic=-1" </dev/null 2>/dev/null |
          grep -q "Unable to mount root"; then
        accel=kvm
      fi
    fi
  fi
  if [ "$accel" = kvm ]; then
    echo "-accel kvm -cpu host"
  else
    echo "-accel tcg,thread=multi -cpu max"
  fi
}
