#!/usr/bin/env bash
# Install smoke test: the package as a user gets it, installed where nothing can compile.
#
# Needs the release build already done (`npm run build`, or a CI artifact
# shmutils.<platform>.node in the repo root plus `npm run build:ts`). Then:
#  1. stages a copy of the repo the way publishing starts from it, puts the binary into its
#     platform package with `napi artifacts`, and lets `napi pre-publish -t npm` wire the
#     root package's optionalDependencies (for this platform only: the other platforms'
#     binaries are built on their own runners; --skip-optional-publish, nothing is sent);
#  2. `npm pack`s the root package and this platform's package, and checks what they ship
#     (LICENSE and CHANGELOG.md included, no `@internal` declaration in the .d.ts files);
#  3. installs both tarballs into an empty project with a PATH holding only `node` and
#     `npm` (no cargo, rustc, cc, gcc, make, python, zig: an install that tried to compile
#     would fail), and runs a CommonJS and an ES module script against it: create a segment,
#     lock and unlock, allocate from the heap if this build has one, close and unlink.
# (What TypeScript users see of the published declarations: npm run test:types.)
# Exits non-zero on any failure; prints a summary line either way; removes its temp dirs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

passed=0
step="setup"
say() { printf '[smoke-install] %s\n' "$*"; }
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shmutils-smoke.XXXXXX")
finish() {
  rc=$?
  rm -rf "$WORK"
  if [ "$rc" -ne 0 ]; then
    say "FAILED during: $step (exit $rc)"
    echo "smoke-install: $passed passed, 1 failed"
  fi
  exit "$rc"
}
trap finish EXIT

# ---------------------------------------------------------------------------------------
step="find this platform's binary"
# shellcheck disable=SC2016 # JavaScript template literals, not shell expansions
platform=$(node -e '
  let p = `${process.platform}-${process.arch}`
  if (process.platform === "linux") p += process.report.getReport().header.glibcVersionRuntime ? "-gnu" : "-musl"
  console.log(p)')
case "$platform" in
  linux-x64-gnu) triple=x86_64-unknown-linux-gnu ;;
  linux-arm64-gnu) triple=aarch64-unknown-linux-gnu ;;
  linux-x64-musl) triple=x86_64-unknown-linux-musl ;;
  linux-arm64-musl) triple=aarch64-unknown-linux-musl ;;
  darwin-x64) triple=x86_64-apple-darwin ;;
  darwin-arm64) triple=aarch64-apple-darwin ;;
  *) say "no prebuilt binary is made for $platform"; exit 1 ;;
esac
binary="shmutils.$platform.node"
[ -f "$binary" ] || { say "missing $binary: run 'npm run build' first"; exit 1; }
if [ ! -f dist/index.js ] || [ ! -f dist/index.mjs ]; then say "missing dist/: run 'npm run build:ts' first"; exit 1; fi
[ -x node_modules/.bin/napi ] || { say "missing node_modules/.bin/napi: run 'npm ci' first"; exit 1; }
napi="$ROOT/node_modules/.bin/napi"
say "platform $platform ($triple), binary $binary"

# ---------------------------------------------------------------------------------------
step="stage the packages as publishing does (napi artifacts + napi pre-publish)"
STAGE="$WORK/stage"
mkdir -p "$STAGE/artifacts" "$WORK/packs"
cp package.json index.js index.d.ts "$STAGE/"
cp -R dist npm "$STAGE/"
for f in README* LICENSE* LICENCE* CHANGELOG*; do if [ -f "$f" ]; then cp "$f" "$STAGE/"; fi; done
cp "$binary" "$STAGE/artifacts/"
node -e '
  const fs = require("fs"), f = process.argv[1], p = JSON.parse(fs.readFileSync(f, "utf8"))
  p.napi.targets = [process.argv[2]]
  fs.writeFileSync(f, JSON.stringify(p, null, 2) + "\n")' "$STAGE/package.json" "$triple"
(cd "$STAGE" && "$napi" artifacts --output-dir artifacts --npm-dir npm)
[ -f "$STAGE/npm/$platform/$binary" ] || { say "napi artifacts did not place $binary"; exit 1; }
(cd "$STAGE" && "$napi" pre-publish -t npm --no-gh-release --skip-optional-publish)
optional=$(node -p 'JSON.stringify(require(process.argv[1]).optionalDependencies)' "$STAGE/package.json")
say "root optionalDependencies after pre-publish: $optional"
case "$optional" in *"\"shmutils-$platform\""*) ;; *) say "pre-publish did not add shmutils-$platform"; exit 1 ;; esac

step="npm pack the root and the platform package"
main_tgz=$(cd "$STAGE" && npm pack --silent --pack-destination "$WORK/packs" | tail -n 1)
plat_tgz=$(cd "$STAGE/npm/$platform" && npm pack --silent --pack-destination "$WORK/packs" | tail -n 1)
main_tgz="$WORK/packs/$main_tgz"
plat_tgz="$WORK/packs/$plat_tgz"
tar -tzf "$main_tgz" | sort > "$WORK/main.files"
tar -tzf "$plat_tgz" | sort > "$WORK/plat.files"
say "root package: $(wc -l < "$WORK/main.files" | tr -d ' ') files, $platform package: $(tr '\n' ' ' < "$WORK/plat.files")"
if grep -Ev '^package/(package\.json|index\.js|index\.d\.ts|(README|LICEN[CS]E|CHANGELOG)(\.[A-Za-z]+)?|dist/.+\.(js|mjs|d\.ts|d\.mts))$' "$WORK/main.files"; then
  say "the root package ships files beyond index.js, index.d.ts and dist/ (listed above)"
  exit 1
fi
grep -qx "package/$binary" "$WORK/plat.files" || { say "the platform package lacks $binary"; exit 1; }
for f in LICENSE CHANGELOG.md; do
  grep -qx "package/$f" "$WORK/main.files" || { say "the root package lacks $f"; exit 1; }
done
mkdir -p "$WORK/unpacked"
tar -xzf "$main_tgz" -C "$WORK/unpacked"
if grep -rl '@internal' --include='*.d.ts' --include='*.d.mts' "$WORK/unpacked/package"; then
  say "published declarations still contain @internal members (files above): tsconfig.build.json strips them"
  exit 1
fi
passed=$((passed + 1))

# ---------------------------------------------------------------------------------------
step="install into an empty project with no compiler on PATH"
BIN="$WORK/bin"
mkdir -p "$BIN"
ln -s "$(command -v node)" "$BIN/node"
ln -s "$(node -p 'require("fs").realpathSync(process.argv[1])' "$(command -v npm)")" "$BIN/npm"
for tool in cargo rustc rustup cc c++ gcc g++ clang make python python3 zig node-gyp; do
  if PATH="$BIN" command -v "$tool" > /dev/null 2>&1; then say "$tool is reachable on the bare PATH"; exit 1; fi
done
APP="$WORK/app"
mkdir -p "$APP"
printf '{ "name": "shmutils-smoke-app", "version": "1.0.0", "private": true }\n' > "$APP/package.json"
(cd "$APP" && PATH="$BIN" npm install --no-audit --no-fund --loglevel=error "$main_tgz" "$plat_tgz")
if find "$APP/node_modules/shmutils" -name '*.node' | grep -q .; then
  say "the root package carries a .node file"; exit 1
fi
[ -f "$APP/node_modules/shmutils-$platform/$binary" ] || { say "shmutils-$platform is not installed"; exit 1; }

step="run a CommonJS and an ES module script"
cat > "$APP/smoke.cjs" <<'EOF'
const { MappedMemory, Lock } = require('shmutils')
const name = `/shmutils-smoke-${process.pid}-c`
const mem = MappedMemory.create(name, { size: 65536 })
try {
  let lockAt = 256 // the heap region's first byte: free while this build has no heap
  if (typeof mem.heap !== 'undefined') {
    lockAt = mem.heap.malloc(64)
    console.log(`cjs: heap.malloc(64) -> offset ${lockAt} (the lock lives there)`)
  } else {
    console.log('cjs: heap: not in this build, allocation skipped')
  }
  const lock = Lock.at(mem, lockAt)
  if (lock.acquire() !== true) throw new Error('acquire() did not return true')
  if (!lock.locked) throw new Error('not locked after acquire()')
  lock.release()
  if (lock.locked) throw new Error('still locked after release()')
  console.log(`cjs: segment ${name} of ${mem.size} bytes, lock at ${lockAt}: acquire/release ok`)
} finally {
  mem.unlink()
  mem.close()
}
EOF
cat > "$APP/smoke.mjs" <<'EOF'
import { MappedMemory, Lock, shmOpen } from 'shmutils'
const name = `/shmutils-smoke-${process.pid}-m`
const mem = MappedMemory.create(name, { size: 65536 })
try {
  let lockAt = 256
  if (typeof mem.heap !== 'undefined') {
    lockAt = mem.heap.malloc(64)
    console.log(`esm: heap.malloc(64) -> offset ${lockAt} (the lock lives there)`)
  } else {
    console.log('esm: heap: not in this build, allocation skipped')
  }
  const lock = Lock.at(mem, lockAt)
  if (lock.acquire() !== true) throw new Error('acquire() did not return true')
  lock.release()
  console.log(`esm: segment ${name} of ${mem.size} bytes, lock at ${lockAt}: acquire/release ok`)
} finally {
  mem.unlink()
  mem.close()
}
try {
  shmOpen(name, 'r')
  throw new Error(`${name} still exists after unlink()`)
} catch (e) {
  if (e.code !== 'ENOENT') throw e
}
EOF
(cd "$APP" && PATH="$BIN" node smoke.cjs)
passed=$((passed + 1))
(cd "$APP" && PATH="$BIN" node smoke.mjs)
passed=$((passed + 1))

step="done"
say "ok: packed, installed without a compiler, and used from CommonJS and ESM on $platform"
echo "smoke-install: $passed passed, 0 failed"
