/**
 * The machine a run was measured on, for the JSON, the table's header, the chart and
 * the README.
 * @module
 */
import { readFileSync } from 'node:fs'
import os from 'node:os'

/**
 * @typedef {object} Machine
 * @property {number} cores
 * @property {string} cpu - model name from /proc/cpuinfo (else what Node reports)
 * @property {string} node - Node version
 * @property {string} os - kernel and architecture
 * @property {number[]} loadAverage - 1, 5, 15 minutes, when the run started
 * @property {string} date - ISO 8601, when the run started
 */

/** @returns {Machine} */
export function describeMachine() {
  return {
    cores: os.availableParallelism(),
    cpu: cpuModel(),
    node: process.version,
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    loadAverage: os.loadavg().map((x) => +x.toFixed(2)),
    date: new Date().toISOString(),
  }
}

function cpuModel() {
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))
    if (m) return m[1].trim()
  } catch {
    // not Linux
  }
  return os.cpus()[0]?.model?.trim() || 'unknown CPU'
}

/**
 * One line: "2 cores, AMD EPYC, Node v20.20.2, Linux 6.1 x64, 2026-11-27".
 * @param {Machine} m
 */
export function machineLine(m) {
  return `${m.cores} cores, ${m.cpu}, Node ${m.node}, ${m.os}, ${m.date.slice(0, 10)}`
}
