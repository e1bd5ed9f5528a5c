#!/usr/bin/env bash
# The whole aac test suite on a Debian 12 machine: installs what it needs (as root, or via
# sudo), checks formatting and lints, runs unit and integration tests against a private
# containerd (started by the tests themselves), and fuzzes the agent.yaml parser briefly.
#
#   tests/run.sh              everything
#   AAC_FUZZ_SECONDS=0 tests/run.sh   skip the fuzzing step
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(containerd runc containernetworking-plugins protobuf-compiler busybox-static iproute2 iptables
          python3 python3-pip python3-prometheus-client docker-registry apache2-utils openssl util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings

echo "== cargo build"
# The CLI tests drive target/debug/aac and aac-shim.
cargo build --workspace -q

echo "== cargo test"
# Integration tests start their own containerd; they need root (or skip with a message).
mkdir -p target
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee target/test.log
status=${PIPESTATUS[0]}
set -e

fuzz_seconds=${AAC_FUZZ_SECONDS:-60}
if [ "$fuzz_seconds" -gt 0 ] && [ -d fuzz ] && rustup toolchain list | grep -q nightly; then
  echo "== fuzzing the agent.yaml parser for ${fuzz_seconds}s"
  command -v cargo-fuzz >/dev/null || cargo install -q cargo-fuzz
  mkdir -p fuzz/corpus/parse_agent
  cp examples/*/agent.yaml fuzz/corpus/parse_agent/ 2>/dev/null || true
  (cd fuzz && cargo +nightly fuzz run parse_agent corpus/parse_agent -- \
      -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 2>&1 | tail -n 3)
fi

# One closing line summing up every test binary.
awk '/^test result:/ { p += $4; f += $6; s += $8 } END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' target/test.log
exit "$status"
