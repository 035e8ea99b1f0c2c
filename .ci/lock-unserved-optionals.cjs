#!/usr/bin/env node
// Completes package-lock.json with the per-platform optional packages that the npm
// registry reachable from this workplace does not serve.
//
// Packages such as @oxc-node/core list one optionalDependency per platform
// (@oxc-node/core-darwin-arm64, ...). When the registry answers 404 for some of them,
// `npm install` silently leaves them out of the lock, and `npm ci` then refuses the lock
// everywhere ("Missing: @oxc-node/core-darwin-arm64@ from lock file"). This adds an entry
// for each one left out, with the os/cpu/libc that its napi-rs style name spells, so that
// `npm ci` skips it on other platforms here and installs it on the machines it is for
// (where the registry has it; without an integrity hash, which that registry supplies).
//
//   node .ci/lock-unserved-optionals.cjs          add the missing entries (after npm install)
//   node .ci/lock-unserved-optionals.cjs --check  exit 1 if any is missing
'use strict'
const fs = require('node:fs')
const path = require('node:path')

const file = path.join(__dirname, '..', 'package-lock.json')
const lock = JSON.parse(fs.readFileSync(file, 'utf8'))
const packages = lock.packages
const NAME = /-(android|darwin|freebsd|linux|win32|openharmony)-([a-z0-9]+)(?:-(gnu|musl|gnueabihf|eabi|msvc))?$/

const missing = []
for (const [where, entry] of Object.entries(packages)) {
  for (const [dep, version] of Object.entries(entry.optionalDependencies ?? {})) {
    // Resolution as npm does it: nested node_modules first, then the hoisted one.
    const nested = `${where ? `${where}/` : ''}node_modules/${dep}`
    if (packages[nested] || packages[`node_modules/${dep}`]) continue
    const m = NAME.exec(dep)
    if (!m) {
      console.error(`lock: ${dep} (optional dependency of ${where || 'the root'}) is missing and its name names no platform`)
      process.exitCode = 1
      continue
    }
    const [, os, cpu, abi] = m
    const added = { version, cpu: [cpu], os: [os], optional: true }
    if (entry.dev) added.dev = true
    if (entry.license) added.license = entry.license
    if (os === 'linux' && (abi === 'gnu' || abi === 'musl')) added.libc = [abi === 'gnu' ? 'glibc' : 'musl']
    missing.push([`node_modules/${dep}`, added])
  }
}

if (process.argv.includes('--check')) {
  for (const [key] of missing) console.error(`lock: missing ${key} (run: node .ci/lock-unserved-optionals.cjs)`)
  if (missing.length > 0) process.exitCode = 1
  else console.log('lock: every optional platform package has an entry')
} else {
  for (const [key, entry] of missing) packages[key] = entry
  const sorted = {}
  for (const key of Object.keys(packages).sort((a, b) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : a > b ? 1 : 0))) {
    sorted[key] = packages[key]
  }
  lock.packages = sorted
  fs.writeFileSync(file, `${JSON.stringify(lock, null, 2)}\n`)
  console.log(`lock: added ${missing.length} entries${missing.length ? `: ${missing.map(([k]) => k.slice(13)).join(', ')}` : ''}`)
}
