#!/usr/bin/env bash
# Type-checks and lints the crate for macOS on this Linux machine, which has no macOS
# standard library for rustup's toolchain and cannot download one: Debian's rustc-web
# (with its Rust source and clippy) is unpacked into a cache directory, not installed, and
# builds the standard library for the Apple targets itself (-Zbuild-std, check only, no
# linking). The result is `cargo clippy --all-targets -- -D warnings` for
# aarch64-apple-darwin and x86_64-apple-darwin: src-rs/sys/macos.rs and everything that
# uses it must compile there. Only GitHub's macOS runners can run it.
#
# Needs a Debian-based x86-64 machine (apt-get, dpkg) and the crates.io registry; the
# first run downloads ~140 MB of .deb files and takes a few minutes per target on 2 cores.
# Debian's compiler may be one release newer than rustup's stable, so it may know a lint
# that the Linux clippy does not yet.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v apt-get > /dev/null 2>&1 || [ "$(uname -m)" != x86_64 ]; then
  echo "check-macos: needs a Debian-based x86-64 machine; skipped"
  exit 0
fi
TOOLS=${SHMUTILS_XTOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/shmutils-macos-check}
ROOTFS="$TOOLS/root"
if [ ! -x "$ROOTFS/usr/bin/rustc" ] || [ ! -x "$ROOTFS/usr/bin/cargo-clippy" ]; then
  echo "check-macos: unpacking Debian's rustc-web toolchain into $TOOLS"
  rm -rf "$TOOLS"
  mkdir -p "$TOOLS/debs"
  apt-get update -qq
  std=$(apt-cache depends libstd-rust-web-dev | awk '/Depends: libstd-rust-web-[0-9]/ { print $2; exit }')
  llvm=$(apt-cache depends "$std" | awk '/Depends: libllvm[0-9]/ { print $2; exit }')
  if [ -z "$std" ] || [ -z "$llvm" ]; then
    echo "check-macos: cannot resolve rustc-web's libraries" >&2
    exit 1
  fi
  (cd "$TOOLS/debs" && apt-get download -qq rustc-web rust-web-src rust-web-clippy libstd-rust-web-dev "$std" "$llvm" 2> /dev/null)
  for deb in "$TOOLS"/debs/*.deb; do dpkg -x "$deb" "$ROOTFS"; done
  rm -rf "$TOOLS/debs"
fi
export LD_LIBRARY_PATH="$ROOTFS/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
RUSTC="$ROOTFS/usr/bin/rustc"
"$RUSTC" --version

for target in aarch64-apple-darwin x86_64-apple-darwin; do
  echo "check-macos: clippy --all-targets -D warnings for $target"
  RUSTC="$RUSTC" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/macos-check \
    "$ROOTFS/usr/bin/cargo-clippy" clippy --all-targets --quiet \
    -Zbuild-std=std,panic_abort --target "$target" -- -D warnings
done
echo "check-macos: the crate compiles and is clippy-clean for both macOS targets"
