#!/usr/bin/env bash
# The glibc floor: the published linux-*-gnu binaries must load on glibc 2.17 (CentOS 7,
# Amazon Linux 2, every distribution since 2012), the floor Rust's own gnu targets keep.
#
#   bash .ci/check-glibc.sh                 build the release binary for
#                                           x86_64-unknown-linux-gnu.2.17 (napi build -x:
#                                           cargo-zigbuild links against glibc 2.17's
#                                           symbol versions) and check it
#   bash .ci/check-glibc.sh FILE.node...    only check these binaries (any architecture)
#
# A binary fails when it needs any GLIBC_ symbol version above 2.17: the versions it
# requires (readelf -V, its .gnu.version_r section) are listed, the highest named, and
# every symbol bound to a newer version printed. zig and cargo-zigbuild come from PyPI
# (.ci/toolchains.sh); the build goes to target/glibc-floor/ and leaves the repository's
# own build alone. CI's release builds use the same command (.github/workflows/ci.yml).
set -euo pipefail
cd "$(dirname "$0")/.."
FLOOR=2.17

binaries=("$@")
if [ "${#binaries[@]}" -eq 0 ]; then
  . .ci/toolchains.sh
  use_zig
  echo "check-glibc: napi build --release --target x86_64-unknown-linux-gnu.$FLOOR -x"
  npx napi build --platform --release --target "x86_64-unknown-linux-gnu.$FLOOR" -x \
    --output-dir target/glibc-floor
  binaries=(target/glibc-floor/shmutils.linux-x64-gnu.node)
fi

failed=0
for bin in "${binaries[@]}"; do
  versions=$(readelf -V --wide "$bin" | grep -o 'Name: GLIBC_[0-9.]*' | sed 's/Name: GLIBC_//' | sort -uV)
  if [ -z "$versions" ]; then
    echo "check-glibc: $bin requires no GLIBC_ symbol version (not a glibc binary?)" >&2
    failed=1
    continue
  fi
  highest=$(tail -n 1 <<< "$versions")
  echo "check-glibc: $bin requires GLIBC_ $(tr '\n' ' ' <<< "$versions")"
  if [ "$(printf '%s\n%s\n' "$highest" "$FLOOR" | sort -V | tail -n 1)" != "$FLOOR" ]; then
    echo "check-glibc: FAIL: $bin needs GLIBC_$highest > $FLOOR; these symbols are too new:" >&2
    readelf --dyn-syms --wide "$bin" | awk '$8 ~ /@GLIBC_/ { print $8 }' | sort -u |
      while IFS= read -r sym; do
        v=${sym##*@GLIBC_}
        if [ "$(printf '%s\n%s\n' "$v" "$FLOOR" | sort -V | tail -n 1)" != "$FLOOR" ]; then echo "  $sym" >&2; fi
      done
    failed=1
  else
    echo "check-glibc: ok: the highest glibc version $bin needs is $highest (floor $FLOOR)"
  fi
done
exit "$failed"
