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
        // `/genesis` for seeds of tendr versions before the CometBFT RPC took that name.
        let answer = crate::rpc::get_json::<serde_json::Value>(rpc, "/tendr/genesis")
            .or_else(|_| crate::rpc::get_json::<serde_json::Value>(rpc, "/genesis"));
        let Some(v) = answer.ok().filter(|v| v["genesis_hash"].is_string()) else {
            continue; // not tendr's answer: the transport's handshake checks this seed
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

/// How long `join` listens to the seeds before writing anything.
const PROBE_SECS: u64 = 5;

/// Connects to the seeds with a throwaway identity and the given genesis. A seed that accepts
/// the connection proves the genesis is the network's; a seed that refuses it for another
/// genesis makes `join` refuse. When no seed answers in time, `join` goes on (the node keeps
/// dialing; `status` and the log report refusals later).
pub async fn probe_seeds(cfg: &Config, genesis: &LoadedGenesis) -> CliResult<()> {
    if cfg.seeds.is_empty() {
        return Ok(());
    }
    let key = crate::keys::generate()?;
    let listen = std::net::SocketAddr::new(cfg.listen.ip(), 0);
    let started = tendr_net::Transport::start(tendr_net::NetConfig {
        listen,
        node_key: key,
        chain_id: genesis.genesis.chain_id.clone(),
        genesis_hash: genesis.hash,
        seeds: cfg.seeds.clone(),
        max_peers: cfg.seeds.len().max(1),
        is_validator: false,
        advertise: None,
        link_shaping: None,
        validator_proof: None,
    })
    .await;
    let Ok((transport, _incoming)) = started else {
        return Ok(()); // the real start reports binding problems
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(PROBE_SECS);
    let verdict = loop {
        if !transport.peers().is_empty() {
            break Ok(());
        }
        if let Some(why) = transport.genesis_refusals().pop() {
            break Err(CliError::input(format!(
                "the network refused the given genesis (chain `{}`, hash {}): {why}. Get the network's \
                 genesis.json from the genesis node",
                genesis.genesis.chain_id,
                genesis.hash.to_hex()
            )));
        }
        if std::time::Instant::now() > deadline {
            tracing::warn!(
                "no seed answered within {PROBE_SECS} s; joining anyway (check seed addresses and UDP firewall rules)"
            );
            break Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    transport.shutdown().await;
    verdict
}
