//! tendr: Tendermint BFT consensus, simulation-first.
pub use tendr_core as core;
pub use tendr_kv as kv;
pub use tendr_net as net;
pub use tendr_node as node;
pub use tendr_sim as sim;
