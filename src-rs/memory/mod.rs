//! The segment layer: POSIX shared-memory objects ([`shm`]), mappings of them
//! ([`mapping::Region`]), and managed segments with a validated header ([`segment`]).
//! Everything above (heap, sync, the JavaScript boundary) works on a [`mapping::Region`].

pub mod mapping;
pub mod segment;
pub mod shm;
