#!/usr/bin/env bash
# Type-checks and lints the crate for macOS on this Linux machine, which has no macOS
# standard library for rustup's toolchain and cannot download one: Debian's rustc-web
# (with its Rust source and clippy, unpacked into the cache by .ci/toolchains.sh) builds
# the standard library for the Apple targets itself (-Zbuild-std, check only, no
# linking). The result is `cargo clippy --all-targets -- -D warnings` for
# aarch64-apple-darwin and x86_64-apple-darwin: src-rs/sys/macos.rs and everything that
# uses it must compile there. Only GitHub's macOS runners can run it.
#
#   bash .ci/check-macos.sh                       both targets
#   bash .ci/check-macos.sh aarch64-apple-darwin  one
#
# Needs a Debian-based x86-64 machine (apt-get, dpkg) and the crates.io registry; the
# first run downloads ~140 MB of .deb files and takes a few minutes on 2 cores.
# Debian's compiler may be one release newer than rustup's stable, so it may know a lint
# that the Linux clippy does not yet.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/toolchains.sh

if ! command -v apt-get > /dev/null 2>&1 || [ "$(uname -m)" != x86_64 ]; then
  echo "check-macos: needs a Debian-based x86-64 machine; skipped"
  exit 0
fi
use_rustc_web
"$RUSTC_WEB" --version

targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(aarch64-apple-darwin x86_64-apple-darwin)
for target in "${targets[@]}"; do
  echo "check-macos: clippy --all-targets -D warnings for $target"
  RUSTC="$RUSTC_WEB" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/macos-check \
    "$RUSTC_WEB_ROOT/usr/bin/cargo-clippy" clippy --all-targets --quiet \
    -Zbuild-std=std,panic_abort --target "$target" -- -D warnings
done
echo "check-macos: the crate compiles and is clippy-clean for ${targets[*]}"
