#!/usr/bin/env bash
# Builds the Debian 12 guest image of aac's test VM with mmdebstrap (needs root or sudo):
# a raw ext4 root file system (no partition table: the kernel is booted directly) plus the
# guest's vmlinuz and initrd.img, under
#   ${AAC_VM_CACHE:-~/.cache/aac-vm}/image-<key>/{root.img,vmlinuz,initrd.img}
# where <key> hashes this script, vm/provision.sh (the package list and user setup) and
# vm/lib.sh, so the image is rebuilt only when one of them changes. Older images are removed.
#
#   vm/build-image.sh            build if needed; prints the image directory
#   vm/build-image.sh --force    rebuild
set -euo pipefail
source "$(dirname "$0")/lib.sh"

force=0
[ "${1:-}" = --force ] && force=1

key=$(cat "$VM_DIR/build-image.sh" "$VM_DIR/provision.sh" "$VM_DIR/lib.sh" | sha256sum | cut -c1-16)
out="$AAC_VM_CACHE/image-$key"
if [ "$force" -eq 0 ] && [ -f "$out/ok" ]; then
  echo "$out"
  exit 0
fi

[ "$(id -u)" -eq 0 ] || exec sudo --preserve-env=AAC_VM_CACHE "$0" "$@"
apt_install mmdebstrap e2fsprogs qemu-utils

mkdir -p "$AAC_VM_CACHE"
work=$(mktemp -d "$AAC_VM_CACHE/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

mirror=$(apt_mirror bookworm)
security=$(apt_mirror bookworm-security)
start=$(date +%s)
log "mmdebstrap bookworm from $mirror ($(bash "$VM_DIR/provision.sh" packages | tr ',' ' ' | wc -w) packages)"
mmdebstrap --quiet --variant=minbase \
  --include="$(sh "$VM_DIR/provision.sh" packages)" \
  --customize-hook="copy-in $VM_DIR/provision.sh /tmp" \
  --customize-hook='chroot "$1" sh /tmp/provision.sh image' \
  --customize-hook='rm -f "$1/tmp/provision.sh"' \
  --customize-hook='chroot "$1" apt-get clean' \
  bookworm "$work/root" \
  "deb $mirror bookworm main" \
  "deb $mirror bookworm-updates main" \
  "deb $security bookworm-security main"
log "mmdebstrap took $(($(date +%s) - start)) s"

mkdir -p "$work/out"
# /boot/vmlinuz-* is 0600 in Debian; the copies only need to be readable by whoever boots.
cp "$(ls "$work"/root/boot/vmlinuz-* | sort -V | tail -n1)" "$work/out/vmlinuz"
cp "$(ls "$work"/root/boot/initrd.img-* | sort -V | tail -n1)" "$work/out/initrd.img"
chmod 0644 "$work/out/vmlinuz" "$work/out/initrd.img"

qemu-img create -q -f raw "$work/out/root.img" "${AAC_VM_DISK_SIZE:-4G}"
mkfs.ext4 -q -L aacroot -d "$work/root" "$work/out/root.img"
rm -rf "$work/root"

rm -rf "$out"
# Only one image is kept.
for old in "$AAC_VM_CACHE"/image-*; do
  [ -e "$old" ] && [ "$old" != "$out" ] && rm -rf "$old"
done
mv "$work/out" "$out"
date -u +%FT%TZ >"$out/ok"
[ -n "${SUDO_UID:-}" ] && chown -R "$SUDO_UID:$SUDO_GID" "$AAC_VM_CACHE"
log "image built in $(($(date +%s) - start)) s: $out"
echo "$out"
