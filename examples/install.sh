#!/usr/bin/env bash
# Install aac and aac-shim with their shell completions (bash, zsh, fish) and man pages, all
# generated from the CLI definition by the binary itself.
#
#   examples/install.sh              build (release) and install under /usr/local
#   PREFIX=$HOME/.local examples/install.sh   install for one user, no root needed
#   AAC_BIN_DIR=target/debug examples/install.sh   install binaries already built there
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=${PREFIX:-/usr/local}
bin_dir=${AAC_BIN_DIR:-}
if [ -z "$bin_dir" ]; then
  cargo build --release -q -p aac -p aac-shim
  bin_dir=target/release
fi
run() { if [ -w "$prefix" ] || [ "$(id -u)" -eq 0 ] || { mkdir -p "$prefix" 2>/dev/null && [ -w "$prefix" ]; }; then "$@"; else sudo "$@"; fi; }

run install -d "$prefix/bin" "$prefix/share/man/man1" \
  "$prefix/share/bash-completion/completions" \
  "$prefix/share/zsh/site-functions" \
  "$prefix/share/fish/vendor_completions.d"
run install -m 0755 "$bin_dir/aac" "$bin_dir/aac-shim" "$prefix/bin/"
aac="$prefix/bin/aac"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$aac" completion bash > "$tmp/aac.bash"
"$aac" completion zsh > "$tmp/_aac"
"$aac" completion fish > "$tmp/aac.fish"
"$aac" man --out "$tmp/man" > /dev/null
run install -m 0644 "$tmp/aac.bash" "$prefix/share/bash-completion/completions/aac"
run install -m 0644 "$tmp/_aac" "$prefix/share/zsh/site-functions/_aac"
run install -m 0644 "$tmp/aac.fish" "$prefix/share/fish/vendor_completions.d/aac.fish"
run install -m 0644 "$tmp"/man/*.1 "$prefix/share/man/man1/"

echo "installed: $aac (and aac-shim), completions for bash/zsh/fish, man pages (man aac)"
case ":$PATH:" in
  *":$prefix/bin:"*) echo "run it as: aac" ;;
  *) echo "$prefix/bin is not on PATH: run it as $aac, or add $prefix/bin to PATH" ;;
esac
