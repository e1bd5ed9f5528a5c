#!/bin/sh
# Provisions a Debian 12 test machine for aac: the one place that lists the guest's packages
# and sets up the test user. Used by vm/build-image.sh (inside the image's chroot) and by the
# Vagrantfile's shell provisioner (on a running Debian 12 box).
#
#   provision.sh packages   print the package list (one line, comma separated)
#   provision.sh image      inside a chroot made by mmdebstrap: user + image-only files
#                           (hosts, hostname, fstab, network, the boot-time test unit)
#   provision.sh vagrant    on a booted box: install missing packages, user, linger now
set -eu

PACKAGES="linux-image-amd64 systemd-sysv udev dbus dbus-user-session libpam-systemd containerd
runc containernetworking-plugins busybox-static rootlesskit slirp4netns uidmap iproute2 iptables nftables
python3 python3-prometheus-client procps util-linux sudo kmod ca-certificates e2fsprogs"

TEST_USER=aac

packages() { echo $PACKAGES | tr ' ' ','; }

install_packages() {
  missing=""
  for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  echo "provision: installing$missing"
  apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

# The test user: uid 1000 when free (a Vagrant box's own user usually has it), a 65536-id
# subordinate range, passwordless sudo, lingering so that its systemd instance (with cgroup
# delegation) runs from boot on.
setup_user() {
  if ! id "$TEST_USER" >/dev/null 2>&1; then
    if getent passwd 1000 >/dev/null; then
      useradd --create-home --shell /bin/bash "$TEST_USER"
    else
      useradd --create-home --shell /bin/bash --uid 1000 "$TEST_USER"
    fi
  fi
  touch /etc/subuid /etc/subgid
  for f in /etc/subuid /etc/subgid; do
    if ! grep -q "^$TEST_USER:" "$f"; then
      start=100000
      while grep -q ":$start:" "$f"; do start=$((start + 65536)); done
      echo "$TEST_USER:$start:65536" >>"$f"
    fi
  done
  echo "$TEST_USER ALL=(ALL) NOPASSWD: ALL" >/etc/sudoers.d/aac
  chmod 0440 /etc/sudoers.d/aac
  mkdir -p /var/lib/systemd/linger
  touch "/var/lib/systemd/linger/$TEST_USER"
  # Delegate every controller to user sessions (systemd 252 delegates only memory, pids and
  # cpu by default; rootless containers want cpuset and io too).
  mkdir -p /etc/systemd/system/user@.service.d
  cat >/etc/systemd/system/user@.service.d/delegate.conf <<'EOF'
[Service]
Delegate=cpu cpuset io memory pids
EOF
}

# Files only the built image needs (a Vagrant box has its own).
setup_image() {
  echo aac-vm >/etc/hostname
  cat >/etc/hosts <<'EOF'
127.0.0.1	localhost
127.0.1.1	aac-vm
::1		localhost ip6-localhost ip6-loopback
EOF
  echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >/etc/fstab
  # DHCP on QEMU's user-mode network.
  mkdir -p /etc/systemd/network
  cat >/etc/systemd/network/50-dhcp.network <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=yes
EOF
  systemctl enable systemd-networkd.service >/dev/null 2>&1
  echo "nameserver 10.0.2.3" >/etc/resolv.conf # QEMU user-mode network's DNS
  # Nothing else may compete with the tests for the emulated CPUs.
  systemctl mask apt-daily.timer apt-daily-upgrade.timer fstrim.timer e2scrub_all.timer >/dev/null 2>&1 || true
  # Root logs in on the serial console without a password (a throw-away test machine).
  passwd -d root >/dev/null

  # The boot-time test run: only when the kernel command line says aac.test (vm/test.sh boots
  # with it and attaches the payload disk, label aactest, as /dev/vdb).
  mkdir -p /usr/local/lib/aac-vm
  cat >/usr/local/lib/aac-vm/boot-tests.sh <<'EOF'
#!/bin/bash
# Mounts the payload disk, runs its vm/guest/run-tests.sh, leaves log and exit code on it,
# powers off.
timeout_s=1200
for arg in $(cat /proc/cmdline); do
  case $arg in aac.timeout=*) timeout_s=${arg#aac.timeout=} ;; esac
done
mkdir -p /aac
status=0
if mount LABEL=aactest /aac 2>/dev/null || mount /dev/vdb /aac; then
  mkdir -p /aac/results
  echo "AAC-VM: tests start $(cut -d' ' -f1 /proc/uptime)s after boot"
  timeout -k 10 "$timeout_s" bash /aac/src/vm/guest/run-tests.sh 2>&1 | tee /aac/results/log
  status=${PIPESTATUS[0]}
  [ "$status" -eq 124 ] && echo "AAC-VM: run-tests.sh timed out after ${timeout_s}s" | tee -a /aac/results/log
  echo "$status" >/aac/results/exit
  sync
  umount /aac
else
  echo "AAC-VM: no payload disk"
  status=1
fi
echo "AAC-VM: done, exit $status"
systemctl poweroff --no-block
EOF
  chmod 0755 /usr/local/lib/aac-vm/boot-tests.sh
  cat >/etc/systemd/system/aac-vm-tests.service <<'EOF'
[Unit]
Description=aac VM test run (vm/guest/run-tests.sh from the payload disk)
ConditionKernelCommandLine=aac.test
After=systemd-user-sessions.service user@1000.service containerd.service systemd-networkd.service
Wants=containerd.service

[Service]
Type=oneshot
ExecStart=/usr/local/lib/aac-vm/boot-tests.sh
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
  systemctl enable aac-vm-tests.service >/dev/null 2>&1
}

case ${1:-} in
  packages) packages ;;
  image)
    setup_user
    setup_image
    ;;
  vagrant)
    install_packages
    setup_user
    systemctl daemon-reload
    loginctl enable-linger "$TEST_USER"
    ;;
  *)
    echo "usage: $0 packages|image|vagrant" >&2
    exit 2
    ;;
esac
