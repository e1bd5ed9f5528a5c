#!/usr/bin/env bash
# The whole aac test suite on a Debian 12 machine: installs what it needs (as root, or via
# sudo), checks formatting and lints, runs unit and integration tests against a private
# containerd (started by the tests themselves), and fuzzes the agent.yaml parser briefly.
#
#   tests/run.sh              everything
#   AAC_FUZZ_SECONDS=0 tests/run.sh   skip the fuzzing step
#   tests/run.sh --install    only install what the suite needs (CI does this first, so that
#                             nothing else uses apt while the VM step's preparation does)
set -euo pipefail
cd "$(dirname "$0")/.."
case ${1:-} in
  "" | --install) ;;
  *) echo "tests/run.sh: unknown argument $1 (only --install)" >&2; exit 2 ;;
esac

# Each step's line carries the seconds since the start (CI has a time budget: see where it goes).
step() { echo "== $* (at ${SECONDS} s)"; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(containerd runc containernetworking-plugins protobuf-compiler busybox-static iproute2 iptables
          python3 python3-pip python3-prometheus-client docker-registry apache2-utils openssl util-linux
          rootlesskit slirp4netns uidmap curl dnsmasq-base nftables)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  step "installing ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# kubernetes-validate checks the manifests `aac kube generate` writes (runtime/kube/tests);
# the test installs it itself when this step could not, and skips only when pip cannot.
kubernetes_validate=1.37.0
if [ "$(python3 -m kubernetes_validate --version 2>/dev/null || true)" != "$kubernetes_validate" ]; then
  step "pip install kubernetes-validate==$kubernetes_validate"
  python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
      "kubernetes-validate==$kubernetes_validate" ||
    python3 -m pip install --quiet --disable-pip-version-check "kubernetes-validate==$kubernetes_validate" ||
    echo "pip could not install kubernetes-validate: its test will say it skipped"
fi

[ "${1:-}" = --install ] && exit 0

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings

step "cargo build"
# The CLI tests drive target/debug/aac and aac-shim.
cargo build --workspace -q

step "cargo test"
# Integration tests start their own containerd; they need root (or skip with a message).
mkdir -p target
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee target/test.log
status=${PIPESTATUS[0]}
set -e

# The rootless tests as an unprivileged user against its own rootless containerd under
# RootlessKit (vm/guest/rootless-containerd.sh, as in the VM). Needs root to make the user.
if [ "$(id -u)" -eq 0 ]; then
  step "rootless: user aac-rootless, rootless containerd under RootlessKit"
  rl_user=aac-rootless
  id -u "$rl_user" >/dev/null 2>&1 || useradd --create-home --shell /bin/sh "$rl_user"
  rl_uid=$(id -u "$rl_user")
  for f in /etc/subuid /etc/subgid; do
    grep -q "^$rl_user:" "$f" 2>/dev/null || echo "$rl_user:$((200000 + rl_uid * 65536)):65536" >>"$f"
  done
  rl_xdg=/run/user/$rl_uid
  mkdir -p "$rl_xdg" && chown "$rl_user:" "$rl_xdg" && chmod 0700 "$rl_xdg"
  # udev makes /dev/net/tun 0666 on a Debian host; machines without udev may leave it 0600,
  # and slirp4netns needs it.
  [ -c /dev/net/tun ] && chmod 0666 /dev/net/tun
  as_rl=(runuser -u "$rl_user" -- env XDG_RUNTIME_DIR="$rl_xdg" HOME="$(getent passwd "$rl_user" | cut -d: -f6)"
         PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
  "${as_rl[@]}" vm/guest/rootless-containerd.sh >target/rootless-containerd.log 2>&1 &
  rl_pid=$!
  for _ in $(seq 60); do
    [ -S "$rl_xdg/containerd/containerd.sock" ] && [ -f "$rl_xdg/containerd-rootless/child_pid" ] && break
    sleep 0.5
  done
  rl_test=$(ls -t target/debug/deps/rootless-* 2>/dev/null | grep -v '\.d$' | head -n 1)
  if [ -S "$rl_xdg/containerd/containerd.sock" ] && [ -n "$rl_test" ]; then
    set +e
    repo=$(pwd)
    (cd /tmp && "${as_rl[@]}" AAC_BIN_DIR="$repo/target/debug" AAC_ROOTLESS_CONTAINERD=1 \
       "$repo/$rl_test" --test-threads=1) 2>&1 | tee -a target/test.log
    [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
    set -e
  else
    echo "rootless containerd did not start:"; tail -n 20 target/rootless-containerd.log
    echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out" | tee -a target/test.log
    status=1
  fi
  pkill -u "$rl_user" 2>/dev/null || true
  wait "$rl_pid" 2>/dev/null || true
fi

fuzz_seconds=${AAC_FUZZ_SECONDS:-60}
if [ "$fuzz_seconds" -gt 0 ] && [ -d fuzz ] && rustup toolchain list | grep -q nightly; then
  step "fuzzing the agent.yaml parser for ${fuzz_seconds}s"
  command -v cargo-fuzz >/dev/null || cargo install -q cargo-fuzz
  mkdir -p fuzz/corpus/parse_agent
  cp examples/*/agent.yaml fuzz/corpus/parse_agent/ 2>/dev/null || true
  (cd fuzz && cargo +nightly fuzz run parse_agent corpus/parse_agent -- \
      -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 2>&1 | tail -n 3)
fi

# One closing line summing up every test binary.
step "done"
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' target/test.log
exit "$status"
