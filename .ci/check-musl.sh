#!/usr/bin/env bash
# The musl binaries: a Node addon for Alpine and other musl systems must be a shared
# library that needs musl's C library and nothing else (no glibc, no libgcc_s, no
# libstdc++, none of glibc's libpthread/libdl/librt split), with the C runtime linked
# dynamically (.cargo/config.toml: -crt-static).
#
#   bash .ci/check-musl.sh                  build the release binary for
#                                           x86_64-unknown-linux-musl and check it
#   bash .ci/check-musl.sh FILE.node...     only check these binaries (any architecture)
#
# The check reads the dynamic section (readelf -d): the only NEEDED entry must be musl's
# libc (libc.so, or libc.musl-<arch>.so.1 as Alpine names it), and no symbol may carry a
# GLIBC_ version. Building here: rustup cannot download the musl standard library on this
# machine, so Debian's rustc-web builds it (-Zbuild-std) and cargo-zigbuild links with
# zig's musl (.ci/toolchains.sh); the build goes to target/cross/.
set -euo pipefail
cd "$(dirname "$0")/.."

binaries=("$@")
if [ "${#binaries[@]}" -eq 0 ]; then
  . .ci/toolchains.sh
  if ! command -v apt-get > /dev/null 2>&1 || [ "$(uname -m)" != x86_64 ]; then
    echo "check-musl: building needs a Debian-based x86-64 machine; skipped"
    exit 0
  fi
  use_rustc_web
  use_zig
  echo "check-musl: napi build --release --target x86_64-unknown-linux-musl -x (rustc-web, -Zbuild-std)"
  RUSTC="$RUSTC_WEB" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/cross \
    npx napi build --platform --release --target x86_64-unknown-linux-musl -x \
    --output-dir target/cross/musl -- -Zbuild-std=std,panic_abort
  binaries=(target/cross/musl/shmutils.linux-x64-musl.node)
fi

failed=0
for bin in "${binaries[@]}"; do
  file "$bin"
  needed=$(readelf -d --wide "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  echo "check-musl: $bin needs: ${needed:-nothing}"
  if [ "$needed" != libc.so ] && ! [[ "$needed" =~ ^libc\.musl-[a-z0-9_]+\.so\.1$ ]]; then
    echo "check-musl: FAIL: $bin must need exactly musl's libc" >&2
    failed=1
  fi
  if readelf -V --wide "$bin" | grep -q 'GLIBC_'; then
    echo "check-musl: FAIL: $bin has glibc symbol versions" >&2
    failed=1
  fi
  if [ -z "$(readelf -l --wide "$bin" | grep -F 'Requesting program interpreter' || true)" ] &&
    readelf -h "$bin" | grep -q 'DYN (Shared object file)'; then
    echo "check-musl: ok: $bin is a shared library that needs only musl's libc"
  else
    echo "check-musl: FAIL: $bin is not a plain shared library" >&2
    failed=1
  fi
done
exit "$failed"
