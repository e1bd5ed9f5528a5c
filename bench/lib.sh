# Shared by the bench scripts (sourced): a private containerd under $B/ctrd, and the busybox
# test image under $B/rootfs.

# start_containerd: write $B/ctrd/config.toml, start containerd on $B/ctrd/c.sock (CTRD_PID).
start_containerd() {
    mkdir -p "$B/ctrd"
    cat >"$B/ctrd/config.toml" <<EOF
version = 2
root = "$B/ctrd/root"
state = "$B/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.tracing",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$B/ctrd/c.sock"
[ttrpc]
  address = "$B/ctrd/t.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$B/ctrd/opt"
EOF
    containerd --config "$B/ctrd/config.toml" >"$B/ctrd/containerd.log" 2>&1 &
    CTRD_PID=$!
    for _ in $(seq 100); do [ -S "$B/ctrd/c.sock" ] && break; sleep 0.1; done
}

# busybox_rootfs DIR: a minimal root file system of static busybox.
busybox_rootfs() {
    mkdir -p "$1/bin" "$1/"{etc,proc,sys,dev,tmp,root}
    cp /usr/bin/busybox "$1/bin/busybox"
    for a in $(busybox --list); do [ "$a" = busybox ] || ln -s busybox "$1/bin/$a"; done
    chmod 1777 "$1/tmp"
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$1/etc/passwd"
    printf 'root:x:0:\n' >"$1/etc/group"
}
