//! Integration tests of tendr-net over real QUIC on loopback (one binary, modules inside).

mod cluster;
mod consensus;
