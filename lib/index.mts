// ESM entry point: the same API as the CommonJS build.
export * from './index.js'
