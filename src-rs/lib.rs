//! Native core of `shmutils`: POSIX shared-memory objects, mappings exposed to JavaScript
//! as zero-copy external ArrayBuffers, managed segments with a validated header, and a
//! process-shared futex lock. The TypeScript API in `lib/` is the public face; this crate
//! owns the operating system.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod error;
pub mod heap;
pub mod js;
pub mod memory;
pub mod sync;
pub mod sys;
