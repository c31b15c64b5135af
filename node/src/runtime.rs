//! The real node's runtime: the core `Node` with the wall clock, the QUIC transport of
//! `tendr-net`, the redb [`Store`] and the user's application (built by an [`AppFactory`]),
//! driven by `tendr_net::runtime::drive` (which also relays gossip and penalises misbehaving
//! peers).
//!
//! Around the driver: the RPC thread asks it questions with `Command::Query` closures (the
//! application answers through [`Application::query`]); `on_event` writes the transaction
//! history and metrics and logs decided blocks; a one-second housekeeping task logs round
//! changes, reports whether our key is in the validator set and publishes our validator public
//! key with a governance transaction ([`governance::request_tx`]) until the chain knows it.

use crate::app::AppFactory;
use crate::clock::ClockWatch;
use crate::config::Config;
use crate::error::{CliError, CliResult};
use crate::genesis::{now_ms, LoadedGenesis, DEFAULT_POWER};
use crate::metrics::{Metrics, NodeSample, DEFAULT_NAMESPACE};
use crate::rpc::{RpcLimits, RpcServer};
use crate::signing::{open_guard, Guard, GuardedSigner};
use crate::status::{ConsensusView, PeerView, Status, SyncView, ValidatorView};
use crate::store::Store;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tendr_core::crypto::{PrivateKey, PublicKey, Signer};
use tendr_core::engine::EngineConfig;
use tendr_core::governance::{self, GovernanceError, GovernanceTx, REQUEST_QUERY_PATH};
use tendr_core::statesync::StateSyncPhase;
use tendr_core::traits::{
    Application, CachingVerifier, Node, NodeEvent, QueryResult, SnapshotPolicy, Storage, TxResult,
};
use tendr_core::types::{Address, Block, Hash, Height};
use tendr_core::TimeoutConfig;
use tendr_net::runtime::{drive, Command, NodeView, SystemClock};
use tendr_net::{NetConfig, NetHandle, Transport};
use tokio::sync::{broadcast, mpsc, oneshot};
use tracing::{debug, error, info, warn};

/// A clock warning is logged again this often while it holds.
const CLOCK_LOG_EVERY_SECS: u64 = 60;
const ANNOUNCE_RETRY_MS: u64 = 15_000;
const DEFAULT_MAX_PEERS: usize = 50;
/// Longest an RPC request waits for the node to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Decided blocks kept for a slow RPC waiter before it lags (and looks in the store instead).
const DECIDED_QUEUE: usize = 64;
/// How long a node with seeds may have no peer before it says so.
const NO_PEERS_WARN_SECS: u64 = 10;

/// Facts about this node that do not change while it runs.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node_id: String,
    pub peer_id: Address,
    pub validator: Option<Address>,
    /// The validator key's public key, if this node has one.
    pub validator_key: Option<PublicKey>,
    /// The node key's public key (the network identity).
    pub node_key: PublicKey,
    pub wants_to_validate: bool,
    pub listen: String,
    pub rpc: String,
    pub genesis_hash: String,
    pub seeds: usize,
}

/// State shared between the driver, the housekeeping task and the RPC thread.
pub struct Shared {
    pub info: NodeInfo,
    pub metrics: Mutex<Metrics>,
    pub warnings: Mutex<BTreeMap<&'static str, String>>,
    pub store: Store,
    pub genesis: LoadedGenesis,
    pub commands: mpsc::Sender<Command>,
    /// The double-sign guard of the validator key, if this node has one.
    pub guard: Option<Arc<Guard>>,
    /// Every decided block, for the RPC's waiters; sent only while someone listens.
    pub decided: broadcast::Sender<Arc<DecidedBlock>>,
    /// The ABCI application the node runs, if any (`abci_info` asks it directly).
    pub proxy_app: Option<crate::abci::ProxyTarget>,
    /// Whether evidence found is submitted as a transaction ([`AppFactory::commits_evidence`]).
    pub commits_evidence: bool,
    /// The proposers' clocks against ours, read from the blocks decided.
    pub clock: Mutex<ClockWatch>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn warn(&self, key: &'static str, msg: Option<String>) {
        let mut w = self.warnings.lock().expect("warnings");
        match msg {
            Some(m) => w.insert(key, m),
            None => w.remove(key),
        };
    }

    /// Runs `f` on the node inside the driver task. `None` when the node is shutting down or
    /// does not answer within [`ASK_TIMEOUT`].
    pub async fn ask<T: Send + 'static>(&self, f: impl FnOnce(&dyn NodeView) -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let q = Box::new(move |v: &dyn NodeView| {
            let _ = tx.send(f(v));
        });
        let asked = async {
            self.commands.send(Command::Query(q)).await.ok()?;
            rx.await.ok()
        };
        tokio::time::timeout(ASK_TIMEOUT, asked).await.ok().flatten()
    }

    /// Checks a transaction (approvals against the current validator set), then submits it;
    /// the transaction's hash (hex), or why it was refused.
    pub async fn submit(&self, tx: Vec<u8>) -> Result<String, String> {
        let r = self.submit_checked(tx).await;
        if r.is_err() {
            self.metrics.lock().expect("metrics").on_failed_tx();
        }
        r
    }

    async fn submit_checked(&self, tx: Vec<u8>) -> Result<String, String> {
        if tx.starts_with(governance::APPROVAL_PREFIX.as_bytes()) {
            let t = tx.clone();
            self.ask(move |v| precheck_tx(v, &t))
                .await
                .ok_or("the node is busy or shutting down; try again")??;
        }
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::SubmitTx(tx, reply))
            .await
            .map_err(|_| "the node is shutting down")?;
        match rx.await {
            Ok(r) => r.map(|h| h.to_hex()),
            Err(_) => Err("the node is shutting down".into()),
        }
    }
}

/// A decided block with its results, as the RPC's waiters (`broadcast_tx_commit`) see it.
#[derive(Debug, Clone)]
pub struct DecidedBlock {
    pub block: Block,
    pub results: Vec<TxResult>,
    /// The application's hash after executing the block.
    pub app_hash: Hash,
}

/// The application's answer to a query, with the height of the state it was read from (the
/// last decided block, which the application has executed).
pub fn app_query(v: &dyn NodeView, path: &str, data: &[u8]) -> (u64, QueryResult) {
    let height = v.engine().chain().height.0.saturating_sub(1);
    (height, v.query(path, data))
}

/// The real node running application `A`.
pub type RealNode<A> = Node<SystemClock, NetHandle, Store, A>;

/// Everything a node needs to run, from the config, genesis and key files.
pub struct NodeSetup {
    pub cfg: Config,
    pub genesis: LoadedGenesis,
    pub validator_key: Option<PrivateKey>,
    pub node_key: PrivateKey,
    /// Rebuild a missing `validator_state.json` from the store (`--rebuild-signing-state`).
    pub rebuild_signing_state: bool,
}

impl NodeSetup {
    /// Timeouts: the genesis' consensus parameters, overridden by the config.
    pub fn timeouts(&self) -> TimeoutConfig {
        let mut t = self.genesis.genesis.consensus_params.timeouts.clone();
        if let Some(ms) = self.cfg.target_block_time_ms {
            t.commit_ms = ms;
        }
        if let Some(o) = &self.cfg.file.timeouts {
            t.propose_ms = o.propose_ms.unwrap_or(t.propose_ms);
            t.prevote_ms = o.prevote_ms.unwrap_or(t.prevote_ms);
            t.precommit_ms = o.precommit_ms.unwrap_or(t.precommit_ms);
            if let Some(d) = o.delta_ms {
                (t.propose_delta_ms, t.prevote_delta_ms, t.precommit_delta_ms) = (d, d, d);
            }
            t.rebroadcast_ms = o.rebroadcast_ms.unwrap_or(t.rebroadcast_ms);
            t.sync_retry_ms = o.sync_retry_ms.unwrap_or(t.sync_retry_ms);
        }
        t
    }

    /// Snapshots and pruning, from the config's `snapshot_interval` and `retain_blocks`.
    pub fn snapshot_policy(&self) -> SnapshotPolicy {
        let f = &self.cfg.file;
        let every = f.snapshot_interval.unwrap_or(crate::config::DEFAULT_SNAPSHOT_INTERVAL);
        let retain = if every == 0 {
            0
        } else {
            f.retain_blocks.unwrap_or(crate::config::DEFAULT_RETAIN_BLOCKS)
        };
        SnapshotPolicy { every, retain }
    }

    fn info(&self) -> NodeInfo {
        NodeInfo {
            node_id: self.cfg.file.node_id.clone(),
            peer_id: self.node_key.address(),
            validator: self.validator_key.as_ref().map(|k| k.address()),
            validator_key: self.validator_key.as_ref().map(|k| k.public_key()),
            node_key: self.node_key.public_key(),
            wants_to_validate: self.cfg.file.is_validator,
            listen: self.cfg.listen.to_string(),
            rpc: self.cfg.rpc_addr.to_string(),
            genesis_hash: self.genesis.hash.to_hex(),
            seeds: self.cfg.seeds.len(),
        }
    }
}

fn storage_err(e: impl std::fmt::Display) -> CliError {
    CliError::failure(format!("store: {e}"))
}

/// Writes the transaction history of decided blocks that have none yet (after a crash
/// between deciding a block and recording its results), by re-executing the stored chain
/// with a fresh application from `app`.
pub fn backfill_results(store: &Store, genesis: &LoadedGenesis, app: &impl AppFactory) -> CliResult<()> {
    let last = store.last_height().map_err(storage_err)?.0;
    let done = store.results_height().map_err(storage_err)?;
    if done >= last {
        return Ok(());
    }
    // Re-execute from genesis while every block is held, else from the newest snapshot (the
    // history of heights below it, if it was missing, cannot be rebuilt: those blocks are gone).
    let mut app = app.make(&genesis.genesis.chain_id);
    let mut chain = genesis.chain_state();
    if store.earliest_height().map_err(storage_err)? > 1 {
        let snap = store.snapshot().map_err(storage_err)?.ok_or_else(|| {
            storage_err("blocks below the earliest height are pruned and no snapshot is kept; move the data folder aside and state-sync")
        })?;
        app.restore(&snap.app)
            .map_err(|e| storage_err(format!("snapshot of height {}: {e}", snap.chain.height)))?;
        chain = snap.chain;
    }
    for h in chain.height.0..=last {
        let (block, commit) = store
            .decided(Height(h))
            .map_err(storage_err)?
            .ok_or_else(|| storage_err(format!("block {h} missing")))?;
        let res = app
            .execute_block(&block, &chain.validators)
            .map_err(|e| CliError::failure(format!("cannot rebuild the transaction history of block {h}: {e}")))?;
        if h > done {
            store.save_results(&block, &res.tx_results).map_err(storage_err)?;
        }
        chain.advance(&block, &commit, res.app_hash, &res.validator_updates);
    }
    Ok(())
}

/// Opens the store: bound to this genesis, with the transaction history complete.
pub fn open_store(setup: &NodeSetup, app: &impl AppFactory) -> CliResult<Store> {
    let store = Store::open(&setup.cfg.db_path()).map_err(|e| CliError::failure(e.to_string()))?;
    store
        .check_genesis(&setup.genesis.hash.to_hex())
        .map_err(|e| CliError::input(e.0))?;
    if app.independent_instances() {
        backfill_results(&store, &setup.genesis, app)?;
    }
    Ok(store)
}

/// Checks a validator approval against the current set before it enters the mempool, so a
/// forged or unauthorised request is refused at once with a clear reason.
fn precheck_tx(v: &dyn NodeView, tx: &[u8]) -> Result<(), String> {
    let Some(Ok(GovernanceTx::Approve(a))) = governance::parse(tx) else {
        return Ok(()); // not an approval: the application's check_tx decides
    };
    match a.check(&v.engine().chain().chain_id, v.engine().validators()) {
        Ok(_) => Ok(()),
        Err(GovernanceError::NotAValidator(who)) => Err(format!(
            "validator-set change refused: approver {who} is not in the current validator set; \
             only current validators (together holding more than 2/3 of the power) can approve"
        )),
        Err(e) => Err(format!("validator-set change refused: {e}")),
    }
}

/// The public key `addr` published ([`governance::request_tx`]), from the answer to a
/// [`REQUEST_QUERY_PATH`] query; `None` unless found and bound to `addr`.
pub fn parse_request(addr: &Address, answer: &QueryResult) -> Option<PublicKey> {
    if answer.code != 0 {
        return None;
    }
    let pk = PublicKey::from_hex(std::str::from_utf8(&answer.value).ok()?).ok()?;
    (pk.address() == *addr).then_some(pk)
}

/// The warning of a node that wants to validate and whose key is not in the validator set
/// (`in_set`). The status computes it from the view its role comes from; the housekeeping task
/// only logs it.
fn validator_warning(info: &NodeInfo, in_set: bool) -> Option<String> {
    let a = info.validator.filter(|_| info.wants_to_validate && !in_set)?;
    Some(format!(
        "validator key {a} is not in the validator set: this node follows the chain as an observer \
         until the validators approve it; on validators holding more than 2/3 of the power run: \
         tendr add-validator --address {a} --power {DEFAULT_POWER}"
    ))
}

/// The status as the RPC reports it, read inside the driver task.
pub fn build_status(v: &dyn NodeView, info: &NodeInfo, warnings: Vec<String>) -> Status {
    let e = v.engine();
    let chain = e.chain();
    let vs = e.validators();
    Status {
        node_id: info.node_id.clone(),
        chain_id: chain.chain_id.clone(),
        genesis_hash: info.genesis_hash.clone(),
        peer_id: info.peer_id.to_string(),
        validator_address: info.validator.map(|a| a.to_string()),
        wants_to_validate: info.wants_to_validate,
        in_validator_set: e.is_validator(),
        listen: info.listen.clone(),
        rpc: info.rpc.clone(),
        latest_height: chain.height.0 - 1,
        latest_block_time: chain.last_block.map(|(_, t)| crate::genesis::format_time(t.0)),
        latest_block_id: chain.last_block.map(|(id, _)| id.to_hex()),
        consensus: ConsensusView {
            height: chain.height.0,
            round: e.round().0,
            step: format!("{:?}", e.step()),
            catching_up: e.catching_up_to().is_some(),
            catching_up_to: e.catching_up_to().map(|h| h.0),
        },
        sync: sync_view(v),
        validators: vs
            .validators()
            .iter()
            .map(|v| ValidatorView {
                address: v.address.to_string(),
                pub_key: hex::encode(v.pub_key.0),
                power: v.power.0,
            })
            .collect(),
        total_power: vs.total_power().0,
        peers: v
            .peers()
            .into_iter()
            .map(|p| PeerView {
                id: p.id.to_string(),
                addr: p.addr.to_string(),
                role: if p.is_validator { "validator" } else { "observer" }.into(),
                outbound: p.outbound,
            })
            .collect(),
        mempool_size: v.mempool().len(),
        warnings,
        unhealthy: None,
    }
}

impl Shared {
    /// The current status, with the node's warnings.
    pub async fn status(self: &Arc<Self>) -> Option<Status> {
        let me = self.clone();
        self.ask(move |v| {
            let mut w: Vec<String> = me.warnings.lock().expect("warnings").values().cloned().collect();
            // From the same view as the status's role, so the two never disagree.
            w.extend(validator_warning(&me.info, v.engine().is_validator()));
            if let Some(r) = v.genesis_refusals().last() {
                w.push(format!("a peer was refused for running another chain or genesis: {r}"));
            }
            w.extend(me.guard.as_ref().and_then(|g| g.last_refusal()));
            let mut s = build_status(v, &me.info, w);
            s.unhealthy = me.unhealthy();
            let rate = me.metrics.lock().expect("metrics").sync_rate();
            s.sync.blocks_per_sec = rate.blocks_per_sec;
            s.sync.eta_secs = rate.eta_secs;
            s
        })
        .await
    }

    /// Why the node is not healthy: its store cannot write or is damaged (it does not sign).
    pub fn unhealthy(&self) -> Option<String> {
        self.store
            .problem()
            .map(|p| format!("{p}; this node does not sign until it is fixed"))
    }
}

fn on_event(shared: &Shared, ev: &NodeEvent) {
    match ev {
        NodeEvent::Decided {
            block,
            commit,
            results,
            app_hash,
        } => {
            if let Err(e) = shared.store.save_results(block, results) {
                // The blocks themselves are stored; the history is rebuilt on the next start.
                error!(height = block.height().0, "cannot record the transaction history: {e}");
            }
            // After the history: a waiter told of the block finds its transaction with `/tx`.
            if shared.decided.receiver_count() > 0 {
                let _ = shared.decided.send(Arc::new(DecidedBlock {
                    block: block.clone(),
                    results: results.clone(),
                    app_hash: *app_hash,
                }));
            }
            let now = now_ms();
            shared.warn("pruned", None); // deciding again: no longer stuck behind pruned peers
            shared.metrics.lock().expect("metrics").on_decided(now, block);
            info!(
                height = block.height().0,
                round = commit.round.0,
                txs = block.txs.len(),
                proposer = %block.header.proposer,
                id = %block.id(),
                "committed block"
            );
            let ours = shared.info.validator;
            lock(&shared.clock).on_decided(block.header.proposer, block.header.time.0, now, ours);
        }
        NodeEvent::Evidence(ev) => {
            shared.metrics.lock().expect("metrics").on_evidence();
            warn!(culprit = %ev.culprit(), height = ev.height().0, "evidence: a validator signed two conflicting votes");
            if shared.commits_evidence {
                submit_evidence(shared, ev);
            }
        }
        NodeEvent::StateSynced { height, trust_height } => {
            info!(
                snapshot_height = height.0,
                trust_height = trust_height.0,
                "state sync: restored a peer's snapshot proven by the trusted block; block sync goes on from here"
            );
        }
        NodeEvent::PeerPruned { from, needed, snapshot } => {
            let msg = format!(
                "peers no longer keep the blocks this node needs (height {needed}; peer {from} pruned it and \
                 keeps a snapshot of height {snapshot}): restart this node with state sync, \
                 `tendr start --trust-height H --trust-hash ID`, reading H and ID from `tendr status` \
                 on a node you trust"
            );
            let first = shared.warnings.lock().expect("warnings").get("pruned").is_none();
            if first {
                warn!("{msg}");
            } else {
                debug!("{msg}");
            }
            shared.warn("pruned", Some(msg));
        }
        NodeEvent::Rejected { from, kind, error, .. } => {
            shared.metrics.lock().expect("metrics").on_rejected_message();
            debug!(peer = %from, kind, %error, "message rejected");
        }
    }
}

/// Puts the transaction committing `ev` in the mempool (every node that found it does the
/// same; the mempool keeps one copy). Called inside the driver, so it must not wait for it: a
/// full command queue drops it with a line in the log, and the other nodes still submit theirs.
fn submit_evidence(shared: &Shared, ev: &tendr_core::types::Evidence) {
    let (reply, _) = oneshot::channel();
    let tx = governance::evidence_tx(ev);
    if shared.commands.try_send(Command::SubmitTx(tx, reply)).is_err() {
        warn!(culprit = %ev.culprit(), "the node is busy: the evidence is not submitted for a block by this node");
    }
}

/// Updates the clock warning of the status (none while `catching_up`: old blocks are no
/// reading of anyone's clock) and logs it when it appears and every [`CLOCK_LOG_EVERY_SECS`];
/// the time of the last log line (0: none), for the next call.
fn watch_clock(shared: &Shared, catching_up: bool, logged_at: u64) -> u64 {
    let warning = {
        let mut w = lock(&shared.clock);
        if catching_up {
            w.forget();
        }
        w.warning()
    };
    let now = now_ms() / 1000;
    let logged_at = match &warning {
        Some(w) if now >= logged_at + CLOCK_LOG_EVERY_SECS => {
            warn!("clock: {w}");
            now
        }
        Some(_) => logged_at,
        None if logged_at > 0 => {
            info!("clock: the proposers' clocks and this machine's agree again");
            0
        }
        None => 0,
    };
    shared.warn("clock", warning);
    logged_at
}

/// One look at the node per second: metrics, round-change logs, validator membership, and
/// publishing our validator key while we are not a validator.
async fn housekeeping(shared: Arc<Shared>, key: Option<PrivateKey>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let (mut last_round, mut in_set_before, mut last_announce) = ((0u64, 0u32), None, 0u64);
    let mut alone_secs = 0u64;
    let mut clock_log = 0u64;
    loop {
        tick.tick().await;
        // Writes that failed (a full disk) are retried here too, so an idle node resumes.
        let _ = shared.store.flush();
        let addr = key.as_ref().map(|k| k.address());
        let Some((st, published, sample)) = shared
            .ask(move |v| {
                let published =
                    addr.and_then(|a| parse_request(&a, &v.query(REQUEST_QUERY_PATH, a.to_string().as_bytes())));
                (build_status(v, &NodeInfo::empty(), Vec::new()), published, sample(v))
            })
            .await
        else {
            // A busy driver answers late (the ask gives up after ASK_TIMEOUT): look again at
            // the next tick; stop only when the node is shutting down.
            if shared.commands.is_closed() {
                return;
            }
            continue;
        };
        shared.metrics.lock().expect("metrics").observe_at(now_ms(), &sample);
        let round = (st.consensus.height, st.consensus.round);
        if round.0 == last_round.0 && round.1 > last_round.1 {
            info!(
                height = round.0,
                round = round.1,
                peers = st.peers.len(),
                "round {} at height {}: earlier rounds timed out (if this repeats: check peers, validator keys, clocks)",
                round.1,
                round.0
            );
        }
        last_round = round;
        debug!(
            height = round.0,
            round = round.1,
            step = %st.consensus.step,
            peers = st.peers.len(),
            catching_up = st.consensus.catching_up,
            "consensus"
        );
        clock_log = watch_clock(
            &shared,
            st.consensus.catching_up || st.sync.mode != "consensus",
            clock_log,
        );
        alone_secs = if st.peers.is_empty() { alone_secs + 1 } else { 0 };
        if shared.info.seeds > 0 && alone_secs == NO_PEERS_WARN_SECS {
            let msg = format!(
                "no peer connected after {NO_PEERS_WARN_SECS} s: check the seed addresses in the config, that the \
                 seeds' UDP ports are open in their firewalls, and that every node uses the same genesis.json \
                 (look for `peer refused` lines in the log)"
            );
            warn!("{msg}");
            shared.warn("peers", Some(msg));
        } else if alone_secs == 0 {
            shared.warn("peers", None);
        }
        let (Some(key), true) = (&key, shared.info.wants_to_validate) else {
            continue;
        };
        if in_set_before != Some(st.in_validator_set) {
            in_set_before = Some(st.in_validator_set);
            match validator_warning(&shared.info, st.in_validator_set) {
                None => info!(address = %key.address(), "this node is a validator"),
                Some(msg) => warn!(address = %key.address(), "{msg}"),
            }
        }
        let is_published = published.is_some();
        let now = now_ms();
        if st.in_validator_set
            || is_published
            || st.consensus.catching_up
            || st.peers.is_empty()
            || now < last_announce + ANNOUNCE_RETRY_MS
        {
            continue;
        }
        last_announce = now;
        let tx = governance::request_tx(&key.public_key());
        let (reply, rx) = oneshot::channel();
        if shared.commands.send(Command::SubmitTx(tx, reply)).await.is_err() {
            return;
        }
        match rx.await {
            Ok(Ok(_)) => {
                info!(address = %key.address(), "published this node's validator public key for `tendr add-validator`")
            }
            Ok(Err(e)) => debug!("validator key not published: {e}"),
            Err(_) => return,
        }
    }
}

/// The gauges' look at the running node.
/// How the node follows the chain: state sync, block sync, or consensus.
fn sync_view(v: &dyn NodeView) -> SyncView {
    let e = v.engine();
    let progress = e.sync_progress();
    let (mode, state_sync) = match v.state_sync() {
        Some(StateSyncPhase::Discovering {
            offers,
            newer_than_trust,
        }) => {
            let mut text = format!("looking for a snapshot ({offers} suitable offers)");
            if let (0, Some(h)) = (offers, newer_than_trust) {
                text += &format!(
                    "; peers offer snapshots from height {h} only, above the trusted height, which \
                     can prove only older ones: restart with a newer trusted block (`--trust-height` \
                     and `--trust-hash` from a node you trust, at or above {h})"
                );
            }
            ("state sync", Some(text))
        }
        Some(StateSyncPhase::Fetching {
            height,
            blocks,
            blocks_needed,
            chunks,
            chunks_needed,
        }) => (
            "state sync",
            Some(format!(
                "fetching the snapshot of height {height}: {chunks}/{chunks_needed} chunks, {blocks}/{blocks_needed} proven blocks"
            )),
        ),
        done => {
            let restored = match done {
                Some(StateSyncPhase::Done { height, dropped_peers }) => Some(format!(
                    "restored the snapshot of height {height} (peers dropped for false data: {dropped_peers})"
                )),
                _ => None,
            };
            let mode = if e.catching_up_to().is_some() { "block sync" } else { "consensus" };
            (mode, restored)
        }
    };
    SyncView {
        mode: mode.into(),
        target_height: e.catching_up_to().map(|h| h.0),
        blocks_per_sec: 0.0,
        eta_secs: None,
        state_sync,
        sync_peers: progress.peers,
        dropped_peers: progress.dropped_peers,
    }
}

fn sample(v: &dyn NodeView) -> NodeSample {
    let e = v.engine();
    let state_syncing = v
        .state_sync()
        .is_some_and(|p| !matches!(p, StateSyncPhase::Done { .. }));
    let chain = e.chain();
    let (missing, missing_power) = match (&chain.last_validators, &chain.last_commit) {
        (Some(vs), Some(c)) => vs
            .validators()
            .iter()
            .filter(|val| !c.signatures.iter().any(|s| s.validator == val.address))
            .fold((0, 0), |(n, p), val| (n + 1, p + val.power.0)),
        _ => (0, 0),
    };
    NodeSample {
        height: chain.height.0.saturating_sub(1),
        round: e.round().0,
        peers: v.peers().len(),
        mempool_txs: v.mempool().len(),
        mempool_bytes: v.mempool().bytes(),
        is_validator: e.is_validator(),
        validators: e.validators().len(),
        validators_power: e.validators().total_power().0,
        missing_validators: missing,
        missing_validators_power: missing_power,
        catching_up: e.catching_up_to().is_some() || state_syncing,
        sync_target: e.catching_up_to().map_or(0, |h| h.0),
        state_syncing,
    }
}

impl NodeInfo {
    fn empty() -> Self {
        NodeInfo {
            node_id: String::new(),
            peer_id: Address::default(),
            validator: None,
            validator_key: None,
            node_key: PublicKey([2; 33]),
            wants_to_validate: false,
            listen: String::new(),
            rpc: String::new(),
            genesis_hash: String::new(),
            seeds: 0,
        }
    }
}

/// The transport's start error in the config's words: the config has `host` and `port`, not
/// the transport's `listen`.
fn net_start_error(config: &std::path::Path, e: tendr_net::NetError) -> CliError {
    let msg = match e {
        tendr_net::NetError::Bind { addr, source } => format!(
            "cannot listen on UDP {addr}: {source}; another process (another tendr node?) may hold it: \
             choose a free `port`, or check `host`"
        ),
        e => e.to_string(),
    };
    CliError::input(format!("config `{}`: {msg}", config.display()))
}

/// The engine's signer (if any) and the guard behind it, for the status.
pub type SignerAndGuard = (Option<Box<dyn Signer>>, Option<Arc<Guard>>);

/// The validator key behind its double-sign guard (`validator_state.json`), which also stops
/// signing while `store` cannot write.
pub fn guarded_signer(setup: &NodeSetup, store: &Store) -> CliResult<SignerAndGuard> {
    let Some(key) = setup.validator_key.clone() else {
        return Ok((None, None));
    };
    let s = store.clone();
    let guard = open_guard(
        &setup.cfg.validator_key_path(),
        &key,
        &setup.genesis.genesis.chain_id,
        store,
        setup.rebuild_signing_state,
        Box::new(move || s.problem().map(|p| p.to_string())),
    )?;
    Ok((Some(Box::new(GuardedSigner::new(key, guard.clone()))), Some(guard)))
}

/// The store the engine writes through: the store itself, or in a `byzantine` test build the
/// [`crate::byzantine::Byzantine`] wrapper that makes this validator misbehave on purpose.
#[cfg(not(feature = "byzantine"))]
type NodeStore = Store;
#[cfg(feature = "byzantine")]
type NodeStore = crate::byzantine::Byzantine<Store>;

#[cfg(not(feature = "byzantine"))]
fn node_store(_: &NodeSetup, store: &Store, _: &Transport) -> CliResult<NodeStore> {
    Ok(store.clone())
}

#[cfg(feature = "byzantine")]
fn node_store(setup: &NodeSetup, store: &Store, transport: &Transport) -> CliResult<NodeStore> {
    Ok(crate::byzantine::Byzantine::new(
        store.clone(),
        transport.handle(),
        setup.validator_key.clone(),
        &setup.genesis.genesis.chain_id,
        crate::byzantine::from_env()?,
    ))
}

/// Runs the node with the application `app` builds, until SIGINT or SIGTERM.
pub async fn run(setup: NodeSetup, app: &impl AppFactory) -> CliResult<()> {
    let store = open_store(&setup, app)?;
    let g = &setup.genesis;
    let chain_id = g.genesis.chain_id.clone();
    let (transport, incoming) = Transport::start(NetConfig {
        listen: setup.cfg.listen,
        node_key: setup.node_key.clone(),
        chain_id: chain_id.clone(),
        genesis_hash: g.hash,
        seeds: setup.cfg.seeds.clone(),
        max_peers: setup.cfg.file.max_peers.unwrap_or(DEFAULT_MAX_PEERS),
        is_validator: setup.cfg.file.is_validator,
        advertise: setup.cfg.advertise,
        link_shaping: setup.cfg.file.link_shaping.clone(),
        validator_proof: setup
            .validator_key
            .as_ref()
            .map(|k| tendr_net::wire::ValidatorProof::sign(k, &chain_id, &setup.node_key.public_key())),
    })
    .await
    .map_err(|e| net_start_error(&setup.cfg.path, e))?;
    let (clock, timers) = SystemClock::new();
    let (signer, guard) = guarded_signer(&setup, &store)?;
    let mut ecfg = EngineConfig::new(&chain_id, setup.timeouts());
    if let Some(w) = setup.cfg.file.sync_window {
        ecfg.sync_window = w;
    }
    let mut node: Node<_, _, NodeStore, _> = Node::with_signer(
        ecfg,
        signer,
        g.chain_state(),
        clock,
        transport.handle(),
        node_store(&setup, &store, &transport)?,
        app.make(&chain_id),
        Box::new(CachingVerifier::new()),
    )
    .map_err(|e| CliError::failure(format!("cannot start from the stored chain: {e}")))?;
    node.set_snapshot_policy(setup.snapshot_policy());
    if let Some(ss) = &setup.cfg.file.state_sync {
        let anchor = ss
            .check()
            .map_err(|(f, e)| CliError::input(format!("state_sync.{f}: {e}")))?;
        match node.start_state_sync(anchor) {
            Ok(true) => info!(
                trust_height = anchor.height.0,
                trust_hash = %anchor.block_id.to_hex(),
                "state sync: looking for a peer's snapshot at or below the trusted height"
            ),
            Ok(false) => info!(
                trust_height = anchor.height.0,
                "state sync not needed: this node is already past the trusted height"
            ),
            Err(e) => return Err(CliError::input(format!("state sync: {e}"))),
        }
    }
    let start_height = node.engine().height().0;
    let (cmd_tx, commands) = mpsc::channel(256);
    let shared = Arc::new(Shared {
        info: setup.info(),
        metrics: Mutex::new(Metrics::new(
            setup.cfg.file.metrics_namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE),
            &chain_id,
        )),
        warnings: Mutex::new(BTreeMap::new()),
        store,
        genesis: g.clone(),
        commands: cmd_tx.clone(),
        guard,
        decided: broadcast::channel(DECIDED_QUEUE).0,
        proxy_app: crate::abci::ProxyTarget::from_config(&setup.cfg)?,
        commits_evidence: app.commits_evidence(),
        clock: Mutex::new(ClockWatch::default()),
    });
    let rpc = RpcServer::start(
        setup.cfg.rpc_addr,
        shared.clone(),
        RpcLimits::from_config(setup.cfg.file.rpc_limits.as_ref()),
    )
    .map_err(CliError::input)?;
    info!(
        node_id = %setup.cfg.file.node_id,
        chain_id = %chain_id,
        genesis_hash = %g.hash.to_hex(),
        peer_id = %setup.node_key.address(),
        validator = ?setup.validator_key.as_ref().map(|k| k.address().to_string()),
        listen = %transport.local_addr(),
        rpc = %rpc.addr,
        height = start_height,
        seeds = setup.cfg.seeds.len(),
        "node started"
    );
    for a in &setup.cfg.file.validators {
        if let Ok(addr) = a.parse::<Address>() {
            if g.validators.index_of(&addr).is_none() {
                warn!(address = %addr, "the config lists {addr} under `validators`; validators come from genesis.json and `add-validator`");
            }
        }
    }
    let ev_shared = shared.clone();
    let driver = tokio::spawn(drive(node, incoming, timers, commands, move |ev| {
        on_event(&ev_shared, ev)
    }));
    let hk = tokio::spawn(housekeeping(shared.clone(), setup.validator_key.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::failure(format!("signal handler: {e}")))?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("shutting down");
    hk.abort();
    let _ = cmd_tx.send(Command::Shutdown).await;
    let _ = driver.await;
    drop(rpc);
    transport.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_timeouts_override_the_genesis() {
        let path = std::path::Path::new("/x/tendermint_config.json");
        let text = r#"{"node_id": "n", "port": 8001, "target_block_time": 0.25,
                       "timeouts": {"propose_ms": 700, "delta_ms": 50}}"#;
        let file = crate::config::parse_json("config", path, text).unwrap();
        let cfg = crate::config::resolve(path, file).unwrap();
        let k = PrivateKey::from_seed(b"t");
        let app = tendr_kv::KvApp::new;
        let members = [("n".into(), k.public_key(), 10)];
        let g = crate::genesis::Genesis::new("c", 1, &members, TimeoutConfig::default(), app.initial_app_hash("c"))
            .check(path, &app)
            .unwrap();
        let setup = NodeSetup {
            cfg,
            genesis: g,
            validator_key: Some(k.clone()),
            node_key: k,
            rebuild_signing_state: false,
        };
        let t = setup.timeouts();
        assert_eq!(
            (t.commit_ms, t.propose_ms, t.propose_delta_ms, t.prevote_delta_ms),
            (250, 700, 50, 50)
        );
        assert_eq!(t.prevote_ms, TimeoutConfig::default().prevote_ms);
    }

    /// Issue 18, item 4: the warning follows the same view as the role (`in_set`), not a copy
    /// refreshed once a second.
    #[test]
    fn the_validator_warning_follows_the_role() {
        let k = PrivateKey::from_seed(b"w");
        let mut info = NodeInfo::empty();
        info.validator = Some(k.address());
        info.wants_to_validate = true;
        let w = validator_warning(&info, false).unwrap();
        assert!(
            w.contains(&k.address().to_string()) && w.contains("not in the validator set"),
            "{w}"
        );
        assert_eq!(validator_warning(&info, true), None, "a validator has no such warning");
        info.wants_to_validate = false;
        assert_eq!(validator_warning(&info, false), None, "an observer by choice has none");
    }

    /// Issue 18, item 7: a busy UDP port names the config's fields, `host` and `port`.
    #[test]
    fn a_busy_port_names_host_and_port() {
        let e = tendr_net::NetError::Bind {
            addr: "0.0.0.0:8001".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let m = net_start_error(std::path::Path::new("c.json"), e).message;
        assert!(
            m.starts_with("config `c.json`: cannot listen on UDP 0.0.0.0:8001"),
            "{m}"
        );
        assert!(
            m.contains("`port`") && m.contains("`host`") && !m.contains("`listen`"),
            "{m}"
        );
    }

    #[test]
    fn validator_request_binds_key_to_address() {
        let k = PrivateKey::from_seed(b"r");
        let other = PrivateKey::from_seed(b"o");
        let v = QueryResult::found(hex::encode(k.public_key().0).into_bytes());
        assert_eq!(parse_request(&k.address(), &v), Some(k.public_key()));
        assert_eq!(parse_request(&other.address(), &v), None);
        assert_eq!(parse_request(&k.address(), &QueryResult::found(b"zz".to_vec())), None);
        assert_eq!(parse_request(&k.address(), &QueryResult::not_found()), None);
    }
}
