//! The node's RPC (default `127.0.0.1:<port + 10000>`): CometBFT v0.38's RPC, in its URI form
//! (`GET /status`, `/block?height=5`, `/broadcast_tx_commit?tx="k=v"`) and as JSON-RPC 2.0
//! (`POST /`), in CometBFT's JSON shapes ([`comet`], [`shapes`]); tendr's own routes under
//! `/tendr/` ([`tendr_routes`]: what the CLI reads) and Prometheus `/metrics`; all served by
//! hyper on the node's tokio runtime with limits on connections, heads, bodies and time
//! ([`server`]). [`client`] is the small HTTP client the CLI uses.
//!
//! `/websocket` ([`websocket`]) takes the same calls over a websocket, plus subscriptions to
//! `NewBlock`, `NewBlockHeader` and `Tx` events.
//!
//! What it does not do: Merkle proofs (`prove=true` is refused), and state at past heights
//! (`abci_query` answers about the latest state).

pub mod client;
pub mod comet;
pub mod lenient;
pub mod params;
pub mod server;
pub mod shapes;
pub mod tendr_routes;
pub mod websocket;

pub use client::{get_json, percent_encode, post_json, request, HttpReply};
pub use server::{RpcLimits, RpcServer};
