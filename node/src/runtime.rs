//! The real node's runtime: drives `tendr_core::traits::Node` on tokio with a wall clock, the
//! redb [`Store`], the built-in [`KvApp`] and a network, serves the RPC, keeps metrics and
//! logs with `tracing`.
//!
//! One task owns the `Node` and handles, one at a time: peer messages, due timers, RPC
//! commands, a one-second housekeeping tick and shutdown signals. After each it drains the
//! node's events (decided blocks go to the transaction history, metrics and logs) and
//! refreshes the status snapshot the RPC thread reads.

use crate::config::Config;
use crate::error::{CliError, CliResult};
use crate::genesis::{now_ms, LoadedGenesis, DEFAULT_POWER};
use crate::metrics::Metrics;
use crate::rpc::RpcServer;
use crate::status::{ConsensusView, PeerView, Status, ValidatorView};
use crate::store::Store;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tendr_core::app::{parse_tx, KvApp, KvTx, ValidatorApproval};
use tendr_core::crypto::{verify, PrivateKey, PublicKey};
use tendr_core::engine::{EngineConfig, Timeout};
use tendr_core::traits::Application;
use tendr_core::traits::{CachingVerifier, Clock, Network, Node, NodeError, NodeEvent, Storage};
use tendr_core::types::{Address, Height, Message, PeerId, TimeMs};
use tendr_core::TimeoutConfig;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

/// Key under which a node that wants to validate publishes its validator public key, so that
/// `tendr add-validator --address 0x...` can find the key behind an address.
pub const VALIDATOR_REQUEST_PREFIX: &str = "tendr.validator_request.";
/// A block time further ahead of our clock than this is reported as clock skew.
const CLOCK_SKEW_WARN_MS: u64 = 5_000;
const ANNOUNCE_RETRY_MS: u64 = 15_000;

/// Requests from the RPC thread to the node task.
pub enum Command {
    SubmitTx(Vec<u8>, oneshot::Sender<Result<String, String>>),
    /// Reads `key` from the application state; answers (height, value).
    Query(String, oneshot::Sender<(u64, Option<String>)>),
}

/// State shared between the node task and the RPC thread.
pub struct Shared {
    pub status: Mutex<Status>,
    pub metrics: Mutex<Metrics>,
    pub store: Store,
    pub genesis: LoadedGenesis,
    pub commands: mpsc::Sender<Command>,
}

/// The wall clock: milliseconds since the Unix epoch, timers kept in order until due.
#[derive(Debug, Default)]
pub struct WallClock {
    timers: BTreeMap<(u64, u64), Timeout>,
    seq: u64,
}

impl WallClock {
    fn next_deadline(&self) -> Option<u64> {
        self.timers.keys().next().map(|k| k.0)
    }
    fn take_due(&mut self, now: u64) -> Vec<Timeout> {
        let later = self.timers.split_off(&(now + 1, 0));
        std::mem::replace(&mut self.timers, later).into_values().collect()
    }
}

impl Clock for WallClock {
    fn now(&self) -> TimeMs {
        TimeMs(now_ms())
    }
    fn schedule(&mut self, at: TimeMs, timeout: Timeout) {
        self.seq += 1;
        self.timers.insert((at.0, self.seq), timeout);
    }
}

/// What the runtime needs from a network beyond sending: who is connected.
pub trait PeerList {
    fn peer_views(&self) -> Vec<PeerView>;
}

/// No network: a node alone (a one-validator chain still produces blocks).
#[derive(Debug, Default, Clone)]
pub struct Alone;
impl Network for Alone {
    fn broadcast(&mut self, _msg: &Message) {}
    fn send(&mut self, _to: PeerId, _msg: &Message) {}
}
impl PeerList for Alone {
    fn peer_views(&self) -> Vec<PeerView> {
        Vec::new()
    }
}

pub type RealNode<N> = Node<WallClock, N, Store, KvApp>;

/// Everything a node needs to run, from the config, genesis and key files.
pub struct NodeSetup {
    pub cfg: Config,
    pub genesis: LoadedGenesis,
    pub validator_key: Option<PrivateKey>,
    pub node_key: PrivateKey,
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
}

fn storage_err(e: impl std::fmt::Display) -> CliError {
    CliError::failure(format!("store: {e}"))
}

/// Writes the transaction history of decided blocks that have none yet (after a crash
/// between deciding a block and recording its results), by re-executing the stored chain.
pub fn backfill_results(store: &Store, genesis: &LoadedGenesis) -> CliResult<()> {
    let last = store.last_height().map_err(storage_err)?.0;
    let done = store.results_height().map_err(storage_err)?;
    if done >= last {
        return Ok(());
    }
    let mut chain = genesis.chain_state();
    let mut app = KvApp::new(&genesis.genesis.chain_id);
    for h in 1..=last {
        let (block, commit) = store
            .decided(Height(h))
            .map_err(storage_err)?
            .ok_or_else(|| storage_err(format!("block {h} missing")))?;
        let res = app.execute_block(&block, &chain.validators);
        if h > done {
            store.save_results(&block, &res.tx_results).map_err(storage_err)?;
        }
        chain.advance(&block, &commit, res.app_hash, &res.validator_updates);
    }
    Ok(())
}

/// Opens the store and builds the node (replaying stored blocks, resuming from the log).
pub fn build_node<N: Network>(setup: &NodeSetup, net: N) -> CliResult<RealNode<N>> {
    let store = Store::open(&setup.cfg.db_path())
        .map_err(|e| CliError::failure(format!("{e} (is another `tendr` process using this folder?)")))?;
    store
        .check_genesis(&setup.genesis.hash.to_hex())
        .map_err(|e| CliError::input(e.0))?;
    backfill_results(&store, &setup.genesis)?;
    let chain_id = &setup.genesis.genesis.chain_id;
    Node::new(
        EngineConfig::new(chain_id, setup.timeouts()),
        setup.validator_key.clone(),
        setup.genesis.chain_state(),
        WallClock::default(),
        net,
        store,
        KvApp::new(chain_id),
        Box::new(CachingVerifier::new()),
    )
    .map_err(|e| CliError::failure(format!("cannot start from the stored chain: {e}")))
}

/// Checks a validator approval against the current set before it enters the mempool, so a
/// forged or unauthorised request is refused at once with a clear reason.
fn precheck_tx<N: Network>(node: &RealNode<N>, tx: &[u8]) -> Result<(), String> {
    if let Ok(KvTx::Approve(a)) = parse_tx(tx) {
        let vs = node.engine().validators();
        let who = a.approver.address();
        let Some(idx) = vs.index_of(&who) else {
            return Err(format!(
                "validator-set change refused: approver {who} is not in the current validator set; \
                 only current validators (together holding more than 2/3 of the power) can approve"
            ));
        };
        let bytes = ValidatorApproval::sign_bytes(&node.engine().chain().chain_id, &a.target, a.power);
        if verify(vs.key(idx), &bytes, &a.signature).is_err() {
            return Err(format!(
                "validator-set change refused: the approval's signature does not verify for {who} \
                 (forged, or signed for another chain)"
            ));
        }
    }
    Ok(())
}

pub fn request_key(addr: &Address) -> String {
    format!("{VALIDATOR_REQUEST_PREFIX}{addr}")
}

/// Parses a published validator request value (`<pubkey hex>@<ms>`) for `addr`.
pub fn parse_request(addr: &Address, value: &str) -> Option<PublicKey> {
    let hex_part = value.split('@').next()?;
    let pk = PublicKey::from_hex(hex_part).ok()?;
    (pk.address() == *addr).then_some(pk)
}

struct Runner<N> {
    node: RealNode<N>,
    shared: Arc<Shared>,
    setup: NodeSetup,
    last_step: (u64, u32, String),
    last_announce_ms: u64,
    told_not_validator: Option<bool>,
    warnings: BTreeMap<&'static str, String>,
}

/// Runs the node until SIGINT or SIGTERM. `incoming` carries peer messages.
pub async fn run<N: Network + PeerList>(
    setup: NodeSetup,
    net: N,
    mut incoming: mpsc::Receiver<(PeerId, Message)>,
) -> CliResult<()> {
    let node = build_node(&setup, net)?;
    let (cmd_tx, mut commands) = mpsc::channel(256);
    let shared = Arc::new(Shared {
        status: Mutex::new(Status::default()),
        metrics: Mutex::new(Metrics::default()),
        store: node.storage.clone(),
        genesis: setup.genesis.clone(),
        commands: cmd_tx,
    });
    let rpc = RpcServer::start(setup.cfg.rpc_addr, shared.clone()).map_err(CliError::input)?;
    let mut r = Runner {
        node,
        shared,
        setup,
        last_step: (0, 0, String::new()),
        last_announce_ms: 0,
        told_not_validator: None,
        warnings: BTreeMap::new(),
    };
    r.log_start(rpc.addr);
    r.node.start().map_err(|e| CliError::failure(format!("start: {e}")))?;
    r.after()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| CliError::failure(format!("signal handler: {e}")))?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let sleep = match r.node.clock.next_deadline() {
            Some(at) => Duration::from_millis(at.saturating_sub(now_ms())),
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            Some((from, msg)) = incoming.recv() => {
                if let Err(e) = r.node.on_message(from, msg) {
                    fatal_if_storage(&e)?;
                }
            }
            Some(cmd) = commands.recv() => r.command(cmd),
            _ = tokio::time::sleep(sleep) => {
                for t in r.node.clock.take_due(now_ms()) {
                    debug!(height = t.height.0, round = t.round.0, kind = ?t.kind, "timeout");
                    if let Err(e) = r.node.on_timeout(t) {
                        fatal_if_storage(&e)?;
                    }
                }
            }
            _ = tick.tick() => r.housekeeping(),
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        }
        r.after()?;
    }
    info!(height = r.node.engine().height().0, "shutting down");
    drop(rpc);
    Ok(())
}

fn fatal_if_storage(e: &NodeError) -> CliResult<()> {
    match e {
        NodeError::Storage(s) => Err(CliError::failure(format!("{s}: stopping so no decided state is lost"))),
        other => {
            debug!(error = %other, "input rejected");
            Ok(())
        }
    }
}

impl<N: Network + PeerList> Runner<N> {
    fn log_start(&self, rpc: std::net::SocketAddr) {
        let g = &self.setup.genesis;
        info!(
            node_id = %self.setup.cfg.file.node_id,
            chain_id = %g.genesis.chain_id,
            genesis_hash = %g.hash.to_hex(),
            peer_id = %self.setup.node_key.address(),
            validator = ?self.setup.validator_key.as_ref().map(|k| k.address().to_string()),
            listen = %self.setup.cfg.listen,
            rpc = %rpc,
            height = self.node.engine().height().0,
            "node started"
        );
        for a in &self.setup.cfg.file.validators {
            if let Ok(addr) = a.parse::<Address>() {
                if self.node.engine().validators().index_of(&addr).is_none() {
                    warn!(address = %addr, "config lists {addr} under `validators`, but it is not in the validator set");
                }
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::SubmitTx(tx, reply) => {
                let res = precheck_tx(&self.node, &tx)
                    .and_then(|_| self.node.submit_tx(tx).map(|h| h.to_hex()).map_err(|e| e.to_string()));
                match &res {
                    Ok(h) => debug!(hash = %h, "transaction accepted"),
                    Err(e) => info!(error = %e, "transaction refused"),
                }
                let _ = reply.send(res);
            }
            Command::Query(key, reply) => {
                let v = self.node.app.get(&key).map(String::from);
                let _ = reply.send((self.node.app.last_height(), v));
            }
        }
    }

    /// After every input: drain events, log step changes, refresh metrics and status.
    fn after(&mut self) -> CliResult<()> {
        for ev in self.node.drain_events() {
            self.on_event(ev)?;
        }
        let e = self.node.engine();
        let step = (e.height().0, e.round().0, format!("{:?}", e.step()));
        if step != self.last_step {
            if step.0 == self.last_step.0 && step.1 > self.last_step.1 {
                info!(height = step.0, round = step.1, "round {} started: the previous round timed out (check peers, validator keys and clocks if this repeats)", step.1);
            }
            debug!(height = step.0, round = step.1, step = %step.2, "step");
            self.last_step = step;
        }
        self.refresh();
        Ok(())
    }

    fn on_event(&mut self, ev: NodeEvent) -> CliResult<()> {
        match ev {
            NodeEvent::Decided { block, commit, results } => {
                self.node
                    .storage
                    .save_results(&block, &results)
                    .map_err(|e| CliError::failure(format!("store: {e}")))?;
                let now = now_ms();
                self.shared
                    .metrics
                    .lock()
                    .expect("metrics")
                    .on_decided(now, block.txs.len());
                info!(
                    height = block.height().0,
                    round = commit.round.0,
                    txs = block.txs.len(),
                    proposer = %block.header.proposer,
                    id = %block.id(),
                    "committed block"
                );
                if block.header.time.0 > now + CLOCK_SKEW_WARN_MS {
                    let msg = format!(
                        "block {} has time {} ms ahead of this machine's clock: clocks are out of sync (run NTP/chrony on every machine)",
                        block.height().0,
                        block.header.time.0 - now
                    );
                    warn!(height = block.height().0, "{msg}");
                    self.warnings.insert("clock", msg);
                }
            }
            NodeEvent::Evidence(ev) => {
                warn!(culprit = %ev.culprit(), height = ev.height().0, "evidence of misbehaviour: a validator signed two conflicting votes");
            }
            NodeEvent::Rejected { from, kind, error } => {
                self.shared.metrics.lock().expect("metrics").rejected_messages_total += 1;
                if error.contains("another genesis") {
                    let msg = format!("peer {from} runs another chain: {error}");
                    warn!(peer = %from, "{msg}");
                    self.warnings.insert("genesis", msg);
                } else {
                    debug!(peer = %from, kind, %error, "message rejected");
                }
            }
        }
        Ok(())
    }

    fn housekeeping(&mut self) {
        let Some(key) = self.setup.validator_key.clone() else {
            return;
        };
        if !self.setup.cfg.file.is_validator {
            return;
        }
        let in_set = self.node.engine().is_validator();
        if self.told_not_validator != Some(in_set) {
            self.told_not_validator = Some(in_set);
            if in_set {
                info!(address = %key.address(), "this node is a validator");
                self.warnings.remove("validator");
            } else {
                let msg = format!(
                    "validator key {} is not in the validator set: this node follows the chain as an observer until the \
                     validators approve it; on validators holding more than 2/3 of the power run: \
                     tendr add-validator --address {} --power {DEFAULT_POWER}",
                    key.address(),
                    key.address()
                );
                warn!(address = %key.address(), "{msg}");
                self.warnings.insert("validator", msg);
            }
        }
        if !in_set {
            self.announce(&key);
        }
    }

    /// Publishes our validator public key once connected and caught up (retried until it is
    /// in the application state), so `add-validator --address` can find it.
    fn announce(&mut self, key: &PrivateKey) {
        let now = now_ms();
        let e = self.node.engine();
        let key_name = request_key(&key.address());
        let published = self
            .node
            .app
            .get(&key_name)
            .and_then(|v| parse_request(&key.address(), v))
            .is_some();
        if published
            || e.catching_up_to().is_some()
            || self.node.net.peer_views().is_empty()
            || now < self.last_announce_ms + ANNOUNCE_RETRY_MS
        {
            return;
        }
        self.last_announce_ms = now;
        let tx = format!("{key_name}={}@{now}", hex::encode(key.public_key().0));
        match self.node.submit_tx(tx.into_bytes()) {
            Ok(_) => {
                info!(address = %key.address(), "published this node's validator public key for `tendr add-validator`")
            }
            Err(e) => debug!(error = %e, "validator request not submitted"),
        }
    }

    fn refresh(&mut self) {
        let e = self.node.engine();
        let chain = e.chain();
        let vs = e.validators();
        let peers = self.node.net.peer_views();
        let latest = chain.height.0 - 1;
        let status = Status {
            node_id: self.setup.cfg.file.node_id.clone(),
            chain_id: chain.chain_id.clone(),
            genesis_hash: self.setup.genesis.hash.to_hex(),
            peer_id: self.setup.node_key.address().to_string(),
            validator_address: self.setup.validator_key.as_ref().map(|k| k.address().to_string()),
            wants_to_validate: self.setup.cfg.file.is_validator,
            in_validator_set: e.is_validator(),
            listen: self.setup.cfg.listen.to_string(),
            rpc: self.setup.cfg.rpc_addr.to_string(),
            latest_height: latest,
            latest_block_time: chain.last_block.map(|(_, t)| crate::genesis::format_time(t.0)),
            latest_block_id: chain.last_block.map(|(id, _)| id.to_hex()),
            consensus: ConsensusView {
                height: chain.height.0,
                round: e.round().0,
                step: format!("{:?}", e.step()),
                catching_up: e.catching_up_to().is_some(),
                catching_up_to: e.catching_up_to().map(|h| h.0),
            },
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
            peers,
            mempool_size: self.node.mempool().len(),
            warnings: self.warnings.values().cloned().collect(),
        };
        {
            let mut m = self.shared.metrics.lock().expect("metrics");
            m.height = latest;
            m.round = status.consensus.round;
            m.peers = status.peers.len();
            m.mempool_txs = status.mempool_size;
            m.mempool_bytes = self.node.mempool().bytes();
            m.is_validator = status.in_validator_set;
        }
        *self.shared.status.lock().expect("status") = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tendr_core::state_machine::TimeoutKind;

    #[test]
    fn wall_clock_fires_in_order() {
        let mut c = WallClock::default();
        let t = |h| Timeout {
            height: Height(h),
            round: tendr_core::types::Round(0),
            kind: TimeoutKind::Propose,
        };
        c.schedule(TimeMs(30), t(3));
        c.schedule(TimeMs(10), t(1));
        c.schedule(TimeMs(20), t(2));
        assert_eq!(c.next_deadline(), Some(10));
        assert_eq!(c.take_due(20), vec![t(1), t(2)]);
        assert_eq!(c.take_due(25), vec![]);
        assert_eq!(c.next_deadline(), Some(30));
    }

    #[test]
    fn validator_request_binds_key_to_address() {
        let k = PrivateKey::from_seed(b"r");
        let other = PrivateKey::from_seed(b"o");
        let v = format!("{}@1", hex::encode(k.public_key().0));
        assert_eq!(parse_request(&k.address(), &v), Some(k.public_key()));
        assert_eq!(parse_request(&other.address(), &v), None);
        assert_eq!(parse_request(&k.address(), "zz"), None);
    }
}
