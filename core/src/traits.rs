//! The trait layer between the engine and a world, and [`Node`], the one driver both worlds use.
//!
//! A world provides a [`Clock`] (time and timers), a [`Network`] (send and broadcast), a
//! [`Storage`] (durable consensus log and decided blocks) and an [`Application`]. The
//! simulator provides virtual ones; the real node provides tokio, QUIC and an embedded
//! database. The driver is the same.

use crate::chain::ChainState;
use crate::codec::{decode_message, DecodeError};
use crate::crypto::{sha256, verify, CryptoError, PrivateKey, PublicKey, Signature, Signer};
use crate::engine::{Engine, EngineConfig, EngineError, Input, Output, Timeout, WalEntry};
use crate::limits::{MAX_BLOCK_BYTES, MAX_BLOCK_TXS, VERIFY_CACHE_ENTRIES};
use crate::mempool::{Mempool, MempoolError};
use crate::state_machine::TimeoutKind;
use crate::statesync::{verify_snapshot, StateSync, StateSyncPhase, TrustAnchor, Verdict};
use crate::types::*;
use crate::validator::{ValidatorSet, ValidatorUpdate};
use k256::ecdsa::VerifyingKey;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

/// Time and timers. `now` is virtual in the simulator, wall-clock in the real node.
pub trait Clock {
    fn now(&self) -> TimeMs;
    /// Deliver `timeout` to [`Node::on_timeout`] at (or after) `at`.
    fn schedule(&mut self, at: TimeMs, timeout: Timeout);
}

/// Sending consensus messages. Delivery is best effort; the engine re-sends what matters.
pub trait Network {
    fn broadcast(&mut self, msg: &Message);
    fn send(&mut self, to: PeerId, msg: &Message);
    /// Broadcasts `msg`, a [`Message::Tx`] whose transaction hashes to `tx_hash`, so that a
    /// network that keys transactions by their hash need not hash it again.
    fn broadcast_tx(&mut self, msg: &Message, tx_hash: &Hash) {
        let _ = tx_hash;
        self.broadcast(msg);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

/// A point to restart from without replaying every decided block: the chain state after
/// some height and the application's own snapshot taken at that same point.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The chain ready to decide `chain.height` (so it covers every block below it).
    pub chain: ChainState,
    /// [`Application::snapshot`] after executing block `chain.height - 1`.
    pub app: Vec<u8>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotRecord {
    #[serde(with = "serde_bytes")]
    chain: Vec<u8>,
    #[serde(with = "serde_bytes")]
    app: Vec<u8>,
}

impl Snapshot {
    /// The canonical encoding, as stored and as served to peers (see [`Snapshot::decode`]).
    pub fn encode(&self) -> Vec<u8> {
        crate::codec::encode(&SnapshotRecord {
            chain: self.chain.encode(),
            app: self.app.clone(),
        })
    }

    /// Decodes an encoded snapshot and checks its chain state (not the application's part:
    /// only the application can read that, in [`Application::restore`]).
    pub fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
        let r: SnapshotRecord =
            crate::codec::decode_bounded(bytes, bytes.len()).map_err(|e| format!("not an encoded snapshot: {e}"))?;
        Ok(Snapshot {
            chain: ChainState::decode(&r.chain)?,
            app: r.app,
        })
    }
}

/// When the node takes snapshots and how many decided blocks it keeps below the newest one
/// (to serve peers that catch up). `every == 0` takes none; `retain == 0` prunes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotPolicy {
    pub every: u64,
    pub retain: u64,
}

/// Durable state. A write is durable once [`Storage::sync`] returns; the node syncs before it
/// sends anything that depends on what it wrote (persist before send).
pub trait Storage {
    /// Appends one of our signed messages to the consensus log.
    fn append_wal(&mut self, entry: WalEntry) -> Result<(), StorageError>;
    /// Our signed messages of `height`, in the order they were appended.
    fn wal(&self, height: Height) -> Result<Vec<WalEntry>, StorageError>;
    /// Stores a decided block and its commit; the log of earlier heights may be pruned.
    fn save_decided(&mut self, block: &Block, commit: &Commit) -> Result<(), StorageError>;
    fn decided(&self, height: Height) -> Result<Option<(Block, Commit)>, StorageError>;
    /// Highest stored decided height (0 when none).
    fn last_height(&self) -> Result<Height, StorageError>;
    /// Makes every write so far durable. A store that is durable on return does nothing.
    fn sync(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Keeps `snapshot` as the point to restart from. A store without snapshots ignores it
    /// (and the node then replays every block on start).
    fn save_snapshot(&mut self, _snapshot: &Snapshot) -> Result<(), StorageError> {
        Ok(())
    }
    /// The newest snapshot kept, if any.
    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        Ok(None)
    }
    /// Forgets decided blocks below `height`; only called for heights a kept snapshot covers.
    fn prune_decided(&mut self, _below: Height) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Storage in memory, for tests, tools and the simulator. Clones share one content, so a node
/// rebuilt from a clone after a (simulated) crash finds what its predecessor made durable.
#[derive(Clone, Default, Debug)]
pub struct MemStorage(Arc<std::sync::Mutex<MemStorageInner>>);

/// Entries are immutable once written, so they are held by `Arc`: a copy of the store (the
/// simulator keeps a durable and a live one) shares them instead of cloning blocks.
#[derive(Default, Debug)]
struct MemStorageInner {
    wal: Vec<Arc<WalEntry>>,
    blocks: std::collections::BTreeMap<u64, Arc<(Block, Commit)>>,
    snapshot: Option<Arc<Snapshot>>,
    /// Highest decided height ever stored (blocks below a snapshot may be pruned).
    last: u64,
}

impl MemStorage {
    fn inner(&self) -> std::sync::MutexGuard<'_, MemStorageInner> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    /// Highest decided height stored (0 when none).
    pub fn height(&self) -> u64 {
        self.inner().last
    }
    /// How many decided blocks are kept (they are pruned below a snapshot).
    pub fn blocks_kept(&self) -> usize {
        self.inner().blocks.len()
    }
    pub fn block_id(&self, h: u64) -> Option<BlockId> {
        self.inner().blocks.get(&h).map(|d| d.0.id())
    }
    pub fn commit(&self, h: u64) -> Option<Commit> {
        self.inner().blocks.get(&h).map(|d| d.1.clone())
    }
    /// A copy whose later writes are its own (what a crashed disk held). The entries written
    /// so far are immutable and shared.
    pub fn deep_copy(&self) -> MemStorage {
        let s = self.inner();
        MemStorage(Arc::new(std::sync::Mutex::new(MemStorageInner {
            wal: s.wal.clone(),
            blocks: s.blocks.clone(),
            snapshot: s.snapshot.clone(),
            last: s.last,
        })))
    }
    /// Forgets the consensus log (the simulator's amnesia behaviour).
    pub fn clear_wal(&self) {
        self.inner().wal.clear();
    }
    /// [`Storage::append_wal`] of an entry the caller shares.
    pub fn append_wal_shared(&self, e: Arc<WalEntry>) {
        self.inner().wal.push(e);
    }
    /// [`Storage::save_decided`] of a block and commit the caller shares.
    pub fn save_decided_shared(&self, d: Arc<(Block, Commit)>) {
        let mut s = self.inner();
        let h = d.0.height();
        s.blocks.insert(h.0, d);
        s.last = s.last.max(h.0);
        s.wal.retain(|e| e.height() > h);
    }
    /// [`Storage::save_snapshot`] of a snapshot the caller shares.
    pub fn save_snapshot_shared(&self, snapshot: Arc<Snapshot>) {
        self.inner().snapshot = Some(snapshot);
    }
}

impl Storage for MemStorage {
    fn append_wal(&mut self, e: WalEntry) -> Result<(), StorageError> {
        self.append_wal_shared(Arc::new(e));
        Ok(())
    }
    fn wal(&self, h: Height) -> Result<Vec<WalEntry>, StorageError> {
        Ok(self
            .inner()
            .wal
            .iter()
            .filter(|e| e.height() == h)
            .map(|e| WalEntry::clone(e))
            .collect())
    }
    fn save_decided(&mut self, b: &Block, c: &Commit) -> Result<(), StorageError> {
        self.save_decided_shared(Arc::new((b.clone(), c.clone())));
        Ok(())
    }
    fn decided(&self, h: Height) -> Result<Option<(Block, Commit)>, StorageError> {
        Ok(self.inner().blocks.get(&h.0).map(|d| (**d).clone()))
    }
    fn last_height(&self) -> Result<Height, StorageError> {
        Ok(Height(self.height()))
    }
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.save_snapshot_shared(Arc::new(snapshot.clone()));
        Ok(())
    }
    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.inner().snapshot.as_deref().cloned())
    }
    fn prune_decided(&mut self, below: Height) -> Result<(), StorageError> {
        let mut s = self.inner();
        let covered = s.snapshot.as_ref().map_or(0, |snap| snap.chain.height.0);
        let below = below.0.min(covered);
        s.blocks = s.blocks.split_off(&below);
        Ok(())
    }
}

/// Result of one transaction in a decided block.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TxResult {
    /// 0 is success.
    pub code: u32,
    pub log: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExecResult {
    pub app_hash: Hash,
    pub tx_results: Vec<TxResult>,
    /// Applied from height `h + 1` on (see [`crate::chain`]).
    pub validator_updates: Vec<ValidatorUpdate>,
}

/// The answer to [`Application::query`] (as ABCI's `Query`: a code, 0 for found, the value and
/// a log for people).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueryResult {
    /// 0: found; [`QueryResult::NOT_FOUND`]: no such key; [`QueryResult::UNSUPPORTED`]: the
    /// application answers no such query. Other codes are the application's own.
    pub code: u32,
    pub value: Vec<u8>,
    pub log: String,
}

impl QueryResult {
    pub const NOT_FOUND: u32 = 1;
    pub const UNSUPPORTED: u32 = 2;
    pub fn found(value: Vec<u8>) -> Self {
        QueryResult {
            code: 0,
            value,
            log: String::new(),
        }
    }
    pub fn not_found() -> Self {
        QueryResult {
            code: Self::NOT_FOUND,
            value: Vec::new(),
            log: "not found".into(),
        }
    }
    pub fn unsupported(path: &str) -> Self {
        QueryResult {
            code: Self::UNSUPPORTED,
            value: Vec::new(),
            log: format!("this application answers no query `{path}`"),
        }
    }
}

/// Why an application could not answer (one behind a socket: down, slow, or answering garbage).
/// The node acts on no missing answer: no proposal without transactions, no next height
/// without an executed block (it stalls and retries, as for a store that refuses a write).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("application: {0}")]
pub struct AppError(pub String);

/// The replicated application: the user's state machine, the same in the simulator and on a
/// real node.
///
/// It must be deterministic: the same blocks give the same results and the same app hash on
/// every node, whatever the machine, the clock or the thread timing. The simulator checks it
/// (every honest node's app hash after every height) and reports the first divergence.
pub trait Application {
    /// The application hash before any block (goes into genesis).
    fn initial_app_hash(&self) -> Hash;
    /// Whether a transaction may enter the mempool.
    fn check_tx(&self, tx: &[u8]) -> Result<(), String>;
    /// `getValue()`: the transactions of a new block, from the mempool. An error proposes
    /// nothing for now: the node asks again while the round lasts ([`Node::retry_stalled`]),
    /// and the other validators' propose timeouts move the round on.
    fn prepare_txs(&mut self, mempool: &Mempool, max_txs: usize, max_bytes: usize) -> Result<Vec<Vec<u8>>, AppError> {
        Ok(mempool.take(max_txs, max_bytes))
    }
    /// `valid(v)` beyond what the engine checks itself.
    fn validate_block(&self, block: &Block) -> bool;
    /// Executes a decided block with the validators of its height. An error leaves the
    /// block decided but not executed: the node goes to no next height, retries it
    /// ([`Node::is_stalled`]) and fails to start while a stored block cannot be re-executed.
    fn execute_block(&mut self, block: &Block, validators: &ValidatorSet) -> Result<ExecResult, AppError>;
    /// The whole application state as bytes, to restart from without replaying blocks.
    /// `None`: this application takes no snapshots (the node then keeps every block).
    fn snapshot(&self) -> Option<Vec<u8>> {
        None
    }
    /// Replaces the state (of a fresh application) with a [`Application::snapshot`].
    fn restore(&mut self, _snapshot: &[u8]) -> Result<(), String> {
        Err("this application cannot restore snapshots".into())
    }
    /// Whether state sync may restore this application from a peer's snapshot: it must be able
    /// to tell, in [`Application::verify_restored`], that a restored state is the one an app
    /// hash commits to. An app hash that only chains blocks cannot; such an application
    /// catches up by replaying blocks.
    fn supports_state_sync(&self) -> bool {
        false
    }
    /// After [`Application::restore`] of a peer's snapshot: `Ok` only if the restored state is
    /// the one `app_hash` (proven by the trusted chain of headers) commits to, recomputed from
    /// the state itself, never read from the snapshot.
    fn verify_restored(&self, _app_hash: &Hash) -> Result<(), String> {
        Err("this application cannot check a restored snapshot".into())
    }
    /// Answers a read-only query about the state after the last executed block: `path` names
    /// what is asked (the application's own vocabulary; "" is its default), `data` the
    /// argument (e.g. a key). The real node serves it over its RPC.
    fn query(&self, path: &str, _data: &[u8]) -> QueryResult {
        QueryResult::unsupported(path)
    }
}

/// Signature checking, possibly cached. The engine calls this for every signature it checks.
pub trait SignatureVerifier: Send {
    fn verify(&mut self, pk: &PublicKey, key: &VerifyingKey, msg: &[u8], sig: &Signature) -> Result<(), CryptoError>;
}

/// Verifies every signature, remembering the last [`VERIFY_CACHE_ENTRIES`] good ones (keyed by
/// SHA-256 of key, message and signature) so a message seen twice is verified once.
#[derive(Debug, Default)]
pub struct CachingVerifier {
    seen: BTreeSet<Hash>,
    order: VecDeque<Hash>,
    pub hits: u64,
    pub misses: u64,
}

impl CachingVerifier {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn digest(pk: &PublicKey, msg: &[u8], sig: &Signature) -> Hash {
        let mut buf = Vec::with_capacity(33 + 64 + msg.len());
        buf.extend_from_slice(&pk.0);
        buf.extend_from_slice(&sig.0);
        buf.extend_from_slice(msg);
        sha256(&buf)
    }
}

impl SignatureVerifier for CachingVerifier {
    fn verify(&mut self, pk: &PublicKey, key: &VerifyingKey, msg: &[u8], sig: &Signature) -> Result<(), CryptoError> {
        let d = Self::digest(pk, msg, sig);
        if self.seen.contains(&d) {
            self.hits += 1;
            return Ok(());
        }
        self.misses += 1;
        verify(key, msg, sig)?;
        if self.order.len() >= VERIFY_CACHE_ENTRIES {
            let old = self.order.pop_front().expect("non-empty");
            self.seen.remove(&old);
        }
        self.seen.insert(d);
        self.order.push_back(d);
        Ok(())
    }
}

/// What happened inside a node, for logs, metrics, RPC and the simulator's checkers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    Decided {
        block: Block,
        commit: Commit,
        results: Vec<TxResult>,
        /// The application's hash after executing the block.
        app_hash: Hash,
    },
    Evidence(Evidence),
    /// State sync restored a peer's snapshot of `height`, proven by the trusted block at
    /// `trust_height`; block sync goes on from there.
    StateSynced {
        height: Height,
        trust_height: Height,
    },
    /// A peer no longer keeps a decided block we need (it pruned it) and offered its newest
    /// snapshot instead: this node is further behind than its peers keep blocks, and only
    /// state sync (a trusted height and hash) brings it back.
    PeerPruned {
        from: PeerId,
        /// The height we need.
        needed: Height,
        /// The height of the snapshot it keeps.
        snapshot: Height,
    },
    /// A peer's message was refused.
    Rejected {
        from: PeerId,
        kind: &'static str,
        error: String,
        /// Whether the refusal is the sender's fault ([`NodeError::blames_sender`]).
        blames_sender: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Rejected(#[from] EngineError),
    #[error("undecodable message: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("stored block at height {0} does not follow the chain: {1}")]
    CorruptStore(Height, String),
    #[error("transaction rejected: {0}")]
    TxRejected(String),
    #[error(transparent)]
    App(#[from] AppError),
}

impl NodeError {
    /// Whether a peer's message that failed this way proves the peer faulty: undecodable bytes
    /// and the engine's refusals that [`EngineError::blames_sender`] names. This node's own
    /// storage failures and a refused transaction are not the sender's fault.
    pub fn blames_sender(&self) -> bool {
        match self {
            NodeError::Decode(_) => true,
            NodeError::Rejected(e) => e.blames_sender(),
            NodeError::Storage(_) | NodeError::CorruptStore(..) | NodeError::TxRejected(_) | NodeError::App(_) => false,
        }
    }
}

impl From<MempoolError> for NodeError {
    fn from(e: MempoolError) -> Self {
        NodeError::TxRejected(e.to_string())
    }
}

/// Most events kept undrained; older ones are dropped (callers drain after every call).
const MAX_PENDING_EVENTS: usize = 4096;

/// The driver: feeds inputs to the [`Engine`] and carries its outputs out through the traits,
/// in order. How to drive it: [`Node::new`] (recovers from storage), [`Node::start`], then
/// [`Node::on_bytes`] / [`Node::on_message`] for network input, [`Node::on_timeout`] when the
/// clock fires a timer, [`Node::submit_tx`] for clients; drain [`Node::drain_events`].
/// A snapshot as served to peers: its height, encoding and the encoding's hash.
type Served = (Height, Arc<Vec<u8>>, Hash);

pub struct Node<C, N, S, A> {
    engine: Engine,
    pub clock: C,
    pub net: N,
    pub storage: S,
    pub app: A,
    mempool: Mempool,
    events: VecDeque<NodeEvent>,
    snapshots: SnapshotPolicy,
    /// Written since the last [`Storage::sync`].
    unsynced: bool,
    /// The first failed sync of the current input (its sends were skipped), or the first
    /// application error that did not stop the input (a proposal not built).
    send_error: Option<NodeError>,
    /// A decided block the store refused or the application could not execute, retried
    /// before each later input.
    stalled_decide: Option<(Block, Commit)>,
    /// The height of the stalled block when the store has it and only its execution failed
    /// (the retry does not write it again).
    stalled_stored: Option<Height>,
    /// Our proposal's transactions the application could not give (height, round): asked
    /// again while that round lasts (a proposer does not time out its own propose step).
    stalled_build: Option<(Height, Round)>,
    /// Buffers of [`Node::run`], empty between calls.
    inputs: VecDeque<Input>,
    outputs: Vec<Output>,
    /// State sync, while it runs (the engine waits until it is done).
    state_sync: Option<StateSync>,
    /// Our snapshots as served to peers that state-sync, newest last: the newest, and the one
    /// before it if it was served (a peer that chose it keeps fetching its chunks after we
    /// took a newer one). `served_fresh` is false once a newer one is stored.
    served: Vec<Served>,
    served_fresh: bool,
}

impl<C: Clock, N: Network, S: Storage, A: Application> Node<C, N, S, A> {
    /// Builds the node from genesis and what `storage` holds: decided blocks are re-executed
    /// in `app` (which must be fresh), then the engine resumes from the consensus log.
    // The four worlds' parts plus identity and config: a builder would hide nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cfg: EngineConfig,
        key: Option<PrivateKey>,
        genesis: ChainState,
        clock: C,
        net: N,
        storage: S,
        app: A,
        verifier: Box<dyn SignatureVerifier>,
    ) -> Result<Self, NodeError> {
        let key = key.map(|k| Box::new(k) as Box<dyn Signer>);
        Self::with_signer(cfg, key, genesis, clock, net, storage, app, verifier)
    }

    /// [`Node::new`] with any [`Signer`] (the simulator's trusted mode uses a null signer).
    #[allow(clippy::too_many_arguments)]
    pub fn with_signer(
        cfg: EngineConfig,
        key: Option<Box<dyn Signer>>,
        genesis: ChainState,
        clock: C,
        net: N,
        storage: S,
        mut app: A,
        verifier: Box<dyn SignatureVerifier>,
    ) -> Result<Self, NodeError> {
        let mut chain = genesis;
        if let Some(snap) = storage.snapshot()? {
            if snap.chain.chain_id != chain.chain_id {
                return Err(NodeError::CorruptStore(
                    snap.chain.height,
                    format!("snapshot of chain `{}`", snap.chain.chain_id),
                ));
            }
            app.restore(&snap.app)
                .map_err(|e| NodeError::CorruptStore(snap.chain.height, format!("snapshot: {e}")))?;
            chain = snap.chain;
        }
        let last = storage.last_height()?;
        for h in chain.height.0..=last.0 {
            let (block, commit) = storage
                .decided(Height(h))?
                .ok_or_else(|| NodeError::CorruptStore(Height(h), "missing".into()))?;
            if block.header.app_hash != chain.app_hash || block.header.prev_block_id != chain.last_block.map(|b| b.0) {
                return Err(NodeError::CorruptStore(
                    Height(h),
                    "app hash or previous block mismatch".into(),
                ));
            }
            let res = app.execute_block(&block, &chain.validators)?;
            chain.advance(&block, &commit, res.app_hash, &res.validator_updates);
        }
        let wal = storage.wal(chain.height)?;
        let engine = Engine::with_signer(cfg, key, chain, wal, verifier);
        Ok(Node {
            engine,
            clock,
            net,
            storage,
            app,
            mempool: Mempool::new(),
            events: VecDeque::new(),
            snapshots: SnapshotPolicy::default(),
            unsynced: false,
            send_error: None,
            stalled_decide: None,
            stalled_stored: None,
            stalled_build: None,
            inputs: VecDeque::new(),
            outputs: Vec::new(),
            state_sync: None,
            served: Vec::new(),
            served_fresh: false,
        })
    }

    /// Starts from a peer's snapshot proven by the trusted block `anchor` (see
    /// [`crate::statesync`]) instead of replaying every block: call before [`Node::start`].
    /// Nothing to do (`Ok(false)`) when this node is already past the trusted height.
    pub fn start_state_sync(&mut self, anchor: TrustAnchor) -> Result<bool, String> {
        if !self.app.supports_state_sync() {
            return Err(
                "this application cannot check a restored snapshot against its app hash \
                        (Application::verify_restored), so it cannot be state-synced; catch up by block sync instead"
                    .into(),
            );
        }
        if anchor.height < self.engine.height() {
            return Ok(false);
        }
        let retry = self.engine.config().timeouts.sync_retry_ms;
        self.state_sync = Some(StateSync::new(anchor, self.engine.height(), retry));
        Ok(true)
    }

    /// State sync's progress, while it runs or once done.
    pub fn state_sync_phase(&self) -> Option<StateSyncPhase> {
        self.state_sync.as_ref().map(|s| s.phase())
    }

    /// Whether state sync runs (consensus waits for it).
    pub fn is_state_syncing(&self) -> bool {
        self.state_sync.as_ref().is_some_and(|s| !s.is_done())
    }

    fn schedule_state_sync_tick(&mut self) {
        let every = (self.engine.config().timeouts.sync_retry_ms / 4).max(5);
        let at = TimeMs(self.clock.now().0 + every);
        let timeout = Timeout {
            height: self.engine.height(),
            round: Round(0),
            kind: TimeoutKind::StateSync,
        };
        self.clock.schedule(at, timeout);
    }

    fn state_sync_tick(&mut self) -> Result<(), NodeError> {
        let now = self.clock.now();
        let Some(ss) = self.state_sync.as_mut() else {
            return Ok(());
        };
        if ss.is_done() {
            return Ok(());
        }
        for (to, msg) in ss.tick(now) {
            match to {
                Some(p) => self.net.send(p, &msg),
                None => self.net.broadcast(&msg),
            }
        }
        self.schedule_state_sync_tick();
        Ok(())
    }

    /// A state-sync message from a peer (either side: serving or syncing).
    fn on_state_sync_message(&mut self, from: PeerId, msg: Message) -> Result<(), NodeError> {
        let now = self.clock.now();
        let verdict = match msg {
            Message::RequestSnapshot => {
                self.served_snapshot()?;
                for (height, bytes, hash) in &self.served {
                    let offer = Message::SnapshotOffer {
                        height: *height,
                        hash: *hash,
                        size: bytes.len() as u64,
                    };
                    self.net.send(from, &offer);
                }
                Verdict::Ok
            }
            Message::RequestChunk { height, index } => {
                self.served_snapshot()?;
                if let Some((_, bytes, _)) = self.served.iter().find(|(h, _, _)| *h == height) {
                    let start = index as usize * SNAPSHOT_CHUNK_BYTES;
                    if start < bytes.len() {
                        let end = (start + SNAPSHOT_CHUNK_BYTES).min(bytes.len());
                        let chunk = Message::SnapshotChunk {
                            height,
                            index,
                            data: bytes[start..end].to_vec(),
                        };
                        self.net.send(from, &chunk);
                    }
                }
                Verdict::Ok
            }
            Message::SnapshotOffer { height, hash, size } => match self.state_sync.as_mut() {
                Some(ss) => ss.on_offer(now, from, height, hash, size),
                None => {
                    let needed = self.engine.height();
                    if height > needed {
                        self.event(NodeEvent::PeerPruned {
                            from,
                            needed,
                            snapshot: height,
                        });
                    }
                    Verdict::Ok
                }
            },
            Message::SnapshotChunk { height, index, data } => match self.state_sync.as_mut() {
                Some(ss) => ss.on_chunk(from, height, index, data),
                None => Verdict::Ok,
            },
            Message::Decided { block, commit } => match self.state_sync.as_mut() {
                Some(ss) => ss.on_decided(from, block, commit),
                None => Verdict::Ok,
            },
            _ => Verdict::Ok, // consensus waits until state sync is done
        };
        if let Verdict::Forged(e) = verdict {
            return Err(EngineError::BadDecided(e).into());
        }
        self.try_finish_state_sync()
    }

    /// Our newest snapshot, encoded once and kept for the peers that fetch it chunk by chunk
    /// (with the one served before it, see `served`).
    fn served_snapshot(&mut self) -> Result<Option<Served>, NodeError> {
        if !self.served_fresh {
            if let Some(s) = self.storage.snapshot()? {
                let height = s.chain.height;
                if self.served.last().is_none_or(|(h, _, _)| *h != height) {
                    let bytes = s.encode();
                    let hash = sha256(&bytes);
                    self.served.retain(|(h, _, _)| *h < height);
                    self.served.push((height, Arc::new(bytes), hash));
                    if self.served.len() > 2 {
                        self.served.remove(0);
                    }
                }
            }
            self.served_fresh = true;
        }
        Ok(self.served.last().cloned())
    }

    /// Checks and restores the snapshot once it is assembled with its proven blocks; a false
    /// one drops its peers and discovery starts again, with nothing kept.
    fn try_finish_state_sync(&mut self) -> Result<(), NodeError> {
        let Some(ss) = self.state_sync.as_mut() else {
            return Ok(());
        };
        let Some(a) = ss.take_assembled() else {
            return Ok(());
        };
        let trust_height = ss.anchor().height;
        let chain_id = self.engine.config().chain_id.clone();
        let checked = Snapshot::decode(&a.bytes).and_then(|mut snap| {
            let (_, before, _) = &a.blocks[0];
            let (_, first, commit) = &a.blocks[1];
            verify_snapshot(&mut snap.chain, &chain_id, before, first, commit)?;
            Ok(snap)
        });
        let snap = match checked {
            Ok(snap) => snap,
            Err(e) => return self.reject_snapshot(&a.offered_by, e),
        };
        let previous = self.app.snapshot();
        let restored = self
            .app
            .restore(&snap.app)
            .and_then(|()| self.app.verify_restored(&snap.chain.app_hash));
        if let Err(e) = restored {
            if let Some(p) = previous {
                let _ = self.app.restore(&p);
            }
            return self.reject_snapshot(&a.offered_by, format!("its application state: {e}"));
        }
        self.storage.save_snapshot(&snap)?;
        self.storage.sync()?;
        self.served_fresh = false;
        let height = snap.chain.height;
        self.engine
            .adopt_snapshot(snap.chain, a.blocks.into_iter().skip(1).collect());
        if let Some(ss) = self.state_sync.as_mut() {
            ss.finish(height);
        }
        self.event(NodeEvent::StateSynced { height, trust_height });
        self.run(Input::Start)
    }

    fn reject_snapshot(&mut self, offered_by: &[PeerId], why: String) -> Result<(), NodeError> {
        if let Some(ss) = self.state_sync.as_mut() {
            ss.reject(offered_by);
        }
        Err(EngineError::BadDecided(format!("state sync: a false snapshot ({why})")).into())
    }

    /// Takes a snapshot every `policy.every` heights and prunes decided blocks older than
    /// `policy.retain` below it, so a long-running node's store stays bounded.
    pub fn set_snapshot_policy(&mut self, policy: SnapshotPolicy) {
        self.snapshots = policy;
    }

    fn maybe_snapshot(&mut self, decided: Height) -> Result<(), NodeError> {
        let SnapshotPolicy { every, retain } = self.snapshots;
        if every == 0 || !decided.0.is_multiple_of(every) || self.engine.height() != decided.next() {
            return Ok(());
        }
        let Some(app) = self.app.snapshot() else { return Ok(()) };
        self.storage.save_snapshot(&Snapshot {
            chain: self.engine.chain().clone(),
            app,
        })?;
        self.served_fresh = false;
        self.unsynced = true;
        if retain > 0 {
            self.storage
                .prune_decided(Height(decided.0.saturating_sub(retain) + 1))?;
        }
        Ok(())
    }

    /// Persist before send: whatever was written is made durable before anything leaves.
    fn sync(&mut self) -> Result<(), NodeError> {
        if self.unsynced {
            self.storage.sync()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Persist before send, for one send: `false` (the message is not sent) when what was
    /// written cannot be made durable. The other outputs still run (timers, decisions), the
    /// engine re-sends what matters later, and the error is returned once the input is done.
    fn sync_before_send(&mut self) -> bool {
        match self.sync() {
            Ok(()) => true,
            Err(e) => {
                self.send_error.get_or_insert(e);
                false
            }
        }
    }

    /// Whether a decided block waits to be stored or executed (the store refused it, a full
    /// disk, or the application failed), or our proposal waits for the application's
    /// transactions; the node goes on once [`Node::retry_stalled`] (or any later input) gets
    /// them through.
    pub fn is_stalled(&self) -> bool {
        self.stalled_decide.is_some() || self.stalled_build.is_some()
    }

    /// Stores and executes the decided block the store refused, if any; a driver calls it
    /// periodically while [`Node::is_stalled`], so a node with no input resumes too.
    pub fn retry_stalled(&mut self) -> Result<(), NodeError> {
        if let Some((block, commit)) = self.stalled_decide.take() {
            if let Some(executed) = self.execute(Output::Decide { block, commit })? {
                self.run(executed)?;
            }
        }
        let Some((height, round)) = self.stalled_build.take() else {
            return Ok(());
        };
        if (height, round) != (self.engine.height(), self.engine.round()) {
            return Ok(()); // that round is over
        }
        match self.app.prepare_txs(&self.mempool, MAX_BLOCK_TXS, MAX_BLOCK_BYTES / 2) {
            Ok(txs) => self.run(Input::BlockTxs { height, round, txs }),
            Err(e) => {
                self.stalled_build = Some((height, round));
                Err(e.into())
            }
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }
    pub fn drain_events(&mut self) -> Vec<NodeEvent> {
        self.events.drain(..).collect()
    }

    pub fn start(&mut self) -> Result<(), NodeError> {
        if self.is_state_syncing() {
            return self.state_sync_tick();
        }
        self.run(Input::Start)
    }

    pub fn on_timeout(&mut self, t: Timeout) -> Result<(), NodeError> {
        if t.kind == TimeoutKind::StateSync {
            return self.state_sync_tick();
        }
        if self.is_state_syncing() {
            return Ok(());
        }
        self.run(Input::TimeoutElapsed(t))
    }

    /// Bytes from a peer: decoded by the one fallible decoder, then handled.
    pub fn on_bytes(&mut self, from: PeerId, bytes: &[u8]) -> Result<(), NodeError> {
        match decode_message(bytes) {
            Ok(msg) => self.on_message(from, msg),
            Err(e) => {
                self.event(NodeEvent::Rejected {
                    from,
                    kind: "bytes",
                    error: e.to_string(),
                    blames_sender: true,
                });
                Err(e.into())
            }
        }
    }

    pub fn on_message(&mut self, from: PeerId, msg: Message) -> Result<(), NodeError> {
        match msg {
            Message::Tx(tx) => {
                let h = sha256(&tx);
                self.on_tx(tx, h)
            }
            msg => {
                let kind = msg.kind();
                let state_sync = matches!(
                    msg,
                    Message::RequestSnapshot
                        | Message::RequestChunk { .. }
                        | Message::SnapshotOffer { .. }
                        | Message::SnapshotChunk { .. }
                ) || self.is_state_syncing();
                let result = if state_sync {
                    self.on_state_sync_message(from, msg)
                } else {
                    self.run(Input::Message { from, msg })
                };
                if let Err(NodeError::Rejected(e)) = &result {
                    self.event(NodeEvent::Rejected {
                        from,
                        kind,
                        error: e.to_string(),
                        blames_sender: e.blames_sender(),
                    });
                }
                result
            }
        }
    }

    /// A gossiped transaction (what [`Node::on_message`] does with a [`Message::Tx`]) whose
    /// hash `h` (`sha256(&tx)`) the caller already computed, e.g. to deduplicate it.
    pub fn on_tx(&mut self, tx: Vec<u8>, h: Hash) -> Result<(), NodeError> {
        self.add_tx(tx, h).map(|_| ())
    }

    /// A transaction from a client: checked, pooled and gossiped.
    pub fn submit_tx(&mut self, tx: Vec<u8>) -> Result<Hash, NodeError> {
        let h = sha256(&tx);
        self.add_tx(tx, h)?;
        Ok(h)
    }

    /// Checks and pools a transaction and gossips it if it is new (each new transaction is
    /// gossiped once). `h` is `sha256(&tx)`: the one hash of the transaction on this path.
    fn add_tx(&mut self, tx: Vec<u8>, h: Hash) -> Result<bool, NodeError> {
        if self.mempool.contains(&h) {
            return Ok(false);
        }
        self.app.check_tx(&tx).map_err(NodeError::TxRejected)?;
        if !self.mempool.admits(&h, tx.len())? {
            return Ok(false);
        }
        // The message is built from the transaction itself and handed to the pool after the
        // broadcast: no copy. The pool takes it even when the sync fails, as it always did.
        let msg = Message::Tx(tx);
        let synced = self.sync();
        if synced.is_ok() {
            self.net.broadcast_tx(&msg, &h);
        }
        let Message::Tx(tx) = msg else {
            unreachable!("built above as a transaction")
        };
        self.mempool.insert(tx, h);
        synced.map(|()| true)
    }

    fn event(&mut self, e: NodeEvent) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Runs one input and every input its outputs lead to, carrying outputs out in order.
    fn run(&mut self, input: Input) -> Result<(), NodeError> {
        // The queues are the node's own buffers, kept for their capacity between calls.
        if self.is_stalled() {
            // Its errors are the store's (it reports them); this input's result is its own.
            let _ = self.retry_stalled();
        }
        let mut inputs = std::mem::take(&mut self.inputs);
        let mut outputs = std::mem::take(&mut self.outputs);
        inputs.push_back(input);
        let r = self.run_queue(&mut inputs, &mut outputs);
        let r = match (r, self.send_error.take()) {
            (Ok(()), Some(e)) => Err(e),
            (r, _) => r,
        };
        inputs.clear();
        outputs.clear();
        self.inputs = inputs;
        self.outputs = outputs;
        r
    }

    fn run_queue(&mut self, inputs: &mut VecDeque<Input>, outputs: &mut Vec<Output>) -> Result<(), NodeError> {
        let mut first = true;
        while let Some(input) = inputs.pop_front() {
            let now = self.clock.now();
            let executed = match &input {
                Input::Executed { height, .. } => Some(*height),
                _ => None,
            };
            match self.engine.handle_into(now, input, outputs) {
                Ok(()) => {}
                Err(e) if first => return Err(e.into()),
                Err(_) => continue,
            }
            first = false;
            if let Some(h) = executed {
                self.maybe_snapshot(h)?;
            }
            for o in outputs.drain(..) {
                if let Some(next) = self.execute(o)? {
                    inputs.push_back(next);
                }
            }
        }
        Ok(())
    }

    fn execute(&mut self, o: Output) -> Result<Option<Input>, NodeError> {
        Ok(match o {
            Output::Persist(entry) => {
                self.storage.append_wal(entry)?;
                self.unsynced = true;
                None
            }
            Output::Broadcast(msg) => {
                if self.sync_before_send() {
                    self.net.broadcast(&msg);
                }
                None
            }
            Output::Send { to, msg } => {
                if self.sync_before_send() {
                    self.net.send(to, &msg);
                }
                None
            }
            Output::ScheduleTimeout { timeout, at } => {
                self.clock.schedule(at, timeout);
                None
            }
            Output::BuildBlock { height, round } => {
                match self.app.prepare_txs(&self.mempool, MAX_BLOCK_TXS, MAX_BLOCK_BYTES / 2) {
                    Ok(txs) => Some(Input::BlockTxs { height, round, txs }),
                    Err(e) => {
                        // No proposal for now: asked again by `retry_stalled`.
                        self.stalled_build = Some((height, round));
                        self.send_error.get_or_insert(e.into());
                        None
                    }
                }
            }
            Output::ValidateBlock { block, id } => {
                let valid = self.app.validate_block(&block);
                Some(Input::BlockValidity {
                    height: block.height(),
                    block_id: id,
                    valid,
                })
            }
            Output::Decide { block, commit } => {
                if self.stalled_stored.take() != Some(block.height()) {
                    if let Err(e) = self.storage.save_decided(&block, &commit) {
                        // Retried before each later input: the engine waits for `Executed`.
                        self.stalled_decide = Some((block, commit));
                        return Err(e.into());
                    }
                }
                self.unsynced = true;
                let res = match self.app.execute_block(&block, self.engine.validators()) {
                    Ok(res) => res,
                    Err(e) => {
                        // Stored but not executed: the retry only executes it.
                        self.stalled_stored = Some(block.height());
                        self.stalled_decide = Some((block, commit));
                        return Err(e.into());
                    }
                };
                self.mempool.remove_committed(&block.txs);
                let input = Input::Executed {
                    height: block.height(),
                    app_hash: res.app_hash,
                    validator_updates: res.validator_updates.clone(),
                };
                self.event(NodeEvent::Decided {
                    block,
                    commit,
                    results: res.tx_results,
                    app_hash: res.app_hash,
                });
                Some(input)
            }
            Output::SendDecided { to, height } => {
                if let Some((block, commit)) = self.storage.decided(height)? {
                    if self.sync_before_send() {
                        self.net.send(to, &Message::Decided { block, commit });
                    }
                } else if height <= self.storage.last_height()? {
                    // Decided here once, and pruned since: say so with our snapshot, so the
                    // peer knows it needs state sync (and that we are not lying about our
                    // height).
                    if let Some((h, bytes, hash)) = self.served_snapshot()? {
                        let offer = Message::SnapshotOffer {
                            height: h,
                            hash,
                            size: bytes.len() as u64,
                        };
                        self.net.send(to, &offer);
                    }
                }
                None
            }
            Output::Evidence(ev) => {
                if self.sync_before_send() {
                    self.net.broadcast(&Message::Evidence(ev.clone()));
                }
                self.event(NodeEvent::Evidence(*ev));
                None
            }
        })
    }
}
