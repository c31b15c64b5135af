//! Network checks the CLI makes before a node runs (the transport itself is `tendr-net`,
//! started by [`crate::runtime::run`]).

use crate::config::Config;
use crate::error::{CliError, CliResult};
use crate::genesis::LoadedGenesis;
use std::time::Duration;

/// Refuses to join when a reachable seed runs another genesis. Asks each seed's RPC at its
/// default address (port + 10000); a seed whose RPC is not reachable is checked by the
/// transport's handshake instead.
pub fn check_network_genesis(cfg: &Config, genesis: &LoadedGenesis) -> CliResult<()> {
    for seed in &cfg.seeds {
        let rpc = crate::config::default_rpc_addr(seed.port());
        let rpc = std::net::SocketAddr::new(seed.ip(), rpc.port());
        if std::net::TcpStream::connect_timeout(&rpc, Duration::from_millis(500)).is_err() {
            continue;
        }
        let Ok(v) = crate::rpc::get_json::<serde_json::Value>(rpc, "/genesis") else {
            continue;
        };
        let theirs = v["genesis_hash"].as_str().unwrap_or_default();
        if theirs != genesis.hash.to_hex() {
            return Err(CliError::input(format!(
                "the network at seed {seed} runs chain `{}` with genesis hash {theirs}, but the given genesis \
                 (chain `{}`) has hash {}: get the network's genesis.json from the genesis node",
                v["chain_id"].as_str().unwrap_or("?"),
                genesis.genesis.chain_id,
                genesis.hash.to_hex()
            )));
        }
    }
    Ok(())
}
