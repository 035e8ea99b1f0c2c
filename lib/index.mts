// ESM entry point: the same API as the CommonJS build.
export * from './index.js'
// The default export too (`export *` leaves it out): the whole API as one object.
export { default } from './index.js'
