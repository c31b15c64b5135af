//! CometBFT v0.38's RPC methods that tendr answers truthfully, each one function from
//! [`Params`] to the `result` CometBFT would give (or its JSON-RPC error), the same for the URI
//! form (`GET /block?height=5`) and JSON-RPC 2.0 (`POST /`).
//!
//! Reads come from the store (blocks, commits, the transaction history) or from the running
//! node through a closure over its `NodeView` (validators, mempool, the application's
//! `query` and `check_tx`). What tendr cannot answer truthfully is an error that says so
//! (proofs, state at past heights, validator sets it no longer knows), never invented data.

use super::params::{Bytes, ParamError, Params};
use super::server::RpcLimits;
use super::shapes::{self, b64, hex_up};
use crate::runtime::{app_query, DecidedBlock, Shared};
use crate::store::{Store, TxRecord};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use tendr_core::crypto::sha256;
use tendr_core::traits::{Storage, StorageError};
use tendr_core::types::{Block, BlockId, Commit, Hash, Height};
use tendr_core::validator::ValidatorSet;
use tendr_net::runtime::Command;
use tokio::sync::{broadcast, oneshot};

/// The version `status` reports: CometBFT's RPC version (clients choose their dialect by it),
/// then tendr's own.
pub const VERSION: &str = concat!("0.38.0-tendr.", env!("CARGO_PKG_VERSION"));
/// Blocks in one `blockchain` answer (CometBFT's limit).
const MAX_BLOCK_METAS: u64 = 20;
/// `per_page` default and maximum (CometBFT's).
const DEFAULT_PER_PAGE: i64 = 30;
const MAX_PER_PAGE: i64 = 100;
/// Validator sets remembered for `validators?height=` beyond the current, previous and genesis.
const KNOWN_SETS: usize = 64;
/// How far back `block_by_hash` looks (tendr keeps no index of block hashes).
pub const BLOCK_BY_HASH_DEPTH: u64 = 10_000;

/// A JSON-RPC error in CometBFT's shape: `{"code", "message", "data"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    pub code: i64,
    pub message: &'static str,
    pub data: String,
}

impl RpcError {
    pub fn parse(data: impl Into<String>) -> Self {
        RpcError {
            code: -32700,
            message: "Parse error",
            data: data.into(),
        }
    }
    pub fn invalid_request(data: impl Into<String>) -> Self {
        RpcError {
            code: -32600,
            message: "Invalid Request",
            data: data.into(),
        }
    }
    pub fn method_not_found(method: &str) -> Self {
        RpcError {
            code: -32601,
            message: "Method not found",
            data: format!("tendr answers no method `{method}`; GET / lists the methods it answers"),
        }
    }
    pub fn invalid_params(data: impl Into<String>) -> Self {
        RpcError {
            code: -32602,
            message: "Invalid params",
            data: data.into(),
        }
    }
    pub fn internal(data: impl Into<String>) -> Self {
        RpcError {
            code: -32603,
            message: "Internal error",
            data: data.into(),
        }
    }
    /// The `error` member of a JSON-RPC response.
    pub fn to_json(&self) -> Value {
        json!({"code": self.code, "message": self.message, "data": self.data})
    }
}

impl From<ParamError> for RpcError {
    fn from(e: ParamError) -> Self {
        RpcError::invalid_params(e.0)
    }
}

impl From<StorageError> for RpcError {
    fn from(e: StorageError) -> Self {
        RpcError::internal(e.to_string())
    }
}

type CallResult = Result<Value, RpcError>;

/// The methods answered, with their arguments in order (for positional JSON-RPC params).
pub const METHODS: &[(&str, &[&str])] = &[
    ("health", &[]),
    ("status", &[]),
    ("net_info", &[]),
    ("blockchain", &["minHeight", "maxHeight"]),
    ("block", &["height"]),
    ("block_by_hash", &["hash"]),
    ("block_results", &["height"]),
    ("commit", &["height"]),
    ("header", &["height"]),
    ("header_by_hash", &["hash"]),
    ("validators", &["height", "page", "per_page"]),
    ("genesis", &[]),
    ("consensus_state", &[]),
    ("unconfirmed_txs", &["limit"]),
    ("num_unconfirmed_txs", &[]),
    ("tx", &["hash", "prove"]),
    ("tx_search", &["query", "prove", "page", "per_page", "order_by"]),
    ("broadcast_tx_async", &["tx"]),
    ("broadcast_tx_sync", &["tx"]),
    ("broadcast_tx_commit", &["tx"]),
    ("abci_info", &[]),
    ("abci_query", &["path", "data", "height", "prove"]),
    ("check_tx", &["tx"]),
];

/// The argument names of `method`, if tendr answers it.
pub fn arg_names(method: &str) -> Option<&'static [&'static str]> {
    METHODS.iter().find(|(m, _)| *m == method).map(|(_, a)| *a)
}

/// What the methods share: the node, the limits, and the validator sets seen so far.
pub struct Ctx {
    pub shared: Arc<Shared>,
    pub limits: RpcLimits,
    /// Websocket clients connected (at most [`super::websocket::MAX_CLIENTS`]).
    pub ws_clients: Arc<tokio::sync::Semaphore>,
    /// Store reads running at once (each on the blocking pool), so that many expensive calls
    /// (`block_by_hash` scans, `blockchain`) queue instead of taking a thread each.
    store_reads: tokio::sync::Semaphore,
    known_sets: Mutex<Vec<ValidatorSet>>,
}

impl Ctx {
    pub fn new(shared: Arc<Shared>, limits: RpcLimits) -> Self {
        let genesis = shared.genesis.validators.clone();
        Ctx {
            shared,
            limits,
            ws_clients: Arc::new(tokio::sync::Semaphore::new(super::websocket::MAX_CLIENTS)),
            store_reads: tokio::sync::Semaphore::new(STORE_READS),
            known_sets: Mutex::new(vec![genesis]),
        }
    }

    fn remember(&self, vs: &ValidatorSet) {
        let mut known = self.known_sets.lock().expect("known sets");
        let h = vs.hash();
        if !known.iter().any(|k| k.hash() == h) {
            if known.len() >= KNOWN_SETS {
                known.remove(1); // keep the genesis set
            }
            known.push(vs.clone());
        }
    }

    fn known_set(&self, hash: &Hash) -> Option<ValidatorSet> {
        let known = self.known_sets.lock().expect("known sets");
        known.iter().find(|k| k.hash() == *hash).cloned()
    }
}

/// Runs one call.
pub async fn call(ctx: &Ctx, method: &str, p: &Params) -> CallResult {
    match method {
        // CometBFT's health: `{}`, or an error while this node cannot sign (its store).
        "health" => match ctx.shared.unhealthy() {
            Some(why) => Err(RpcError::internal(format!("not healthy: {why}"))),
            None => Ok(json!({})),
        },
        "status" => status(ctx).await,
        "net_info" => net_info(ctx).await,
        "blockchain" => blockchain(ctx, p).await,
        "block" => block(ctx, p).await,
        "block_by_hash" => block_by_hash(ctx, p, false).await,
        "block_results" => block_results(ctx, p).await,
        "commit" => commit(ctx, p).await,
        "header" => header(ctx, p).await,
        "header_by_hash" => block_by_hash(ctx, p, true).await,
        "validators" => validators(ctx, p).await,
        "genesis" => Ok(genesis(ctx)),
        "consensus_state" => consensus_state(ctx).await,
        "unconfirmed_txs" => unconfirmed(ctx, p, true).await,
        "num_unconfirmed_txs" => unconfirmed(ctx, p, false).await,
        "tx" => tx(ctx, p).await,
        "tx_search" => tx_search(ctx, p).await,
        "broadcast_tx_async" => broadcast_async(ctx, p).await,
        "broadcast_tx_sync" => broadcast_sync(ctx, p).await,
        "broadcast_tx_commit" => broadcast_commit(ctx, p).await,
        "abci_info" => abci_info(ctx).await,
        "abci_query" => abci_query(ctx, p).await,
        "check_tx" => check_tx(ctx, p).await,
        m => Err(RpcError::method_not_found(m)),
    }
}

fn busy() -> RpcError {
    RpcError::internal("the node is busy or shutting down; try again")
}

/// The running node's consensus state, read inside its driver task.
struct Tip {
    chain_id: String,
    /// Last decided height (0 before the first block).
    height: u64,
    /// The validators of `height + 1`, the height being decided.
    validators: ValidatorSet,
    last_validators: Option<ValidatorSet>,
    /// The application's hash after the last decided block.
    app_hash: Hash,
    catching_up: bool,
    round: u32,
    step: tendr_core::state_machine::Step,
    locked: Option<BlockId>,
    valid: Option<BlockId>,
    proposer: tendr_core::types::Address,
    /// When the height being decided could start: the last block's time (the genesis time
    /// before the first block).
    start_ms: u64,
}

async fn tip(ctx: &Ctx) -> Result<Tip, RpcError> {
    let t = ctx
        .shared
        .ask(|v| {
            let e = v.engine();
            let c = e.chain();
            let s = e.state();
            Tip {
                chain_id: c.chain_id.clone(),
                height: c.height.0.saturating_sub(1),
                validators: e.validators().clone(),
                last_validators: c.last_validators.clone(),
                app_hash: c.app_hash,
                catching_up: e.catching_up_to().is_some(),
                round: e.round().0,
                step: e.step(),
                locked: s.locked.map(|l| l.1),
                valid: s.valid.map(|l| l.1),
                proposer: c.proposer(e.round()),
                start_ms: c.last_block.map_or(c.genesis_time.0, |(_, t)| t.0),
            }
        })
        .await
        .ok_or_else(busy)?;
    ctx.remember(&t.validators);
    if let Some(l) = &t.last_validators {
        ctx.remember(l);
    }
    Ok(t)
}

/// Store reads at once (see [`Ctx`]).
const STORE_READS: usize = 8;

/// Runs a store read on the blocking pool, at most [`STORE_READS`] at once.
async fn read<T: Send + 'static>(
    ctx: &Ctx,
    f: impl FnOnce(&Store) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, RpcError> {
    let _turn = ctx.store_reads.acquire().await.map_err(|_| busy())?;
    let store = ctx.shared.store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| RpcError::internal(format!("store read: {e}")))?
        .map_err(RpcError::from)
}

async fn latest_height(ctx: &Ctx) -> Result<u64, RpcError> {
    read(ctx, |s| s.last_height().map(|h| h.0)).await
}

/// A `height` argument resolved (see [`resolve_height`]) and checked against what the store
/// still holds (CometBFT's words when it was pruned).
async fn stored_height(ctx: &Ctx, h: Option<i64>) -> Result<u64, RpcError> {
    let (latest, earliest) = read(ctx, |s| Ok((s.last_height()?.0, s.earliest_height()?))).await?;
    let h = resolve_height(h, latest)?;
    if h < earliest {
        return Err(RpcError::internal(format!(
            "height {h} is not available, lowest height is {earliest}"
        )));
    }
    Ok(h)
}

/// CometBFT's reading of a `height` argument: absent or 0 is the latest; otherwise 1..=latest.
fn resolve_height(h: Option<i64>, latest: u64) -> Result<u64, RpcError> {
    match h {
        None | Some(0) if latest == 0 => Err(RpcError::internal("no block has been decided yet")),
        None | Some(0) => Ok(latest),
        Some(h) if h < 0 => Err(RpcError::internal(format!(
            "height must be greater than 0, but got {h}"
        ))),
        Some(h) if h as u64 > latest => Err(RpcError::internal(format!(
            "height {h} must be less than or equal to the current blockchain height {latest}"
        ))),
        Some(h) => Ok(h as u64),
    }
}

/// A decided block with what its CometBFT form needs besides itself.
struct Loaded {
    block: Block,
    commit: Commit,
    /// The validators hash of the next height, when that block is stored.
    next_validators: Option<Hash>,
    /// The time of the previous block (for `last_commit`'s signatures).
    prev_time_ms: u64,
}

fn load(s: &Store, h: u64, genesis_ms: u64) -> Result<Option<Loaded>, StorageError> {
    let Some((block, commit)) = s.decided(Height(h))? else {
        return Ok(None);
    };
    let next_validators = s.decided(Height(h + 1))?.map(|(b, _)| b.header.validators_hash);
    let prev_time_ms = match h {
        0 | 1 => genesis_ms,
        _ => s.decided(Height(h - 1))?.map_or(genesis_ms, |(b, _)| b.header.time.0),
    };
    Ok(Some(Loaded {
        block,
        commit,
        next_validators,
        prev_time_ms,
    }))
}

async fn load_at(ctx: &Ctx, h: u64) -> Result<Loaded, RpcError> {
    let g = ctx.shared.genesis.time.0;
    read(ctx, move |s| load(s, h, g))
        .await?
        .ok_or_else(|| RpcError::internal(format!("no decided block at height {h}")))
}

/// The next height's validators hash: its block's, or (for the latest block) the node's set.
async fn next_validators(ctx: &Ctx, l: &Loaded) -> Result<Hash, RpcError> {
    match l.next_validators {
        Some(h) => Ok(h),
        None => Ok(tip(ctx).await?.validators.hash()),
    }
}

async fn block_json(ctx: &Ctx, l: &Loaded) -> Result<Value, RpcError> {
    let next = next_validators(ctx, l).await?;
    Ok(json!({
        "block_id": shapes::block_id(Some(&l.block.id())),
        "block": shapes::block(&l.block, &next, l.prev_time_ms),
    }))
}

/// Decided block `h` as `/block` answers it (`{block_id, block}`), and its header.
pub async fn block_and_header(ctx: &Ctx, h: u64) -> Result<(Value, Value), RpcError> {
    let l = load_at(ctx, h).await?;
    let v = block_json(ctx, &l).await?;
    let header = v["block"]["header"].clone();
    Ok((v, header))
}

async fn block(ctx: &Ctx, p: &Params) -> CallResult {
    let h = stored_height(ctx, p.int("height")?).await?;
    let l = load_at(ctx, h).await?;
    block_json(ctx, &l).await
}

async fn header(ctx: &Ctx, p: &Params) -> CallResult {
    let h = stored_height(ctx, p.int("height")?).await?;
    let l = load_at(ctx, h).await?;
    let next = next_validators(ctx, &l).await?;
    Ok(json!({"header": shapes::header(&l.block.header, &next)}))
}

/// `block_by_hash` and `header_by_hash`: searches the latest [`BLOCK_BY_HASH_DEPTH`] blocks.
async fn block_by_hash(ctx: &Ctx, p: &Params, header_only: bool) -> CallResult {
    let hash = p
        .bytes("hash", Bytes::Base64)?
        .ok_or_else(|| RpcError::invalid_params("missing `hash`"))?;
    let Ok(want) = <[u8; 32]>::try_from(hash.as_slice()) else {
        return Err(RpcError::invalid_params(format!(
            "`hash`: expected 32 bytes, got {}",
            hash.len()
        )));
    };
    let found = read(ctx, move |s| {
        let last = s.last_height()?.0;
        for h in (last.saturating_sub(BLOCK_BY_HASH_DEPTH) + 1..=last).rev() {
            if let Some((b, _)) = s.decided(Height(h))? {
                if b.id().0 == want {
                    return Ok(Some(h));
                }
            }
        }
        Ok(None)
    })
    .await?;
    let null = if header_only {
        json!({"header": null})
    } else {
        json!({"block_id": shapes::block_id(None), "block": null})
    };
    let Some(h) = found else {
        return Ok(null); // CometBFT answers an unknown hash with a null block
    };
    let l = load_at(ctx, h).await?;
    if header_only {
        let next = next_validators(ctx, &l).await?;
        return Ok(json!({"header": shapes::header(&l.block.header, &next)}));
    }
    block_json(ctx, &l).await
}

async fn blockchain(ctx: &Ctx, p: &Params) -> CallResult {
    let latest = latest_height(ctx).await?;
    let (min, max) = (p.int("minHeight")?.unwrap_or(0), p.int("maxHeight")?.unwrap_or(0));
    if min < 0 || max < 0 {
        return Err(RpcError::internal("heights must be non-negative"));
    }
    let max = if max == 0 { latest } else { (max as u64).min(latest) };
    let min = (min as u64).max(1).max((max + 1).saturating_sub(MAX_BLOCK_METAS));
    if min > max && latest > 0 {
        return Err(RpcError::internal(format!(
            "min height {min} can't be greater than max height {max}"
        )));
    }
    let current = tip(ctx).await?.validators.hash();
    let metas = read(ctx, move |s| {
        let mut out = Vec::new();
        let mut next: Option<Hash> = s.decided(Height(max + 1))?.map(|(b, _)| b.header.validators_hash);
        for h in (min..=max).rev() {
            let Some((b, _)) = s.decided(Height(h))? else { continue };
            let nv = next.unwrap_or(current);
            out.push(json!({
                "block_id": shapes::block_id(Some(&b.id())),
                "block_size": shapes::block_size(&b).to_string(),
                "header": shapes::header(&b.header, &nv),
                "num_txs": b.txs.len().to_string(),
            }));
            next = Some(b.header.validators_hash);
        }
        Ok(out)
    })
    .await?;
    Ok(json!({"last_height": latest.to_string(), "block_metas": metas}))
}

async fn commit(ctx: &Ctx, p: &Params) -> CallResult {
    let h = stored_height(ctx, p.int("height")?).await?;
    let l = load_at(ctx, h).await?;
    let next = next_validators(ctx, &l).await?;
    Ok(json!({
        "signed_header": {
            "header": shapes::header(&l.block.header, &next),
            "commit": shapes::commit(Some(&l.commit), l.block.header.time.0),
        },
        "canonical": true,
    }))
}

async fn block_results(ctx: &Ctx, p: &Params) -> CallResult {
    let h = stored_height(ctx, p.int("height")?).await?;
    let (done, txs, next_app) = read(ctx, move |s| {
        let next_app = s.decided(Height(h + 1))?.map(|(b, _)| b.header.app_hash);
        Ok((s.results_height()?, s.transactions_at(h)?, next_app))
    })
    .await?;
    if done < h {
        return Err(RpcError::internal(format!(
            "the results of height {h} are not recorded yet; try again"
        )));
    }
    let app_hash = match next_app {
        Some(a) => a,
        None => tip(ctx).await?.app_hash,
    };
    let results: Vec<Value> = txs.iter().map(|r| shapes::tx_result(&r.result)).collect();
    Ok(json!({
        "height": h.to_string(),
        "txs_results": results,
        "finalize_block_events": [],
        "validator_updates": [],
        "consensus_param_updates": null,
        "app_hash": hex_up(&app_hash.0),
    }))
}

/// The validators of a height: the node's current or previous set, the genesis set, or one
/// seen since start, whichever has the hash the block's header names.
async fn validator_set_at(ctx: &Ctx, h: u64, t: &Tip) -> Result<ValidatorSet, RpcError> {
    if h == t.height + 1 {
        return Ok(t.validators.clone());
    }
    let header_hash = read(ctx, move |s| {
        Ok(s.decided(Height(h))?.map(|(b, _)| b.header.validators_hash))
    })
    .await?
    .ok_or_else(|| RpcError::internal(format!("no decided block at height {h}")))?;
    ctx.known_set(&header_hash).ok_or_else(|| {
        RpcError::internal(format!(
            "the validator set of height {h} is no longer known to this node (tendr keeps the \
             genesis set and the sets seen since it started); ask a height closer to the tip"
        ))
    })
}

fn page_bounds(p: &Params, total: usize) -> Result<(usize, usize), RpcError> {
    let per_page = p.int("per_page")?.unwrap_or(DEFAULT_PER_PAGE).clamp(1, MAX_PER_PAGE) as usize;
    let pages = total.div_ceil(per_page).max(1);
    let page = p.int("page")?.unwrap_or(1);
    if page < 1 || page as usize > pages {
        return Err(RpcError::internal(format!(
            "page should be within [1, {pages}] range, given {page}"
        )));
    }
    let start = (page as usize - 1) * per_page;
    Ok((start, (start + per_page).min(total)))
}

async fn validators(ctx: &Ctx, p: &Params) -> CallResult {
    let t = tip(ctx).await?;
    let h = match p.int("height")? {
        None | Some(0) => t.height + 1,
        Some(h) if h < 0 || h as u64 > t.height + 1 => {
            return Err(RpcError::internal(format!(
                "height {h} must be between 1 and the next height {}",
                t.height + 1
            )))
        }
        Some(h) => h as u64,
    };
    let vs = validator_set_at(ctx, h, &t).await?;
    let all = shapes::validators(&vs);
    let (from, to) = page_bounds(p, all.len())?;
    Ok(json!({
        "block_height": h.to_string(),
        "validators": all[from..to],
        "count": (to - from).to_string(),
        "total": all.len().to_string(),
    }))
}

fn genesis(ctx: &Ctx) -> Value {
    let g = &ctx.shared.genesis;
    let p = &g.genesis.consensus_params;
    let validators: Vec<Value> = g
        .validators
        .validators()
        .iter()
        .zip(&g.genesis.validators)
        .map(|(v, gv)| {
            json!({
                "address": hex_up(&v.address.0),
                "pub_key": shapes::pub_key(&v.pub_key),
                "power": v.power.0.to_string(),
                "name": gv.name,
            })
        })
        .collect();
    json!({"genesis": {
        "genesis_time": shapes::time(g.time.0),
        "chain_id": g.genesis.chain_id,
        "initial_height": "1",
        "consensus_params": {
            "block": {"max_bytes": p.max_block_bytes.to_string(), "max_gas": "-1"},
            "evidence": {"max_age_num_blocks": "100000", "max_age_duration": "172800000000000", "max_bytes": "1048576"},
            "validator": {"pub_key_types": ["secp256k1"]},
            "version": {"app": "0"},
            "abci": {"vote_extensions_enable_height": "0"},
        },
        "validators": validators,
        "app_hash": hex_up(&g.app_hash.0),
        "app_state": {"tendr": g.genesis},
    }})
}

async fn consensus_state(ctx: &Ctx) -> CallResult {
    use tendr_core::state_machine::Step;
    let t = tip(ctx).await?;
    // CometBFT's RoundStepType numbers.
    let step = match t.step {
        Step::Propose => 3,
        Step::Prevote => 4,
        Step::Precommit => 6,
        Step::Commit => 8,
    };
    let index = t.validators.index_of(&t.proposer).map_or(-1, |i| i.0 as i64);
    let hash = |h: Option<BlockId>| h.map(|h| hex_up(&h.0)).unwrap_or_default();
    let vote_sets = ctx.shared.ask(height_vote_set).await.ok_or_else(busy)?;
    Ok(json!({"round_state": {
        "height/round/step": format!("{}/{}/{}", t.height + 1, t.round, step),
        "start_time": shapes::time(t.start_ms),
        "proposal_block_hash": hash(t.valid),
        "locked_block_hash": hash(t.locked),
        "valid_block_hash": hash(t.valid),
        "height_vote_set": vote_sets,
        "proposer": {"address": hex_up(&t.proposer.0), "index": index},
    }}))
}

/// The votes of the height being decided, round by round, in CometBFT's shape: one entry per
/// validator, `Vote{index:ADDRESS height/round/type(Name) BLOCK SIGNATURE @ time}` with
/// 6-byte fingerprints (`000000000000` for nil), or `nil-Vote` where none arrived, and a bit
/// array with the power that voted. tendr's votes carry no time: it shows the Unix epoch.
fn height_vote_set(v: &dyn tendr_net::runtime::NodeView) -> Vec<Value> {
    use tendr_core::types::VoteType;
    let e = v.engine();
    let (vs, keeper) = (e.validators(), e.votes());
    let fingerprint = |b: Option<&[u8]>| b.map_or("000000000000".to_string(), |b| hex_up(&b[..6]));
    let set = |round, vote_type| -> (Vec<String>, String) {
        let mut by_index: Vec<Option<&tendr_core::types::Vote>> = vec![None; vs.len()];
        let tally = keeper.tally(round, vote_type);
        for vote in tally.into_iter().flat_map(|t| t.votes()) {
            if let Some(i) = vs.index_of(&vote.validator) {
                by_index[i.0 as usize].get_or_insert(vote);
            }
        }
        let entries = by_index
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Some(v) => format!(
                    "Vote{{{i}:{} {}/{:02}/{}({:?}) {} {} @ 1970-01-01T00:00:00Z}}",
                    fingerprint(Some(&v.validator.0)),
                    v.height.0,
                    v.round.0,
                    v.vote_type as u8 + 1,
                    v.vote_type,
                    fingerprint(v.block_id.as_ref().map(|b| &b.0[..])),
                    fingerprint(Some(&v.signature.0)),
                ),
                None => "nil-Vote".to_string(),
            })
            .collect();
        let bits: String = by_index.iter().map(|v| if v.is_some() { 'x' } else { '_' }).collect();
        let (voted, total) = (tally.map_or(0, |t| t.power_any()), vs.total_power().0);
        let ratio = if total == 0 { 0.0 } else { voted as f64 / total as f64 };
        (
            entries,
            format!("BA{{{}:{bits}}} {voted}/{total} = {ratio:.2}", vs.len()),
        )
    };
    keeper
        .rounds()
        .map(|r| {
            let (prevotes, prevote_bits) = set(r, VoteType::Prevote);
            let (precommits, precommit_bits) = set(r, VoteType::Precommit);
            json!({
                "round": r.0,
                "prevotes": prevotes,
                "prevotes_bit_array": prevote_bits,
                "precommits": precommits,
                "precommits_bit_array": precommit_bits,
            })
        })
        .collect()
}

async fn unconfirmed(ctx: &Ctx, p: &Params, with_txs: bool) -> CallResult {
    let limit = p.int("limit")?.unwrap_or(DEFAULT_PER_PAGE).clamp(1, MAX_PER_PAGE) as usize;
    let (n, bytes, txs) = ctx
        .shared
        .ask(move |v| {
            let m = v.mempool();
            let txs = if with_txs {
                m.take(limit, usize::MAX)
            } else {
                Vec::new()
            };
            (m.len(), m.bytes(), txs)
        })
        .await
        .ok_or_else(busy)?;
    let listed: Value = if with_txs {
        txs.iter().map(|t| Value::String(b64(t))).collect()
    } else {
        Value::Null
    };
    Ok(json!({
        "n_txs": if with_txs { txs.len() } else { n }.to_string(),
        "total": n.to_string(),
        "total_bytes": bytes.to_string(),
        "txs": listed,
    }))
}

fn refuse_proofs(p: &Params) -> Result<(), RpcError> {
    if p.bool("prove")? == Some(true) {
        return Err(RpcError::internal("tendr keeps no Merkle proofs; ask with prove=false"));
    }
    Ok(())
}

async fn tx(ctx: &Ctx, p: &Params) -> CallResult {
    refuse_proofs(p)?;
    let hash = p
        .bytes("hash", Bytes::Base64)?
        .ok_or_else(|| RpcError::invalid_params("missing `hash`"))?;
    let hex = hex::encode(&hash);
    let found = read(ctx, move |s| s.transaction_by_hash(&hex)).await?;
    match found {
        Some(r) => Ok(shapes::tx(&r)),
        None => Err(RpcError::internal(format!("tx ({}) not found", hex_up(&hash)))),
    }
}

/// One condition of a `tx_search` query.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cond {
    Height(u64),
    Hash(String),
}

/// `tx.height = 5 AND tx.hash = 'AB..'`: equality on `tx.height` and `tx.hash`, joined by AND.
fn parse_tx_query(q: &str) -> Result<Vec<Cond>, RpcError> {
    let unsupported = |c: &str| {
        RpcError::invalid_params(format!(
            "query condition `{c}`: tendr answers `tx.height = N` and `tx.hash = 'HEX'` (equality, joined by AND)"
        ))
    };
    let mut conds = Vec::new();
    for c in q.split(" AND ").map(str::trim) {
        let (k, v) = c.split_once('=').ok_or_else(|| unsupported(c))?;
        let v = v.trim().trim_matches(|ch| ch == '\'' || ch == '"');
        match k.trim() {
            "tx.height" => conds.push(Cond::Height(v.parse().map_err(|_| unsupported(c))?)),
            "tx.hash" if hex::decode(v).is_ok() => conds.push(Cond::Hash(v.to_ascii_lowercase())),
            _ => return Err(unsupported(c)),
        }
    }
    Ok(conds)
}

fn matches(r: &TxRecord, conds: &[Cond]) -> bool {
    conds.iter().all(|c| match c {
        Cond::Height(h) => r.height == *h,
        Cond::Hash(h) => r.hash == *h,
    })
}

async fn tx_search(ctx: &Ctx, p: &Params) -> CallResult {
    refuse_proofs(p)?;
    let q = p
        .string("query")?
        .ok_or_else(|| RpcError::invalid_params("missing `query`"))?;
    let conds = parse_tx_query(&q)?;
    let desc = match p.string("order_by")?.as_deref() {
        None | Some("") | Some("asc") => false,
        Some("desc") => true,
        Some(o) => {
            return Err(RpcError::invalid_params(format!(
                "order_by: expected asc or desc, got {o}"
            )))
        }
    };
    let c = conds.clone();
    let mut found: Vec<TxRecord> = read(ctx, move |s| {
        let hits = match c.iter().find_map(|c| match c {
            Cond::Hash(h) => Some(h.clone()),
            _ => None,
        }) {
            Some(h) => s.transaction_by_hash(&h)?.into_iter().collect(),
            None => match c.first() {
                Some(Cond::Height(h)) => s.transactions_at(*h)?,
                _ => Vec::new(),
            },
        };
        Ok(hits)
    })
    .await?;
    found.retain(|r| matches(r, &conds));
    if desc {
        found.reverse();
    }
    let (from, to) = page_bounds(p, found.len())?;
    let txs: Vec<Value> = found[from..to].iter().map(shapes::tx).collect();
    Ok(json!({"txs": txs, "total_count": found.len().to_string()}))
}

fn tx_arg(p: &Params) -> Result<Vec<u8>, RpcError> {
    p.bytes("tx", Bytes::Base64)?
        .ok_or_else(|| RpcError::invalid_params("missing `tx`"))
}

fn broadcast_result(hash: &Hash, code: u32, log: &str) -> Value {
    json!({"code": code, "data": "", "log": log, "codespace": "", "hash": hex_up(&hash.0)})
}

/// Hands the transaction to the node without waiting for its check (CometBFT's async).
async fn broadcast_async(ctx: &Ctx, p: &Params) -> CallResult {
    let tx = tx_arg(p)?;
    let hash = sha256(&tx);
    let (reply, _ignored) = oneshot::channel();
    ctx.shared
        .commands
        .send(Command::SubmitTx(tx, reply))
        .await
        .map_err(|_| busy())?;
    Ok(broadcast_result(&hash, 0, ""))
}

async fn broadcast_sync(ctx: &Ctx, p: &Params) -> CallResult {
    let tx = tx_arg(p)?;
    let hash = sha256(&tx);
    Ok(match ctx.shared.submit(tx).await {
        Ok(_) => broadcast_result(&hash, 0, ""),
        Err(e) => broadcast_result(&hash, 1, &e),
    })
}

async fn broadcast_commit(ctx: &Ctx, p: &Params) -> CallResult {
    let tx = tx_arg(p)?;
    let hash = sha256(&tx);
    let mut decided = ctx.shared.decided.subscribe();
    let checked = ctx.shared.submit(tx).await;
    let check = |code: u32, log: &str| shapes::tx_result(&tendr_core::traits::TxResult { code, log: log.into() });
    if let Err(e) = checked {
        return Ok(json!({
            "check_tx": check(1, &e),
            "tx_result": check(0, ""),
            "hash": hex_up(&hash.0),
            "height": "0",
        }));
    }
    let wait = ctx.limits.broadcast_commit_timeout;
    let found = tokio::time::timeout(wait, wait_for_tx(ctx, &mut decided, hash)).await;
    match found {
        Ok(Ok(r)) => Ok(json!({
            "check_tx": check(0, ""),
            "tx_result": shapes::tx_result(&r.result),
            "hash": hex_up(&hash.0),
            "height": r.height.to_string(),
        })),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(RpcError::internal(format!(
            "timed out waiting for tx {} to be included in a block ({} s); it may still be committed: \
             look it up with /tx?hash=0x{}",
            hex_up(&hash.0),
            wait.as_secs(),
            hex_up(&hash.0)
        ))),
    }
}

/// Waits for the block that includes `hash`; when the waiter fell behind, asks the store.
async fn wait_for_tx(
    ctx: &Ctx,
    decided: &mut broadcast::Receiver<Arc<DecidedBlock>>,
    hash: Hash,
) -> Result<TxRecord, RpcError> {
    loop {
        match decided.recv().await {
            Ok(d) => {
                if let Some(i) = d.block.txs.iter().position(|t| sha256(t) == hash) {
                    return Ok(TxRecord {
                        height: d.block.height().0,
                        index: i as u32,
                        hash: hash.to_hex(),
                        tx: d.block.txs[i].clone(),
                        result: d.results.get(i).cloned().unwrap_or(tendr_core::traits::TxResult {
                            code: 0,
                            log: String::new(),
                        }),
                    });
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let hex = hash.to_hex();
                if let Some(r) = read(ctx, move |s| s.transaction_by_hash(&hex)).await? {
                    return Ok(r);
                }
            }
            Err(broadcast::error::RecvError::Closed) => return Err(busy()),
        }
    }
}

async fn abci_info(ctx: &Ctx) -> CallResult {
    if let Some(target) = ctx.shared.proxy_app.clone() {
        return abci_app_info(target).await;
    }
    let t = tip(ctx).await?;
    Ok(json!({"response": {
        "data": "tendr",
        "version": env!("CARGO_PKG_VERSION"),
        "app_version": "0",
        "last_block_height": t.height.to_string(),
        "last_block_app_hash": b64(&t.app_hash.0),
    }}))
}

/// The ABCI application's own Info, on a connection of its own (as CometBFT's query
/// connection), so a slow answer does not hold up consensus.
async fn abci_app_info(target: crate::abci::ProxyTarget) -> CallResult {
    let i = tokio::task::spawn_blocking(move || target.info())
        .await
        .map_err(|e| RpcError::internal(format!("abci_info: {e}")))?
        .map_err(|e| RpcError::internal(e.to_string()))?;
    Ok(json!({"response": {
        "data": i.data,
        "version": i.version,
        "app_version": i.app_version.to_string(),
        "last_block_height": i.last_block_height.to_string(),
        "last_block_app_hash": b64(&i.last_block_app_hash),
    }}))
}

async fn abci_query(ctx: &Ctx, p: &Params) -> CallResult {
    refuse_proofs(p)?;
    let path = p.string("path")?.unwrap_or_default();
    let data = p.bytes("data", Bytes::Hex)?.unwrap_or_default();
    let asked = p.int("height")?.unwrap_or(0);
    let (path2, data2) = (path.clone(), data.clone());
    let (height, r) = ctx
        .shared
        .ask(move |v| app_query(v, &path2, &data2))
        .await
        .ok_or_else(busy)?;
    if asked != 0 && asked as u64 != height {
        return Err(RpcError::internal(format!(
            "tendr answers queries about the latest state only (height {height}); height {asked} was asked"
        )));
    }
    let mut resp = json!({
        "code": r.code,
        "log": r.log,
        "info": "",
        "index": "0",
        "proofOps": null,
        "height": height.to_string(),
        "codespace": "",
    });
    if !data.is_empty() {
        resp["key"] = json!(b64(&data));
    }
    if !r.value.is_empty() {
        resp["value"] = json!(b64(&r.value));
    }
    Ok(json!({ "response": resp }))
}

async fn check_tx(ctx: &Ctx, p: &Params) -> CallResult {
    let tx = tx_arg(p)?;
    let r = ctx.shared.ask(move |v| v.check_tx(&tx)).await.ok_or_else(busy)?;
    let (code, log) = match r {
        Ok(()) => (0, String::new()),
        Err(e) => (1, e),
    };
    Ok(shapes::tx_result(&tendr_core::traits::TxResult { code, log }))
}

async fn status(ctx: &Ctx) -> CallResult {
    let t = tip(ctx).await?;
    let info = &ctx.shared.info;
    let g = ctx.shared.genesis.time.0;
    let (latest, earliest) = read(ctx, |s| {
        let last = s.last_height()?.0;
        let get = |h: u64| -> Result<Option<Block>, StorageError> {
            Ok(if h == 0 {
                None
            } else {
                s.decided(Height(h))?.map(|(b, _)| b)
            })
        };
        let earliest = if last == 0 { 0 } else { s.earliest_height()?.min(last) };
        Ok((get(last)?, get(earliest)?))
    })
    .await?;
    let sync = |b: &Option<Block>, prefix: &str| -> Vec<(String, Value)> {
        let (hash, app, height, time) = match b {
            Some(b) => (
                hex_up(&b.id().0),
                hex_up(&b.header.app_hash.0),
                b.height().0,
                b.header.time.0,
            ),
            None => (String::new(), String::new(), 0, g),
        };
        vec![
            (format!("{prefix}_block_hash"), json!(hash)),
            (format!("{prefix}_app_hash"), json!(app)),
            (format!("{prefix}_block_height"), json!(height.to_string())),
            (format!("{prefix}_block_time"), json!(shapes::time(time))),
        ]
    };
    let mut sync_info: serde_json::Map<String, Value> = sync(&latest, "latest").into_iter().collect();
    sync_info.extend(sync(&earliest, "earliest"));
    sync_info.insert("catching_up".into(), json!(t.catching_up));
    let (key, power) = match info.validator_key {
        Some(k) => (k, t.validators.power_of(&k.address()).0),
        None => (info.node_key, 0),
    };
    Ok(json!({
        "node_info": node_info(&hex::encode(info.peer_id.0), &info.listen, &t.chain_id, VERSION, &info.node_id, &info.rpc),
        "sync_info": sync_info,
        "validator_info": {
            "address": hex_up(&key.address().0),
            "pub_key": shapes::pub_key(&key),
            "voting_power": power.to_string(),
        },
    }))
}

fn node_info(id: &str, listen: &str, chain_id: &str, version: &str, moniker: &str, rpc: &str) -> Value {
    json!({
        "protocol_version": {
            "p2p": shapes::P2P_PROTOCOL.to_string(),
            "block": shapes::BLOCK_PROTOCOL.to_string(),
            "app": "0",
        },
        "id": id,
        "listen_addr": listen,
        "network": chain_id,
        "version": version,
        "channels": "",
        "moniker": moniker,
        "other": {"tx_index": "on", "rpc_address": if rpc.is_empty() { String::new() } else { format!("tcp://{rpc}") }},
    })
}

/// tendr does not measure per-connection traffic: the monitors are zero.
fn idle_monitor() -> Value {
    json!({
        "Active": true, "Start": shapes::time(0), "Duration": "0", "Idle": "0", "Bytes": "0",
        "Samples": "0", "InstRate": "0", "CurRate": "0", "AvgRate": "0", "PeakRate": "0",
        "BytesRem": "0", "TimeRem": "0", "Progress": 0,
    })
}

async fn net_info(ctx: &Ctx) -> CallResult {
    let chain_id = ctx.shared.genesis.genesis.chain_id.clone();
    let peers = ctx.shared.ask(|v| v.peers()).await.ok_or_else(busy)?;
    let listed: Vec<Value> = peers
        .iter()
        .map(|p| {
            json!({
                "node_info": node_info(&hex::encode(p.id.0), &p.addr.to_string(), &chain_id, "", "", ""),
                "is_outbound": p.outbound,
                "connection_status": {
                    "Duration": "0",
                    "SendMonitor": idle_monitor(),
                    "RecvMonitor": idle_monitor(),
                    "Channels": [],
                },
                "remote_ip": p.addr.ip().to_string(),
            })
        })
        .collect();
    Ok(json!({
        "listening": true,
        "listeners": [format!("Listener(@{})", ctx.shared.info.listen)],
        "n_peers": peers.len().to_string(),
        "peers": listed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heights_resolve_as_cometbft_does() {
        assert_eq!(resolve_height(None, 7).unwrap(), 7);
        assert_eq!(resolve_height(Some(0), 7).unwrap(), 7);
        assert_eq!(resolve_height(Some(3), 7).unwrap(), 3);
        assert!(resolve_height(Some(8), 7)
            .unwrap_err()
            .data
            .contains("less than or equal"));
        assert!(resolve_height(Some(-1), 7).unwrap_err().data.contains("greater than 0"));
        assert!(resolve_height(None, 0).is_err());
    }

    #[test]
    fn tx_queries() {
        assert_eq!(parse_tx_query("tx.height=5").unwrap(), vec![Cond::Height(5)]);
        assert_eq!(
            parse_tx_query("tx.height = 5 AND tx.hash = 'ABCD'").unwrap(),
            vec![Cond::Height(5), Cond::Hash("abcd".into())]
        );
        assert!(parse_tx_query("tx.height > 5").is_err());
        assert!(parse_tx_query("app.key = 'x'")
            .unwrap_err()
            .data
            .contains("tx.height = N"));
        assert!(parse_tx_query("tx.hash = 'zz'").is_err());
    }

    #[test]
    fn every_method_has_its_arguments() {
        assert_eq!(arg_names("block"), Some(&["height"][..]));
        assert_eq!(arg_names("dial_peers"), None);
        assert_eq!(RpcError::method_not_found("x").code, -32601);
    }
}
