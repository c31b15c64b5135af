//! tendr-sim integration tests (one binary).
mod beyond_assumption;
mod determinism;
#[cfg(feature = "planted-bugs")]
mod planted;
mod scenarios;
mod storage;
mod sweep;
