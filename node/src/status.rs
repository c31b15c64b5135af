//! What the RPC reports and the CLI prints: the node's status, peers and validators.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    pub id: String,
    pub addr: String,
    /// "validator" or "observer", as the peer declared itself.
    pub role: String,
    pub outbound: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ValidatorView {
    pub address: String,
    pub pub_key: String,
    pub power: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConsensusView {
    /// The height being decided.
    pub height: u64,
    pub round: u32,
    pub step: String,
    pub catching_up: bool,
    pub catching_up_to: Option<u64>,
}

/// How the node follows the chain, and how fast it catches up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncView {
    /// "consensus" (at the tip), "block sync" (fetching decided blocks from peers) or
    /// "state sync" (restoring a peer's snapshot).
    pub mode: String,
    /// The highest height a peer showed, while behind it.
    pub target_height: Option<u64>,
    /// Decided heights per second over the last seconds.
    pub blocks_per_sec: f64,
    /// Seconds until the target at that rate.
    pub eta_secs: Option<u64>,
    /// State sync's progress, while it runs or once done.
    pub state_sync: Option<String>,
    /// Peers block sync can ask, and peers it dropped for serving false blocks.
    pub sync_peers: usize,
    pub dropped_peers: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node_id: String,
    pub chain_id: String,
    pub genesis_hash: String,
    /// Network identity (address of the node key).
    pub peer_id: String,
    /// Address of the validator key, if this node has one.
    pub validator_address: Option<String>,
    /// `is_validator` from the config: whether this node wants to validate.
    pub wants_to_validate: bool,
    /// Whether the validator key is in the current validator set (this node votes).
    pub in_validator_set: bool,
    pub listen: String,
    pub rpc: String,
    pub latest_height: u64,
    pub latest_block_time: Option<String>,
    pub latest_block_id: Option<String>,
    pub consensus: ConsensusView,
    #[serde(default)]
    pub sync: SyncView,
    pub validators: Vec<ValidatorView>,
    pub total_power: u64,
    pub peers: Vec<PeerView>,
    pub mempool_size: usize,
    /// Problems the node detected (key not in the validator set, clock skew, ...).
    pub warnings: Vec<String>,
    /// Why the node is not healthy (its store cannot write or is damaged: it does not sign);
    /// `None` when healthy. `/health` answers 503 with it.
    #[serde(default)]
    pub unhealthy: Option<String>,
}

/// The answer of `/health`: `Ok` with the height and catching-up flag, or `Err` with why the
/// node is not healthy (answered with HTTP 503).
pub fn health(s: &Status) -> Result<serde_json::Value, String> {
    match &s.unhealthy {
        Some(why) => Err(format!("not healthy: {why}")),
        None => {
            Ok(serde_json::json!({ "ok": true, "height": s.latest_height, "catching_up": s.consensus.catching_up }))
        }
    }
}

/// A decided block as the RPC shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockView {
    pub height: u64,
    pub id: String,
    pub time: String,
    pub time_ms: u64,
    pub proposer: String,
    pub prev_block_id: Option<String>,
    pub app_hash: String,
    pub validators_hash: String,
    pub txs: Vec<String>,
    pub commit: CommitView,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommitView {
    pub height: u64,
    pub round: u32,
    pub block_id: String,
    pub signers: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TxView {
    pub height: u64,
    pub index: u32,
    pub hash: String,
    pub payload: String,
    pub code: u32,
    pub log: String,
}

/// The RPC's answer to `/query`: the application's [`tendr_core::traits::QueryResult`] with
/// the question and the height of the state it was read from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueryView {
    pub path: String,
    /// The query's data as text (lossy when it is not UTF-8); `key` for the default path.
    pub key: String,
    /// 0: found; 1: not found; 2: the application answers no such path; others: its own.
    pub code: u32,
    /// The value as text, when found and UTF-8.
    pub value: Option<String>,
    /// The value's bytes in hex (empty when not found).
    pub value_hex: String,
    pub log: String,
    /// The last decided height, whose state answered.
    pub height: u64,
}

impl QueryView {
    pub fn new(path: &str, data: &[u8], height: u64, r: tendr_core::traits::QueryResult) -> Self {
        let value = (r.code == 0).then(|| String::from_utf8(r.value.clone()).ok()).flatten();
        QueryView {
            path: path.to_string(),
            key: String::from_utf8_lossy(data).into_owned(),
            code: r.code,
            value,
            value_hex: hex::encode(&r.value),
            log: r.log,
            height,
        }
    }
}

pub fn block_view(block: &tendr_core::types::Block, commit: &tendr_core::types::Commit) -> BlockView {
    let h = &block.header;
    BlockView {
        height: h.height.0,
        id: block.id().to_hex(),
        time: crate::genesis::format_time(h.time.0),
        time_ms: h.time.0,
        proposer: h.proposer.to_string(),
        prev_block_id: h.prev_block_id.map(|b| b.to_hex()),
        app_hash: h.app_hash.to_hex(),
        validators_hash: h.validators_hash.to_hex(),
        txs: block
            .txs
            .iter()
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect(),
        commit: CommitView {
            height: commit.height.0,
            round: commit.round.0,
            block_id: commit.block_id.to_hex(),
            signers: commit.signatures.iter().map(|s| s.validator.to_string()).collect(),
        },
    }
}

pub fn tx_view(r: &crate::store::TxRecord) -> TxView {
    TxView {
        height: r.height,
        index: r.index,
        hash: r.hash.clone(),
        payload: String::from_utf8_lossy(&r.tx).into_owned(),
        code: r.result.code,
        log: r.result.log.clone(),
    }
}
