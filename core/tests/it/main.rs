//! tendr-core integration tests: an in-memory deterministic network (no simulator), recovery,
//! rejection paths, and encoding properties. One test binary for the crate.

mod encoding;
mod memnet;
mod recovery;
mod rejections;
