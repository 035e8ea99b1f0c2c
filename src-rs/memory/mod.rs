//! The segment layer: POSIX shared-memory objects ([`shm`]), mappings of them
//! ([`mapping::Region`]), managed segments with a validated header ([`segment`]), and
//! anonymous ones, on objects without a name ([`anonymous`]).
//! Everything above (heap, sync, the JavaScript boundary) works on a [`mapping::Region`].

pub mod anonymous;
pub mod backing;
pub mod mapping;
pub mod peek;
pub mod segment;
pub mod shm;
