//! `tendr-node`: the `tendr` command line and the real node behind it.
pub mod cli;
