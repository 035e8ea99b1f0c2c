// Loading on a platform without a prebuilt binary: the napi-generated loader (index.js)
// really runs and really fails, and the package turns that into a ShmError with code
// ERR_SHM_UNSUPPORTED_PLATFORM. Each case runs in a child node process, because the
// binding is loaded once per process at import time.
//
// How the loader is made to fail, without mocking any of our code:
// - an unsupported platform: a preload (`--import data:...`) redefines `process.platform`
//   and/or `process.arch` before anything loads, so the generated loader takes its branch
//   for that platform, finds no `.node` file and no `shmutils-<platform>` package, and
//   throws its own "Cannot find native binding" error;
// - a supported platform without its binary package (an install with optional
//   dependencies left out, or `npm pack` of a clone): a copy of the package as it is
//   packed (package.json, index.js, dist/) installed into a temporary project without
//   `shmutils-<platform>`; then the same project with that package added loads;
// - `NAPI_RS_NATIVE_LIBRARY_PATH`, the loader's own override, naming a file that does not
//   exist, or one that is no loadable binary.
import { spawnSync } from 'node:child_process'
import { copyFileSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { constants, tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import test, { type ExecutionContext } from 'ava'
import { CDefError, cdef, MappedMemory, ShmError } from '../dist/index.js'
import { segmentName } from './helpers.js'

// ava runs test files with the project root as the working directory.
const root = process.cwd()
const { version } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { version: string }

/** What the child saw when it tried to load the package. */
interface Outcome {
  loaded: boolean
  name?: string
  code?: string
  message?: string
  hasCause?: boolean
  stderr: string
}

const SUPPORTED = [
  'linux-x64-gnu',
  'linux-arm64-gnu',
  'linux-x64-musl',
  'linux-arm64-musl',
  'darwin-x64',
  'darwin-arm64',
]

// The child's script: load the package (CommonJS or ESM entry) and report as JSON.
const REPORT = `
  const out = (o) => process.stdout.write(JSON.stringify(o))
  const fail = (e) => out({ loaded: false, name: e?.name, code: e?.code, message: e?.message,
                            hasCause: e?.cause !== undefined })
`
const cjs = (spec: string) => `${REPORT}
  try { require(${JSON.stringify(spec)}); out({ loaded: true }) }
  catch (e) { fail(e) }`
const esm = (spec: string) => `${REPORT}
  import(${JSON.stringify(spec)})
    .then(() => out({ loaded: true }), fail)`

/**
 * Loads the package in a child: this repository's build, or with `project`, the package
 * named `shmutils` as installed in that directory's node_modules.
 */
function load(
  entry: 'cjs' | 'esm',
  options: { platform?: string; arch?: string; env?: Record<string, string>; project?: string; preload?: string } = {},
): Outcome {
  const args: string[] = []
  const overrides: string[] = options.preload ? [options.preload] : []
  if (options.platform) overrides.push(`Object.defineProperty(process, 'platform', { value: ${JSON.stringify(options.platform)} });`)
  if (options.arch) overrides.push(`Object.defineProperty(process, 'arch', { value: ${JSON.stringify(options.arch)} });`)
  if (overrides.length > 0) {
    args.push('--import', `data:text/javascript,${encodeURIComponent(overrides.join(''))}`)
  }
  const script = options.project
    ? (entry === 'cjs' ? cjs : esm)('shmutils')
    : entry === 'cjs'
      ? cjs(join(root, 'dist', 'index.js'))
      : esm(pathToFileURL(join(root, 'dist', 'index.mjs')).href)
  args.push('-e', script)
  const env: NodeJS.ProcessEnv = { ...process.env, ...options.env }
  // The test runner's own loader hooks are not wanted in the child.
  delete env.NODE_OPTIONS
  const r = spawnSync(process.execPath, args, { cwd: options.project ?? root, env, encoding: 'utf8', timeout: 60_000 })
  // Node 20 rejects the import() promise of an ES module whose CommonJS dependency threw
  // *and* reports the same error as uncaught afterwards (a Node quirk, reproducible with
  // two three-line files), so an ESM child that already printed its report may still exit
  // with status 1. A CommonJS child must exit 0 after catching.
  if (!r.stdout || (entry === 'cjs' && r.status !== 0)) {
    throw new Error(`child failed (status ${r.status}): ${r.stderr}`)
  }
  const outcome = JSON.parse(r.stdout) as Omit<Outcome, 'stderr'>
  if (outcome.loaded && r.status !== 0) throw new Error(`child failed after loading: ${r.stderr}`)
  return { ...outcome, stderr: r.stderr }
}

/** This machine's platform in the names the package uses. */
function hostPlatform(): string {
  let p = `${process.platform}-${process.arch}`
  if (process.platform === 'linux') {
    const report = process.report.getReport() as { header?: { glibcVersionRuntime?: string } }
    p += report.header?.glibcVersionRuntime ? '-gnu' : '-musl'
  }
  return p
}

/**
 * A temporary project with this package installed as `npm pack` ships it (package.json,
 * index.js, index.d.ts, dist/: no binary) and, with `withBinary`, its platform package
 * `shmutils-<platform>` holding this build's binary, as npm installs it.
 */
function project(t: ExecutionContext, withBinary: boolean): string {
  const dir = mkdtempSync(join(tmpdir(), 'shmutils-platform-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const pkg = join(dir, 'node_modules', 'shmutils')
  mkdirSync(pkg, { recursive: true })
  for (const f of ['package.json', 'index.js', 'index.d.ts']) copyFileSync(join(root, f), join(pkg, f))
  cpSync(join(root, 'dist'), join(pkg, 'dist'), { recursive: true })
  if (withBinary) {
    const platform = hostPlatform()
    const binary = `shmutils.${platform}.node`
    const dep = join(dir, 'node_modules', `shmutils-${platform}`)
    mkdirSync(dep)
    copyFileSync(join(root, binary), join(dep, binary))
    writeFileSync(join(dep, 'package.json'), JSON.stringify({ name: `shmutils-${platform}`, version, main: binary }))
  }
  return dir
}

test('the package loads here (the cases below are not failing for another reason)', (t) => {
  t.true(load('cjs').loaded)
  t.true(load('esm').loaded)
})

test('a default import is the whole API, in ES modules and CommonJS (TypeScript\'s esModuleInterop reads .default)', (t) => {
  const url = pathToFileURL(join(root, 'dist', 'index.mjs')).href
  const script = `
    import shmutils, { MappedMemory, Lock } from ${JSON.stringify(url)}
    import { createRequire } from 'node:module'
    const cjs = createRequire(import.meta.url)(${JSON.stringify(join(root, 'dist', 'index.js'))})
    process.stdout.write(JSON.stringify([
      shmutils.MappedMemory === MappedMemory, shmutils.Lock === Lock, cjs.default === cjs, cjs.default.MappedMemory === MappedMemory,
    ]))`
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_OPTIONS: '' } })
  t.is(r.stdout, '[true,true,true,true]', r.stderr)
})

for (const entry of ['cjs', 'esm'] as const) {
  test(`${entry}: an unsupported OS and CPU throws ERR_SHM_UNSUPPORTED_PLATFORM naming both and the supported list`, (t) => {
    const o = load(entry, { platform: 'freebsd', arch: 'riscv64' })
    t.false(o.loaded)
    t.is(o.name, 'ShmError')
    t.is(o.code, 'ERR_SHM_UNSUPPORTED_PLATFORM')
    t.regex(o.message ?? '', /no native binary for freebsd-riscv64\b/)
    for (const p of SUPPORTED) t.true(o.message?.includes(p), `message names ${p}: ${o.message}`)
    t.true(o.hasCause, 'the loader error is kept as the cause')
  })

  test(`${entry}: this OS on an unsupported CPU throws ERR_SHM_UNSUPPORTED_PLATFORM`, (t) => {
    const o = load(entry, { arch: 'riscv64' })
    t.false(o.loaded)
    t.is(o.name, 'ShmError')
    t.is(o.code, 'ERR_SHM_UNSUPPORTED_PLATFORM')
    t.regex(o.message ?? '', new RegExp(`no native binary for ${process.platform}-riscv64\\b`))
    t.regex(o.message ?? '', /supported platforms: linux-x64-gnu, /)
  })

  test(`${entry}: installed without its platform package, it names the package and how to install it`, (t) => {
    const o = load(entry, { project: project(t, false) })
    t.false(o.loaded)
    t.is(o.name, 'ShmError')
    t.is(o.code, 'ERR_SHM_BINARY_MISSING')
    t.true(SUPPORTED.includes(hostPlatform()))
    t.true(o.message?.includes(`comes in the package shmutils-${hostPlatform()}@${version}, and that package is not installed`), o.message)
    t.true(o.message?.includes(`npm install shmutils-${hostPlatform()}@${version}`), o.message)
    t.regex(o.message ?? '', /optional dependencies/)
    t.true(o.hasCause, 'the loader error is kept as the cause')
  })

  test(`${entry}: the same project with the platform package installed loads`, (t) => {
    t.true(load(entry, { project: project(t, true) }).loaded)
  })

  test(`${entry}: a platform package of another version is ERR_SHM_BINARY_MISSING naming both versions and the install command`, (t) => {
    const dir = project(t, true)
    const dep = join(dir, 'node_modules', `shmutils-${hostPlatform()}`, 'package.json')
    writeFileSync(dep, JSON.stringify({ ...JSON.parse(readFileSync(dep, 'utf8')), version: '0.0.9' }))
    // Also with a file beside the loader that does not load (the loader then falls back
    // to the package's binary).
    for (const junk of [false, true]) {
      if (junk) writeFileSync(join(dir, 'node_modules', 'shmutils', `shmutils.${hostPlatform()}.node`), 'junk')
      const o = load(entry, { project: dir })
      t.false(o.loaded)
      t.is(o.name, 'ShmError')
      t.is(o.code, 'ERR_SHM_BINARY_MISSING')
      t.true(o.message?.startsWith(`shmutils ${version} found its native binary package shmutils-${hostPlatform()} at version 0.0.9`), o.message)
      t.true(o.message?.includes(`npm install shmutils-${hostPlatform()}@${version}`), o.message)
    }
  })

  test(`${entry}: NAPI_RS_NATIVE_LIBRARY_PATH naming no file says so`, (t) => {
    const missing = join(root, 'no-such-dir', 'shmutils.node')
    const o = load(entry, { env: { NAPI_RS_NATIVE_LIBRARY_PATH: missing } })
    t.false(o.loaded)
    t.is(o.code, 'ERR_SHM_BINARY_MISSING')
    t.true(o.message?.includes(`NAPI_RS_NATIVE_LIBRARY_PATH names ${missing}, which does not exist`), o.message)
  })

  test(`${entry}: an installed binary that is damaged is ERR_SHM_UNSUPPORTED_PLATFORM with its reason first, no WebAssembly fallback, and what to do`, (t) => {
    const dir = project(t, true)
    const binary = join(dir, 'node_modules', `shmutils-${hostPlatform()}`, `shmutils.${hostPlatform()}.node`)
    writeFileSync(binary, 'junk')
    const o = load(entry, { project: dir })
    t.false(o.loaded)
    t.is(o.code, 'ERR_SHM_UNSUPPORTED_PLATFORM')
    t.true(o.message?.startsWith(`shmutils could not load its native binary for ${hostPlatform()} on this system: ${binary}: `), o.message)
    t.false(/wasi|wasm/.test(o.message ?? ''), o.message)
    t.false(o.message?.includes('\n'), 'one line')
    t.regex(o.message ?? '', /reinstall shmutils/)
  })

  test(`${entry}: a runtime older than the package needs is ERR_SHM_UNSUPPORTED_PLATFORM naming both versions, at load`, (t) => {
    const o = load(entry, { preload: 'delete String.prototype.isWellFormed;' })
    t.false(o.loaded)
    t.is(o.name, 'ShmError')
    t.is(o.code, 'ERR_SHM_UNSUPPORTED_PLATFORM')
    const { engines } = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { engines: { node: string } }
    t.is(o.message, `shmutils needs Node.js ${engines.node}; this is Node.js ${process.versions.node}`)
  })

  test(`${entry}: a binary this system cannot load is ERR_SHM_UNSUPPORTED_PLATFORM with the loader's reason`, (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'shmutils-platform-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const bogus = join(dir, 'shmutils.node')
    writeFileSync(bogus, 'not a shared library')
    const o = load(entry, { env: { NAPI_RS_NATIVE_LIBRARY_PATH: bogus } })
    t.false(o.loaded)
    t.is(o.code, 'ERR_SHM_UNSUPPORTED_PLATFORM')
    t.true(o.message?.startsWith(`shmutils could not load its native binary for ${hostPlatform()} on this system: `), o.message)
    t.true(o.message?.includes(bogus), o.message)
  })
}

test('compiled in a vm context of its own (as Jest runs each test file): the binding\'s errors are typed, the package still steers by their codes, and a Uint8Array key made outside is a key', (t) => {
  const name = segmentName(t, 'realm')
  const r = spawnSync(process.execPath, [join(root, '__test__', 'fixtures', 'realms.cjs'), 'sandbox', name], { encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  // Before: the binding's errors came out as their wire text ('\u0001shm{...}', no code),
  // a bounded map whose heap filled threw that instead of evicting, and a Buffer key was
  // "not a Uint8Array".
  t.deepEqual(JSON.parse(r.stdout), {
    sandboxed: true,
    open: { name: 'ShmError', code: 'ENOENT' },
    malloc: { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' },
    twice: { name: 'ShmError', code: 'ERR_SHM_DEADLOCK' },
    bounded: { failed: null, evicted: true },
    keys: [1, 2, 2],
    proxyKey: { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' },
  })
})

test('Error.prototype frozen before the package loads: its errors keep their names and codes (each was a TypeError about assigning name)', (t) => {
  const name = segmentName(t, 'frozen')
  const r = spawnSync(process.execPath, [join(root, '__test__', 'fixtures', 'realms.cjs'), 'frozen', name], { encoding: 'utf8', timeout: 60_000 })
  t.is(r.status, 0, r.stderr)
  t.deepEqual(JSON.parse(r.stdout), { open: { name: 'ShmError', code: 'ENOENT' }, cdef: { name: 'CDefError' }, send: { name: 'ShmError', code: 'ERR_SHM_CLOSED' }, iterated: 0 })
})

test('instanceof ShmError / CDefError: true for the package\'s errors (of any copy, see async.spec), false for others; a subclass of the user\'s keeps the prototype-chain test', (t) => {
  const open = t.throws(() => MappedMemory.open(`/shmutils-platform-${process.pid}-missing`))
  t.true(open instanceof ShmError)
  t.true(open instanceof Error)
  t.false(new Error('x') instanceof ShmError)
  t.false(Object.create(ShmError.prototype) instanceof CDefError)
  for (const v of [null, undefined, 7, 'ShmError', {}]) t.false((v as unknown) instanceof ShmError)
  class Mine extends ShmError {}
  const mine = new Mine('mine', { code: 'ERR_SHM_CLOSED' })
  t.true(mine instanceof Mine)
  t.true(mine instanceof ShmError)
  t.false(open instanceof Mine, 'an error of the package is not an instance of a subclass')
  t.is(mine.name, 'ShmError')
  t.true(t.throws(() => cdef('struct {')) instanceof CDefError)
})

/** Node's permission-model flag: `--permission` (Node 22.13+), `--experimental-permission` before. */
const PERMISSION = process.allowedNodeEnvironmentFlags.has('--permission') ? '--permission' : '--experimental-permission'

test('under Node\'s permission model: without --allow-addons the load says so (EACCES), and a handle revived through /proc without fs write access says what to allow', (t) => {
  const run = (flags: string[], script: string) =>
    spawnSync(process.execPath, [PERMISSION, '--allow-fs-read=*', ...flags, '-e', script], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_OPTIONS: '' } })
  const report = `e => console.log(JSON.stringify({ name: e.name, code: e.code, errno: e.errno, syscall: e.syscall, message: e.message }))`
  const r1 = run([], `try { require(${JSON.stringify(root)}) } catch (e) { (${report})(e) }`)
  const e1 = JSON.parse(r1.stdout) as { name: string; code: string; message: string }
  t.like(e1, { name: 'ShmError', code: 'EACCES' })
  t.regex(e1.message, /permission model .* --allow-addons/)
  // An anonymous segment's handle, revived in a process that may not write /proc.
  const mem = MappedMemory.anonymous({ size: 1 << 16 })
  t.teardown(() => mem.close())
  const r2 = run(['--allow-addons'], `const { revive } = require(${JSON.stringify(root)}); try { revive(${JSON.stringify(mem.toJSON())}) } catch (e) { (${report})(e) }`)
  const e2 = JSON.parse(r2.stdout) as { name: string; code: string; message: string }
  t.like(e2, { name: 'ShmError', code: 'EACCES', errno: constants.errno.EACCES, syscall: 'open' })
  t.regex(e2.message, /permission model .*--allow-fs-write/)
})

test('a binary built for another release is refused wherever it was put (the binary says its package version; a bundle has no platform package to ask)', (t) => {
  // The package as installed, at another version, with this build's binary beside its
  // loader (where a bundle or a copied build puts it): before, only a platform package's
  // package.json was compared, and this loaded.
  const dir = project(t, false)
  const pkg = join(dir, 'node_modules', 'shmutils')
  const json = JSON.parse(readFileSync(join(pkg, 'package.json'), 'utf8')) as { version: string }
  writeFileSync(join(pkg, 'package.json'), JSON.stringify({ ...json, version: '9.9.9' }))
  copyFileSync(join(root, `shmutils.${hostPlatform()}.node`), join(pkg, `shmutils.${hostPlatform()}.node`))
  const o = load('cjs', { project: dir })
  t.false(o.loaded)
  t.is(o.code, 'ERR_SHM_BINARY_MISSING')
  t.regex(o.message ?? '', new RegExp(`shmutils 9\\.9\\.9 found its native binary for ${hostPlatform()} at version ${version.replace(/\./g, '\\.')}: they must be the same release`))
})

test('what a bundler\'s file loader hands over instead of the binary (its path) is ERR_SHM_BINARY_MISSING saying so, not a TypeError at the first call', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'shmutils-notbinding-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const fake = join(dir, 'binding.js')
  writeFileSync(fake, 'module.exports = "./shmutils.linux-x64-gnu-KI26QQX5.node"\n')
  // NAPI_RS_NATIVE_LIBRARY_PATH: the loader requires that file and returns what it exports.
  const o = load('cjs', { env: { NAPI_RS_NATIVE_LIBRARY_PATH: fake } })
  t.false(o.loaded)
  t.is(o.code, 'ERR_SHM_BINARY_MISSING')
  t.regex(o.message ?? '', /not its native binary .*the string ".\/shmutils\.linux-x64-gnu-KI26QQX5\.node".*shmutils was bundled: keep it out of the bundle .*docs\/bundlers\.md/)
})

test('bundled without its binary: the error says the package was bundled and what to do, not to npm install a package the bundle cannot see', (t) => {
  // The package's JavaScript where a bundle puts it: no package.json of shmutils one level up.
  const dir = mkdtempSync(join(tmpdir(), 'shmutils-bundled-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const app = join(dir, 'app')
  cpSync(join(root, 'dist'), join(app, 'dist'), { recursive: true })
  copyFileSync(join(root, 'index.js'), join(app, 'index.js'))
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'my-app', version: '1.0.0' }))
  const r = spawnSync(process.execPath, ['-e', `${REPORT}; try { require(${JSON.stringify(join(app, 'dist', 'index.js'))}); out({ loaded: true }) } catch (e) { fail(e) }`], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, NODE_OPTIONS: '' }, cwd: dir })
  const o = JSON.parse(r.stdout) as Outcome
  t.false(o.loaded)
  t.is(o.code, 'ERR_SHM_BINARY_MISSING')
  t.regex(o.message ?? '', /shmutils was bundled: keep it out of the bundle/)
  t.notRegex(o.message ?? '', /npm install shmutils-/)
})

test('a binary of a release from before binaries reported their version is refused as older, with the install advice (not the bundler one)', (t) => {
  const dir = project(t, true)
  const platform = hostPlatform()
  const dep = join(dir, 'node_modules', `shmutils-${platform}`)
  // The package's binary as an older release's: everything but packageVersion.
  writeFileSync(join(dep, 'older.js'), `const b = require('./shmutils.${platform}.node'); const o = { ...b }; delete o.packageVersion; module.exports = o\n`)
  writeFileSync(join(dep, 'package.json'), JSON.stringify({ name: `shmutils-${platform}`, version, main: 'older.js' }))
  const o = load('cjs', { project: dir })
  t.false(o.loaded)
  t.is(o.code, 'ERR_SHM_BINARY_MISSING')
  t.regex(o.message ?? '', new RegExp(`found its native binary for ${platform} of an older release: .*npm install shmutils-${platform}@`))
  t.notRegex(o.message ?? '', /bundled/)
})
