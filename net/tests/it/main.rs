//! Integration tests of tendr-net over real QUIC on loopback (one binary, modules inside).

mod attacks;
mod cluster;
mod consensus;
mod far_future;
mod refusals;
mod rogue;
