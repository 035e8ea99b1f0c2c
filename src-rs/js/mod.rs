//! The JavaScript boundary: every export of the native module, as thin wrappers that
//! check arguments, call the core (`memory`, `heap`, `sync`) and turn [`ShmError`](crate::error::ShmError)s into
//! thrown errors. `lib/native.ts` is the only caller; the public API is the TypeScript on
//! top. One file per exported concept:
//!
//! | file | exports |
//! |------|---------|
//! | [`shm`] | `shmOpen`, `shmUnlink`, `normalizeName`, `fd*` |
//! | [`mapping`] | mappings by id: `segmentOpen`, `segmentCreate`, `mapRaw`, `mappingClose`, `mappingBuffer`, `mappingRelease` (through [`raw`]), `mappingReserve`, `mappingCheckIntact`, `mappingForget`, `munmap`, `detachBuffer`, `mapConstants`, `pageSize`; `lockToken`, `threadIdentity` (who this thread is in lock records) |
//! | [`anonymous`] | `anonymousCreate`, `mappingFromFd` (through [`raw`]) |
//! | [`heap`] | `heapAttach`, `heapInfo`, `heap*` (malloc/free/realloc through [`raw`]), `heapSetLockTimeout`, `heapTrim`, `heapSurvey`, `heapUsableSize`, `heapToken` |
//! | [`exit`] | `exitUnlinkAdd`, `exitUnlinkForget`, `exitUnlinkPending`, `exitUnlinkRun`: `unlinkOnExit` names, removed by a thread's cleanup hook too |
//! | [`peek`] | `peekSegment`, `peekDescriptor`: a segment's header and counters without mapping it |
//! | [`lock`] | `lockAcquireAsync`, `lockRelease`, `lockMarkConsistent` (`lockAcquire`, `lockWake` through [`raw`]) |
//! | [`semaphore`] | `semAcquire`, `semAcquireAsync`, `semUndoFormat`, `semUndoSize` (`semWake`, `semUndo` through [`raw`]) |
//! | [`condition`] | `condWait`, `condWaitAsync` (`condNotify` through [`raw`]) |
//! | [`trace`] | `traceInit`: rare events (heap repairs) for `node:diagnostics_channel` |
//! | [`waits`] | `syncInit`, `syncCancel`: the completion channel of async waits |
//! | [`word`] | `wordWait`, `wordWaitAsync` (`wordWake` through [`raw`]): sleeping until a word changes, for the JavaScript-side containers and primitives |
//! | [`owner`] | `ownerLiveness`: the identity seam of the JavaScript-side RWLock (slow path only) |
//! | [`blocks`] | `heapAllocInto`, `heapFreeFrom` (through [`raw`]): container blocks recorded in slots under the heap lock |
//! | [`raw`] | the hot calls as plain N-API callbacks |
//! | [`args`], [`slots`] | argument checks and the per-thread id tables the others share |
//!
//! # The hot-path rule
//!
//! Nothing on a per-operation path (a lock, heap, `Ref`, map or channel operation; open
//! and close) is a `#[napi]` function with arguments or a `#[napi]` class method. Measured
//! with napi-rs 3.16 on the development machine (x86-64 Linux): a `#[napi]` function
//! costs 133–282 ns with one to three arguments (borrow scopes, argument conversion,
//! per-call bookkeeping), a `&self` class method 440–760 ns and it takes a process-wide
//! mutex for borrow tracking, against 33–56 ns for a plain N-API callback. So:
//!
//! - per-operation calls are registered as plain N-API callbacks in [`raw`], which reads
//!   its number arguments with `napi_get_value_double` and calls the same Rust functions
//!   as everything else (their TypeScript types are declared in `lib/native.ts`);
//! - native objects that JavaScript addresses per operation (mappings, heaps) live in
//!   per-thread [`slots::SlotTable`]s and are passed by integer id to free functions,
//!   never as `this` of a class method;
//! - opening and closing a mapping are raw callbacks too: one call each, the numbers
//!   written into a `Float64Array` JavaScript passes in (no object built property by
//!   property), and no napi-rs class at all (a mapping is an id like a heap);
//! - `#[napi]` functions stay for setup and the slow paths (attaching a heap, making a
//!   window's ArrayBuffer, sleeping in the kernel), where the cost does not matter;
//! - the uncontended lock and semaphore paths never cross into Rust at all: `lib/`
//!   runs them with `Atomics` on the shared word (see `docs/ARCHITECTURE.md`).
//!
//! Files depend downwards only: `args` and `slots` on nothing here; `mapping` on them;
//! `waits` on nothing here; `heap`, `lock`, `semaphore`, `condition` on `mapping`,
//! `waits` and `args`; `raw` on the files whose functions it exports.

pub mod args;
pub mod blocks;
pub mod condition;
pub mod exit;
pub mod heap;
pub mod lock;
pub mod mapping;
pub mod owner;
// After `mapping`: napi-rs must have seen `Mapping` before an `impl` block of it.
pub mod anonymous;
pub mod peek;
pub mod raw;
pub mod semaphore;
pub mod shm;
pub mod slots;
pub mod trace;
pub mod waits;
pub mod word;
