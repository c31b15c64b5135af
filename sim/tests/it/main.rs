//! tendr-sim integration tests.
mod debug;
