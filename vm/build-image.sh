#!/usr/bin/env bash
# Builds the Debian 12 guest image of aac's test VM with mmdebstrap (needs root or sudo):
# a raw ext4 root file system (no partition table: the kernel is booted directly) plus the
# guest's vmlinuz and initrd.img, under
#   ${AAC_VM_CACHE:-~/.cache/aac-vm}/image-<key>/{root.img,vmlinuz,initrd.img}
# where <key> hashes this script, vm/provision.sh (the package list and user setup) and
# vm/lib.sh, so the image is rebuilt only when one of them changes. Older images are removed.
#
#   vm/build-image.sh                build if needed; prints the image directory
#   vm/build-image.sh --force        rebuild
#   vm/build-image.sh --vagrant-box  a libvirt Vagrant box of the same system plus openssh-server,
#                                    rsync and the user vagrant (insecure key, passwordless sudo),
#                                    in ${AAC_VM_CACHE}/vagrant-<key>/ (aac-debian12.box, and
#                                    vmlinuz, initrd.img for lv.kernel/lv.initrd: it has no boot
#                                    loader); prints that directory
set -euo pipefail
source "$(dirname "$0")/lib.sh"

force=0 box=0
case ${1:-} in
  --force) force=1 ;;
  --vagrant-box) box=1 ;;
esac

key=$(cat "$VM_DIR/build-image.sh" "$VM_DIR/provision.sh" "$VM_DIR/lib.sh" | sha256sum | cut -c1-16)
out="$AAC_VM_CACHE/image-$key"
extra_include="" extra_hooks=()
if [ "$box" -eq 1 ]; then
  out="$AAC_VM_CACHE/vagrant-$key"
  extra_include=",openssh-server,rsync"
  pub=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | tail -n1)
  [ -n "$pub" ] || die "no vagrant insecure public key: install vagrant first"
  extra_hooks=(
    --customize-hook='chroot "$1" useradd --create-home --shell /bin/bash vagrant'
    --customize-hook="mkdir -p \"\$1/home/vagrant/.ssh\" && cp $pub \"\$1/home/vagrant/.ssh/authorized_keys\""
    --customize-hook='chroot "$1" chown -R vagrant: /home/vagrant/.ssh && chmod 0700 "$1/home/vagrant/.ssh"'
    --customize-hook='echo "vagrant ALL=(ALL) NOPASSWD: ALL" > "$1/etc/sudoers.d/vagrant" && chmod 0440 "$1/etc/sudoers.d/vagrant"'
    --customize-hook='echo "UseDNS no" > "$1/etc/ssh/sshd_config.d/vagrant.conf"'
  )
fi
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
  --include="$(sh "$VM_DIR/provision.sh" packages)$extra_include" \
  --customize-hook="copy-in $VM_DIR/provision.sh /tmp" \
  --customize-hook='chroot "$1" sh /tmp/provision.sh image' \
  "${extra_hooks[@]}" \
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
if [ "$box" -eq 1 ]; then
  qemu-img convert -O qcow2 "$work/out/root.img" "$work/out/box.img"
  rm "$work/out/root.img"
  echo '{"provider": "libvirt", "format": "qcow2", "virtual_size": 4}' >"$work/out/metadata.json"
  printf '%s\n' 'Vagrant.configure("2") do |config|' \
    '  config.vm.provider :libvirt do |lv|' '    lv.disk_bus = "virtio"' '  end' 'end' \
    >"$work/out/Vagrantfile"
  tar -C "$work/out" -cf "$work/out/aac-debian12.box" metadata.json Vagrantfile box.img
  rm "$work/out/box.img" "$work/out/metadata.json" "$work/out/Vagrantfile"
fi

rm -rf "$out"
# Only one image (and one box) is kept.
for old in "$AAC_VM_CACHE/$(basename "${out%-*}")"-*; do
  [ -e "$old" ] && [ "$old" != "$out" ] && rm -rf "$old"
done
mv "$work/out" "$out"
date -u +%FT%TZ >"$out/ok"
[ -n "${SUDO_UID:-}" ] && chown -R "$SUDO_UID:$SUDO_GID" "$AAC_VM_CACHE"
log "$([ "$box" -eq 1 ] && echo box || echo image) built in $(($(date +%s) - start)) s: $out"
echo "$out"
