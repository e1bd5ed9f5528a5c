#!/bin/sh
# A rootless containerd for the calling user, laid out as nerdctl's containerd-rootless.sh
# lays it out (so aac finds it the same way): RootlessKit (slirp4netns network, builtin port
# driver) with its state in $XDG_RUNTIME_DIR/containerd-rootless, containerd's socket at
# $XDG_RUNTIME_DIR/containerd/containerd.sock, its data in ~/.local/share/containerd.
#
#   vm/guest/rootless-containerd.sh        run in the foreground (e.g. under systemd-run --user)
#
# Needs rootlesskit, slirp4netns, uidmap (newuidmap) and a /etc/subuid range for the user.
set -eu
: "${XDG_RUNTIME_DIR:?XDG_RUNTIME_DIR is not set}"
state=$XDG_RUNTIME_DIR/containerd-rootless
data=${XDG_DATA_HOME:-$HOME/.local/share}/containerd

if [ "${_AAC_ROOTLESS_CHILD:-}" != 1 ]; then
  [ "$(id -u)" != 0 ] || { echo "run as the rootless user, not root" >&2; exit 1; }
  mkdir -p "$XDG_RUNTIME_DIR/containerd" "$data"
  export _AAC_ROOTLESS_CHILD=1
  # slirp4netns' default network is 10.0.2.0/24, QEMU's user network too (the VM's own address
  # is 10.0.2.15): inside RootlessKit that address would be on-link and unreachable. Another
  # network when the host has an address in it.
  cidr=10.0.2.0/24
  if ip -4 -o addr show 2>/dev/null | grep -q ' inet 10\.0\.2\.'; then cidr=10.41.2.0/24; fi
  # /etc, /run and /var/lib become writable copies inside (runc's state, iptables' lock).
  exec rootlesskit --state-dir="$state" --net=slirp4netns --mtu=65520 --cidr="$cidr" \
    --slirp4netns-sandbox=auto --slirp4netns-seccomp=auto --disable-host-loopback \
    --port-driver=builtin --copy-up=/etc --copy-up=/run --copy-up=/var/lib \
    --propagation=rslave "$0" "$@"
fi

# Inside RootlessKit: root of its user namespace. The copied-up /run, /var/lib and /etc hold
# symlinks to the host's entries: replace those a rootful containerd has (their owner is
# nobody here) with the user's own, as containerd-rootless.sh does.
rm -f /run/containerd /run/xtables.lock /var/lib/containerd /var/lib/cni /etc/containerd
mkdir -p /run/containerd
mount --bind "$XDG_RUNTIME_DIR/containerd" /run/containerd
config=$XDG_RUNTIME_DIR/containerd/config.toml
cat >"$config" <<EOF
version = 2
root = "$data"
state = "$XDG_RUNTIME_DIR/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$XDG_RUNTIME_DIR/containerd/containerd.sock"
[ttrpc]
  address = "$XDG_RUNTIME_DIR/containerd/containerd.sock.ttrpc"
EOF
rm -f "$XDG_RUNTIME_DIR/containerd/containerd.sock"
exec containerd --config "$config" "$@"
