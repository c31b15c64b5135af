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
use crate::types::*;
use crate::validator::{ValidatorSet, ValidatorUpdate};
use k256::ecdsa::VerifyingKey;
use std::collections::{BTreeSet, VecDeque};

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
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(pub String);

/// Durable state. Every write is durable when the call returns.
pub trait Storage {
    /// Appends one of our signed messages to the consensus log.
    fn append_wal(&mut self, entry: &WalEntry) -> Result<(), StorageError>;
    /// Our signed messages of `height`, in the order they were appended.
    fn wal(&self, height: Height) -> Result<Vec<WalEntry>, StorageError>;
    /// Stores a decided block and its commit; the log of earlier heights may be pruned.
    fn save_decided(&mut self, block: &Block, commit: &Commit) -> Result<(), StorageError>;
    fn decided(&self, height: Height) -> Result<Option<(Block, Commit)>, StorageError>;
    /// Highest stored decided height (0 when none).
    fn last_height(&self) -> Result<Height, StorageError>;
}

/// Storage in memory, for tests, tools and the simulator. Clones share one content, so a node
/// rebuilt from a clone after a (simulated) crash finds what its predecessor made durable.
#[derive(Clone, Default, Debug)]
pub struct MemStorage(std::sync::Arc<std::sync::Mutex<MemStorageInner>>);

#[derive(Default, Debug)]
struct MemStorageInner {
    wal: Vec<WalEntry>,
    blocks: std::collections::BTreeMap<u64, (Block, Commit)>,
}

impl MemStorage {
    fn inner(&self) -> std::sync::MutexGuard<'_, MemStorageInner> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
    /// Highest decided height stored (0 when none).
    pub fn height(&self) -> u64 {
        self.inner().blocks.keys().next_back().copied().unwrap_or(0)
    }
    pub fn block_id(&self, h: u64) -> Option<BlockId> {
        self.inner().blocks.get(&h).map(|(b, _)| b.id())
    }
    pub fn commit(&self, h: u64) -> Option<Commit> {
        self.inner().blocks.get(&h).map(|(_, c)| c.clone())
    }
    /// Forgets the consensus log (the simulator's amnesia behaviour).
    pub fn clear_wal(&self) {
        self.inner().wal.clear();
    }
}

impl Storage for MemStorage {
    fn append_wal(&mut self, e: &WalEntry) -> Result<(), StorageError> {
        self.inner().wal.push(e.clone());
        Ok(())
    }
    fn wal(&self, h: Height) -> Result<Vec<WalEntry>, StorageError> {
        Ok(self.inner().wal.iter().filter(|e| e.height() == h).cloned().collect())
    }
    fn save_decided(&mut self, b: &Block, c: &Commit) -> Result<(), StorageError> {
        let mut s = self.inner();
        let h = b.height();
        s.blocks.insert(h.0, (b.clone(), c.clone()));
        s.wal.retain(|e| e.height() > h);
        Ok(())
    }
    fn decided(&self, h: Height) -> Result<Option<(Block, Commit)>, StorageError> {
        Ok(self.inner().blocks.get(&h.0).cloned())
    }
    fn last_height(&self) -> Result<Height, StorageError> {
        Ok(Height(self.height()))
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

/// The replicated application. Must be deterministic: same blocks, same results, same hash.
pub trait Application {
    /// The application hash before any block (goes into genesis).
    fn initial_app_hash(&self) -> Hash;
    /// Whether a transaction may enter the mempool.
    fn check_tx(&self, tx: &[u8]) -> Result<(), String>;
    /// `getValue()`: the transactions of a new block, from the mempool.
    fn prepare_txs(&mut self, mempool: &Mempool, max_txs: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        mempool.take(max_txs, max_bytes)
    }
    /// `valid(v)` beyond what the engine checks itself.
    fn validate_block(&self, block: &Block) -> bool;
    /// Executes a decided block with the validators of its height.
    fn execute_block(&mut self, block: &Block, validators: &ValidatorSet) -> ExecResult;
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
    },
    Evidence(Evidence),
    Rejected {
        from: PeerId,
        kind: &'static str,
        error: String,
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
pub struct Node<C, N, S, A> {
    engine: Engine,
    pub clock: C,
    pub net: N,
    pub storage: S,
    pub app: A,
    mempool: Mempool,
    events: VecDeque<NodeEvent>,
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
        let last = storage.last_height()?;
        for h in 1..=last.0 {
            let (block, commit) = storage
                .decided(Height(h))?
                .ok_or_else(|| NodeError::CorruptStore(Height(h), "missing".into()))?;
            if block.header.app_hash != chain.app_hash || block.header.prev_block_id != chain.last_block.map(|b| b.0) {
                return Err(NodeError::CorruptStore(
                    Height(h),
                    "app hash or previous block mismatch".into(),
                ));
            }
            let res = app.execute_block(&block, &chain.validators);
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
        })
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
        self.run(Input::Start)
    }

    pub fn on_timeout(&mut self, t: Timeout) -> Result<(), NodeError> {
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
                });
                Err(e.into())
            }
        }
    }

    pub fn on_message(&mut self, from: PeerId, msg: Message) -> Result<(), NodeError> {
        match msg {
            Message::Tx(tx) => {
                if self.add_tx(tx.clone())? {
                    self.net.broadcast(&Message::Tx(tx)); // gossip each new transaction once
                }
                Ok(())
            }
            msg => {
                let kind = msg.kind();
                let result = self.run(Input::Message { from, msg });
                if let Err(NodeError::Rejected(e)) = &result {
                    self.event(NodeEvent::Rejected {
                        from,
                        kind,
                        error: e.to_string(),
                    });
                }
                result
            }
        }
    }

    /// A transaction from a client: checked, pooled and gossiped.
    pub fn submit_tx(&mut self, tx: Vec<u8>) -> Result<Hash, NodeError> {
        let h = sha256(&tx);
        if self.add_tx(tx.clone())? {
            self.net.broadcast(&Message::Tx(tx));
        }
        Ok(h)
    }

    fn add_tx(&mut self, tx: Vec<u8>) -> Result<bool, NodeError> {
        if self.mempool.contains(&sha256(&tx)) {
            return Ok(false);
        }
        self.app.check_tx(&tx).map_err(NodeError::TxRejected)?;
        Ok(self.mempool.add(tx)?)
    }

    fn event(&mut self, e: NodeEvent) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// Runs one input and every input its outputs lead to, carrying outputs out in order.
    fn run(&mut self, input: Input) -> Result<(), NodeError> {
        let mut inputs = VecDeque::from([input]);
        let mut first = true;
        while let Some(input) = inputs.pop_front() {
            let now = self.clock.now();
            let outputs = match self.engine.handle(now, input) {
                Ok(o) => o,
                Err(e) if first => return Err(e.into()),
                Err(_) => continue,
            };
            first = false;
            for o in outputs {
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
                self.storage.append_wal(&entry)?;
                None
            }
            Output::Broadcast(msg) => {
                self.net.broadcast(&msg);
                None
            }
            Output::Send { to, msg } => {
                self.net.send(to, &msg);
                None
            }
            Output::ScheduleTimeout { timeout, at } => {
                self.clock.schedule(at, timeout);
                None
            }
            Output::BuildBlock { height, round } => {
                let txs = self.app.prepare_txs(&self.mempool, MAX_BLOCK_TXS, MAX_BLOCK_BYTES / 2);
                Some(Input::BlockTxs { height, round, txs })
            }
            Output::ValidateBlock { block } => {
                let valid = self.app.validate_block(&block);
                Some(Input::BlockValidity {
                    height: block.height(),
                    block_id: block.id(),
                    valid,
                })
            }
            Output::Decide { block, commit } => {
                self.storage.save_decided(&block, &commit)?;
                let res = self.app.execute_block(&block, self.engine.validators());
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
                });
                Some(input)
            }
            Output::SendDecided { to, height } => {
                if let Some((block, commit)) = self.storage.decided(height)? {
                    self.net.send(to, &Message::Decided { block, commit });
                }
                None
            }
            Output::Evidence(ev) => {
                self.net.broadcast(&Message::Evidence(ev.clone()));
                self.event(NodeEvent::Evidence(ev));
                None
            }
        })
    }
}
