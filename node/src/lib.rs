//! `tendr-node`: the `tendr` command line and the real node behind it: config, genesis, key
//! files, the durable redb store, the double-sign guard beside the validator key
//! ([`signing`]), the HTTP/JSON RPC with Prometheus metrics, and the runtime
//! that drives `tendr_core::traits::Node` with a wall clock, for any application:
//! [`cli::main_with`] takes an [`app::AppFactory`] (e.g. `tendr_kv::KvApp::new`) and runs the
//! whole command line with it.
//!
//! What it does not do: consensus (that is `tendr-core`), or the QUIC transport (`tendr-net`).
#![forbid(unsafe_code)]

pub mod abci;
pub mod app;
pub mod bench;
#[cfg(feature = "byzantine")]
pub mod byzantine;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod genesis;
pub mod keys;
pub mod metrics;
pub mod netwire;
pub mod rpc;
pub mod runtime;
pub mod signing;
pub mod status;
pub mod store;
