//! The world: a discrete-event loop over (virtual time, sequence number) driving the core's
//! `Node` — unchanged — with a virtual clock, a simulated network and in-memory storage.
//!
//! How to drive it: `World::new(config)` then `run()`, which returns a [`Report`]. Everything
//! is decided by `config.seed`: one ChaCha stream per component (network, adversary,
//! workload), events ordered by (time, sequence), no hash-map iteration, no wall clock.

use crate::adversary::{Adversary, AdversaryCtx, Builtin, SharedAdversary};
use crate::checker::{Checker, Invariant, Violation};
use crate::config::{Behaviour, FaultKind, Ratio, SimConfig, VerifyMode, MAX_BUGGIFY_CRASHES};
use crate::queue::EventQueue;
use crate::rng::Rng;
use crate::trace::Trace;
use crate::workload::{Workload, WorkloadCtx};
use serde::Serialize;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use tendr_core::chain::ChainState;
use tendr_core::crypto::{CryptoError, SignRefused, SignTarget};
use tendr_core::engine::{Timeout, WalEntry};
use tendr_core::governance::ValidatorApproval;
use tendr_core::statesync::TrustAnchor;
use tendr_core::traits::*;
use tendr_core::*;

/// What a node's call produced, in order.
#[derive(Debug, Default)]
pub struct Outbox {
    pub log: Vec<OutItem>,
    pub timers: Vec<(TimeMs, Timeout)>,
}

#[derive(Debug)]
pub enum OutItem {
    Persist(Arc<WalEntry>),
    Broadcast(Message),
    Send(PeerId, Message),
}

/// A node's clock: `skew_ms` off and `drift_ppm` fast or slow against virtual time.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalTime {
    pub skew_ms: i64,
    pub drift_ppm: i64,
}

impl LocalTime {
    fn local(&self, g: u64) -> u64 {
        let d = g as i128 * self.drift_ppm as i128 / 1_000_000;
        (g as i128 + self.skew_ms as i128 + d).max(0) as u64
    }
    fn global(&self, l: u64) -> u64 {
        (((l as i128 - self.skew_ms as i128) * 1_000_000) / (1_000_000 + self.drift_ppm as i128)).max(0) as u64
    }
}

pub struct SimClock {
    now: Rc<Cell<u64>>,
    local: Rc<Cell<LocalTime>>,
    out: Rc<RefCell<Outbox>>,
}
impl Clock for SimClock {
    fn now(&self) -> TimeMs {
        TimeMs(self.local.get().local(self.now.get()))
    }
    fn schedule(&mut self, at: TimeMs, t: Timeout) {
        self.out.borrow_mut().timers.push((at, t));
    }
}

pub struct SimNet {
    out: Rc<RefCell<Outbox>>,
}
impl Network for SimNet {
    fn broadcast(&mut self, msg: &Message) {
        self.out.borrow_mut().log.push(OutItem::Broadcast(msg.clone()));
    }
    fn send(&mut self, to: PeerId, msg: &Message) {
        self.out.borrow_mut().log.push(OutItem::Send(to, msg.clone()));
    }
}

/// A write a node made and has not synced yet (shared with the live store: entries are
/// immutable once written).
#[derive(Debug)]
enum Write {
    Wal(Arc<WalEntry>),
    Decided(Arc<(Block, Commit)>),
    Snapshot(Arc<Snapshot>),
    Prune(Height),
}

/// The simulator's storage, in memory. `live` is what the running node reads and writes;
/// `durable` is what survives a crash: writes reach it when the node syncs (before it sends).
/// With `lose_unsynced`, a crash rolls `live` back to `durable`; without it every write is
/// durable at once. Synced log entries are reported to the checker (persist before send).
#[derive(Clone)]
pub struct SimStore {
    durable: MemStorage,
    live: MemStorage,
    pending: Rc<RefCell<Vec<Write>>>,
    lose_unsynced: bool,
    /// The disk fails every write (`FaultKind::DiskFail`).
    failed: Rc<Cell<bool>>,
    /// BUGGIFY `crash_before_sync`: its rate and stream, and whether it just fired.
    sync_crash: Option<Rc<RefCell<(Ratio, Rng)>>>,
    crashed_at_sync: Rc<Cell<bool>>,
    out: Rc<RefCell<Outbox>>,
}

impl SimStore {
    fn new(lose_unsynced: bool, out: Rc<RefCell<Outbox>>) -> Self {
        let durable = MemStorage::default();
        SimStore {
            live: if lose_unsynced {
                durable.deep_copy()
            } else {
                durable.clone()
            },
            durable,
            pending: Rc::default(),
            lose_unsynced,
            failed: Rc::default(),
            sync_crash: None,
            crashed_at_sync: Rc::default(),
            out,
        }
    }

    /// BUGGIFY: whether the node crashes now, just before syncing its pending writes.
    fn crash_before_sync(&self) -> bool {
        let Some(c) = &self.sync_crash else { return false };
        if self.crashed_at_sync.get() {
            return true; // crashed already: the rest of this call does not happen either
        }
        if self.pending.borrow().is_empty() {
            return false;
        }
        let (rate, rng) = &mut *c.borrow_mut();
        let crash = rng.chance(rate.0, rate.1);
        self.crashed_at_sync.set(crash);
        crash
    }

    fn check_disk(&self) -> Result<(), StorageError> {
        if self.crashed_at_sync.get() {
            return Err(StorageError(
                "the node crashed (BUGGIFY): nothing more is written".into(),
            ));
        }
        if self.failed.get() {
            return Err(StorageError(
                "disk failure (simulated): the write did not happen".into(),
            ));
        }
        Ok(())
    }

    fn record(&mut self, w: Write) -> Result<(), StorageError> {
        if self.lose_unsynced {
            self.pending.borrow_mut().push(w);
            Ok(())
        } else {
            self.apply(w)
        }
    }

    fn apply(&mut self, w: Write) -> Result<(), StorageError> {
        match w {
            Write::Wal(e) => {
                self.out.borrow_mut().log.push(OutItem::Persist(e.clone()));
                if self.lose_unsynced {
                    self.durable.append_wal_shared(e);
                }
            }
            Write::Decided(d) if self.lose_unsynced => self.durable.save_decided_shared(d),
            Write::Snapshot(s) if self.lose_unsynced => self.durable.save_snapshot_shared(s),
            Write::Prune(h) if self.lose_unsynced => self.durable.prune_decided(h)?,
            _ => {}
        }
        Ok(())
    }

    pub fn fail_disk(&self) {
        self.failed.set(true);
    }

    /// The node crashed: what it had not synced is gone. Returns how many writes were lost.
    pub fn crash(&mut self) -> usize {
        let lost = std::mem::take(&mut *self.pending.borrow_mut()).len();
        if self.lose_unsynced {
            self.live = self.durable.deep_copy();
        }
        lost
    }

    /// Forgets the consensus log, synced or not (the amnesia behaviour).
    pub fn forget_wal(&mut self) {
        self.pending.borrow_mut().retain(|w| !matches!(w, Write::Wal(_)));
        self.live.clear_wal();
        self.durable.clear_wal();
    }

    /// Decided blocks the node keeps (pruned below its snapshots).
    pub fn blocks_kept(&self) -> usize {
        self.live.blocks_kept()
    }
}

impl Storage for SimStore {
    fn append_wal(&mut self, e: WalEntry) -> Result<(), StorageError> {
        self.check_disk()?;
        let e = Arc::new(e);
        self.live.append_wal_shared(e.clone());
        self.record(Write::Wal(e))
    }
    fn wal(&self, h: Height) -> Result<Vec<WalEntry>, StorageError> {
        self.live.wal(h)
    }
    fn save_decided(&mut self, b: &Block, c: &Commit) -> Result<(), StorageError> {
        self.check_disk()?;
        let d = Arc::new((b.clone(), c.clone()));
        self.live.save_decided_shared(d.clone());
        self.record(Write::Decided(d))
    }
    fn decided(&self, h: Height) -> Result<Option<(Block, Commit)>, StorageError> {
        self.live.decided(h)
    }
    fn last_height(&self) -> Result<Height, StorageError> {
        self.live.last_height()
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.check_disk()?;
        if self.crash_before_sync() {
            return Err(StorageError("crashed just before the sync (BUGGIFY)".into()));
        }
        let pending = std::mem::take(&mut *self.pending.borrow_mut());
        for w in pending {
            self.apply(w)?;
        }
        Ok(())
    }
    fn save_snapshot(&mut self, s: &Snapshot) -> Result<(), StorageError> {
        self.check_disk()?;
        let s = Arc::new(s.clone());
        self.live.save_snapshot_shared(s.clone());
        self.record(Write::Snapshot(s))
    }
    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        self.live.snapshot()
    }
    fn prune_decided(&mut self, below: Height) -> Result<(), StorageError> {
        self.check_disk()?;
        self.live.prune_decided(below)?;
        self.record(Write::Prune(below))
    }
}

/// One verification cache for the whole run (`VerifyMode::Cached`).
pub struct SharedVerifier(pub Arc<Mutex<CachingVerifier>>);
impl SignatureVerifier for SharedVerifier {
    fn verify(
        &mut self,
        pk: &PublicKey,
        key: &k256::ecdsa::VerifyingKey,
        msg: &[u8],
        sig: &Signature,
    ) -> Result<(), CryptoError> {
        self.0.lock().expect("single-threaded run").verify(pk, key, msg, sig)
    }
}

/// `VerifyMode::Trusted`: accepts every signature. Simulator only, clearly labelled.
pub struct TrustedVerifier;
impl SignatureVerifier for TrustedVerifier {
    fn verify(
        &mut self,
        _: &PublicKey,
        _: &k256::ecdsa::VerifyingKey,
        _: &[u8],
        _: &Signature,
    ) -> Result<(), CryptoError> {
        Ok(())
    }
}

/// `VerifyMode::Trusted`: signs nothing. Its "signature" is the SHA-256 of the sign bytes
/// followed by the signer's address, so distinct messages still carry distinct signatures and
/// the signer can be read off it, but nothing is proven. It lives in the simulator crate
/// only: a real node is built from a `PrivateKey` and cannot get one.
pub struct NullSigner {
    public: PublicKey,
    address: Address,
}

impl NullSigner {
    pub fn new(key: &PrivateKey) -> Self {
        NullSigner {
            public: key.public_key(),
            address: key.address(),
        }
    }
}

impl Signer for NullSigner {
    fn public_key(&self) -> PublicKey {
        self.public
    }
    fn address(&self) -> Address {
        self.address
    }
    fn sign(&self, _at: SignTarget, msg: &[u8]) -> Result<Signature, SignRefused> {
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&tendr_core::crypto::sha256(msg).0);
        sig[32..52].copy_from_slice(&self.address.0);
        Ok(Signature(sig))
    }
}

/// A simulated node running application `A`.
pub type SimNode<A> = Node<SimClock, SimNet, SimStore, A>;

pub(crate) struct Slot<A> {
    pub key: usize,
    pub node: Option<SimNode<A>>,
    pub store: SimStore,
    pub out: Rc<RefCell<Outbox>>,
    pub local: Rc<Cell<LocalTime>>,
    pub incarnation: u32,
    pub byz: Option<Behaviour>,
    pub slow_ms: u64,
    /// For twins: the half of the network this copy hears (0 or 1).
    pub side: Option<u8>,
    pub last_height: u64,
    pub last_decided_at: u64,
    pub first_after_faults: Option<u64>,
    pub amnesia_at: (u64, u32),
    /// The highest (height, round) the node sent a vote of (for `round-justified`).
    pub voted_round: (u64, u32),
    /// Votes it accepted at its height (for `evidence-reported`).
    pub evidence_watch: EvidenceWatch,
}

/// What an honest node accepted at its current height, in its current incarnation: the first
/// value of each (round, type, validator), and the equivocations it reported.
#[derive(Default)]
pub(crate) struct EvidenceWatch {
    at: (u64, u32),
    first: BTreeMap<(u32, VoteType, Address), Option<BlockId>>,
    reported: BTreeSet<(u32, VoteType, Address)>,
}

impl EvidenceWatch {
    /// Moves the watch to `height` of incarnation `inc` (forgetting the last one) unless it is
    /// there already; `false` for an older height of the same incarnation.
    fn move_to(&mut self, height: u64, inc: u32) -> bool {
        if self.at == (height, inc) {
            return true;
        }
        if inc == self.at.1 && height < self.at.0 {
            return false;
        }
        *self = EvidenceWatch {
            at: (height, inc),
            ..Default::default()
        };
        true
    }
}

#[derive(Debug, Clone)]
pub enum Payload {
    /// Shared by every destination of one send.
    Msg(Rc<Message>),
    Bytes(Rc<Vec<u8>>),
}

impl Payload {
    pub fn msg(m: Message) -> Payload {
        Payload::Msg(Rc::new(m))
    }
}

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        from: usize,
        sent: u64,
        payload: Payload,
    },
    Timer {
        slot: usize,
        inc: u32,
        t: Timeout,
    },
    Fault(usize),
    /// A node crashed by BUGGIFY comes back (if nothing else restarted it meanwhile).
    Restart {
        slot: usize,
        inc: u32,
    },
    /// A swizzle's node is clogged or unclogged.
    Clog {
        node: usize,
        on: bool,
    },
    Tx,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub sent: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub rejected: u64,
    pub events: u64,
    /// Writes lost because their node crashed before syncing them.
    pub lost_writes: u64,
    /// Nodes stopped by a crash or by a failed disk.
    pub halts: u64,
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub validators: u32,
    pub byzantine: Vec<(u32, String)>,
    pub within_assumption: bool,
    /// Whether liveness was asserted: more than 2/3 of the power honest and running after
    /// the last fault (otherwise Tendermint promises safety only).
    pub liveness_checked: bool,
    /// Lowest height decided by every honest running node.
    pub heights: u64,
    pub max_height: u64,
    pub mean_rounds: f64,
    pub virtual_ms: u64,
    pub stats: Stats,
    pub violations: Vec<Violation>,
    pub convicted: Vec<(String, u64)>,
    pub fork_heights: Vec<u64>,
    pub trace_hash: String,
    /// (decision time, height) of the first honest decision of each height (kept with
    /// `SimConfig::timeline`).
    pub decisions: Vec<(u64, u64)>,
    /// (commit time, latency) of each committed workload transaction (kept with
    /// `SimConfig::timeline`).
    pub tx_latencies: Vec<(u64, u64)>,
    /// Addresses of the validator set an honest node ends with (shows validator changes).
    pub final_validators: Vec<String>,
    /// Longest time any honest running validator took, after the last fault, to decide.
    pub recovery_ms: Option<u64>,
    /// Most decided blocks any node's store holds at the end (bounded by snapshots).
    pub blocks_kept: usize,
    /// State syncs done: (virtual time, node, snapshot height).
    pub state_syncs: Vec<(u64, usize, u64)>,
    /// Messages refused with the sender blamed: (receiving node, sending node, count), in
    /// order. Shows who was caught lying to whom.
    pub blamed: Vec<(usize, usize, u64)>,
    /// The BUGGIFY knobs of the run (`off` when none), and how many crashes they caused.
    pub buggify: String,
    pub buggify_crashes: u32,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
    pub fn broken(&self) -> BTreeSet<Invariant> {
        self.violations.iter().map(|v| v.invariant).collect()
    }
}

pub const CHAIN_ID: &str = "tendr-sim";

/// Fisher-Yates, from the given stream.
fn shuffle<T>(items: &mut [T], rng: &mut Rng) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// The half of the network a node is in, for attacks that split it in two.
fn half(key: usize) -> u8 {
    (key % 2) as u8
}

pub fn validator_key(i: usize) -> PrivateKey {
    PrivateKey::from_seed(format!("tendr-sim-validator-{i}").as_bytes())
}

/// Makes a node's fresh application from the chain id.
pub type MakeApp<A> = Rc<dyn Fn(&str) -> A>;

/// Checks an application's own invariant (e.g. "total supply is conserved") on every honest
/// node's application.
pub trait AppInvariant<A> {
    /// Its name, shown in violations.
    fn name(&self) -> String;
    /// Called after honest `node` decided and executed one or more blocks, `height` the
    /// newest: an `Err` says what is wrong and is reported as a violation.
    fn check(&mut self, node: usize, height: u64, app: &A) -> Result<(), String>;
}

/// The user's side of a run: application, load, invariants, own adversaries.
pub struct Plugins<A> {
    pub app: MakeApp<A>,
    pub workload: Box<dyn Workload>,
    pub invariants: Vec<Box<dyn AppInvariant<A>>>,
    /// Adversaries given in code, by validator (their config entry is `Behaviour::Custom`).
    pub adversaries: BTreeMap<u32, Box<dyn Adversary>>,
}

pub struct World<A> {
    pub cfg: SimConfig,
    now: Rc<Cell<u64>>,
    queue: EventQueue<Ev>,
    /// The outbox buffers of the call being carried out, kept for their capacity.
    scratch_log: Vec<OutItem>,
    scratch_timers: Vec<(TimeMs, Timeout)>,
    pub(crate) slots: Vec<Slot<A>>,
    pub(crate) keys: Vec<PrivateKey>,
    genesis: ChainState,
    net_rng: Rng,
    tx_rng: Rng,
    app: MakeApp<A>,
    workload: Box<dyn Workload>,
    invariants: Vec<Box<dyn AppInvariant<A>>>,
    /// Each Byzantine validator's adversary (by key), with its own stream.
    adversaries: BTreeMap<usize, (Box<dyn Adversary>, Rng)>,
    blocked: BTreeSet<(usize, usize)>,
    link_free_at: BTreeMap<(usize, usize), u64>,
    shared_verifier: Arc<Mutex<CachingVerifier>>,
    pub checker: Checker,
    pub trace: Trace,
    stats: Stats,
    /// Workload transactions not yet committed: submit time and the node sent to.
    tx_submitted: BTreeMap<Hash, (u64, usize)>,
    /// Per node: how many of `tx_submitted` were sent to it.
    tx_pending: Vec<u32>,
    tx_latencies: Vec<(u64, u64)>,
    decisions: Vec<(u64, u64)>,
    /// The highest height any honest node decided.
    highest_decided: u64,
    /// State syncs done: (time, node, snapshot height).
    state_syncs: Vec<(u64, usize, u64)>,
    /// Refusals that blamed the sender, per (receiving node, sending node).
    blamed: BTreeMap<(usize, usize), u64>,
    /// The group of each slot while a `slot_partition` holds (`None`: not in any group).
    slot_groups: Option<Vec<Option<usize>>>,
    /// Set by the first `slot_partition`: twins hear whom the partitions say, not a half.
    twins_free: bool,
    /// Nodes a swizzle holds clogged: their links carry nothing until unclogged.
    clogged: BTreeSet<usize>,
    /// Messages held on clogged links, by the node whose unclogging may free them.
    held: BTreeMap<usize, Vec<(usize, usize, Payload)>>,
    buggify_rng: Rng,
    buggify_crashes: u32,
    stop: bool,
}

impl<A: Application + 'static> World<A> {
    /// A run of `cfg` with the user's application, load, invariants and adversaries.
    pub fn new(cfg: SimConfig, plugins: Plugins<A>) -> Result<World<A>, String> {
        cfg.validate()?;
        let Plugins {
            app,
            workload,
            invariants,
            adversaries: mut custom,
        } = plugins;
        for b in &cfg.byzantine {
            if b.behaviour == Behaviour::Custom && !custom.contains_key(&b.node) {
                return Err(format!(
                    "`byzantine`: node {} is `custom`, but no adversary was given for it in code",
                    b.node
                ));
            }
        }
        if let Some(n) = custom.keys().find(|n| cfg.behaviour(**n) != Some(Behaviour::Custom)) {
            return Err(format!(
                "an adversary was given for node {n}, which the config does not list as `custom`"
            ));
        }
        let first_app = app(CHAIN_ID);
        let n_keys = (cfg.validators + cfg.spares) as usize;
        let keys: Vec<PrivateKey> = (0..n_keys).map(validator_key).collect();
        let members: Vec<(PublicKey, VotingPower)> = (0..cfg.validators)
            .map(|i| (keys[i as usize].public_key(), VotingPower(cfg.power(i))))
            .collect();
        let vs = ValidatorSet::new(members).map_err(|e| e.to_string())?;
        let genesis = ChainState::genesis(CHAIN_ID, vs, first_app.initial_app_hash(), TimeMs(0));
        let checker_members: Vec<(PublicKey, u64, bool)> = (0..n_keys)
            .map(|i| {
                (
                    keys[i].public_key(),
                    cfg.power(i as u32),
                    cfg.behaviour(i as u32).is_none(),
                )
            })
            .collect();
        let now = Rc::new(Cell::new(0));
        let seed = cfg.seed;
        let shared = Rc::new(RefCell::new(SharedAdversary::new(Rng::stream(seed, "adversary"))));
        let adversaries = cfg
            .byzantine
            .iter()
            .map(|b| {
                let a: Box<dyn Adversary> = match custom.remove(&b.node) {
                    Some(a) => a,
                    None => Box::new(Builtin {
                        behaviour: b.behaviour,
                        shared: shared.clone(),
                    }),
                };
                (
                    b.node as usize,
                    (a, Rng::stream(seed, &format!("adversary-{}", b.node))),
                )
            })
            .collect();
        let validate = move |b: &Block| first_app.validate_block(b);
        let mut w = World {
            now,
            queue: EventQueue::default(),
            scratch_log: Vec::new(),
            scratch_timers: Vec::new(),
            slots: vec![],
            keys,
            genesis,
            net_rng: Rng::stream(seed, "network"),
            tx_rng: Rng::stream(seed, "workload"),
            app,
            workload,
            invariants,
            adversaries,
            blocked: BTreeSet::new(),
            link_free_at: BTreeMap::new(),
            shared_verifier: Arc::new(Mutex::new(CachingVerifier::new())),
            checker: Checker::new(
                CHAIN_ID,
                &checker_members,
                0,
                Box::new(TrustedVerifier),
                Box::new(|_| true),
            ),
            trace: Trace::new(),
            stats: Stats::default(),
            tx_submitted: BTreeMap::new(),
            tx_pending: vec![],
            tx_latencies: vec![],
            decisions: vec![],
            highest_decided: 0,
            state_syncs: vec![],
            blamed: BTreeMap::new(),
            slot_groups: None,
            twins_free: false,
            clogged: BTreeSet::new(),
            held: BTreeMap::new(),
            buggify_rng: Rng::stream(seed, "buggify"),
            buggify_crashes: 0,
            stop: false,
            cfg,
        };
        for k in 0..n_keys {
            let byz = w.cfg.behaviour(k as u32);
            w.add_slot(k, byz, (byz == Some(Behaviour::Twin)).then_some(0));
            if byz == Some(Behaviour::Twin) {
                w.add_slot(k, byz, Some(1));
            }
        }
        w.checker = Checker::new(
            CHAIN_ID,
            &checker_members,
            w.slots.len(),
            w.verifier(),
            Box::new(validate),
        );
        let fault_times: Vec<u64> = w.cfg.faults.iter().map(|f| f.at_ms).collect();
        for (i, at) in fault_times.into_iter().enumerate() {
            w.push(at, Ev::Fault(i));
        }
        if let Some(t) = w.workload.first_ms() {
            w.push(t, Ev::Tx);
        }
        Ok(w)
    }

    fn add_slot(&mut self, key: usize, byz: Option<Behaviour>, side: Option<u8>) {
        let out = Rc::new(RefCell::new(Outbox::default()));
        let mut store = SimStore::new(self.cfg.storage.lose_unsynced, out.clone());
        let rate = self.cfg.buggify.crash_before_sync;
        if byz.is_none() && rate.0 > 0 {
            let rng = Rng::stream(self.cfg.seed, &format!("buggify-sync-{}", self.slots.len()));
            store.sync_crash = Some(Rc::new(RefCell::new((rate, rng))));
        }
        self.slots.push(Slot {
            key,
            node: None,
            store,
            out,
            local: Rc::new(Cell::new(LocalTime::default())),
            incarnation: 0,
            byz,
            slow_ms: 0,
            side,
            last_height: 0,
            last_decided_at: 0,
            first_after_faults: None,
            amnesia_at: (0, 0),
            voted_round: (0, 0),
            evidence_watch: EvidenceWatch::default(),
        });
    }

    fn verifier(&self) -> Box<dyn SignatureVerifier> {
        match self.cfg.verify {
            VerifyMode::Full => Box::new(CachingVerifier::new()),
            VerifyMode::Cached => Box::new(SharedVerifier(self.shared_verifier.clone())),
            VerifyMode::Trusted => Box::new(TrustedVerifier),
        }
    }

    fn build_node(&self, slot: usize) -> SimNode<A> {
        let s = &self.slots[slot];
        #[allow(unused_mut)]
        let mut ecfg = EngineConfig::new(CHAIN_ID, self.cfg.timeouts.clone());
        #[cfg(feature = "planted-bugs")]
        if s.byz.is_none() {
            ecfg.planted = self
                .cfg
                .planted
                .as_deref()
                .map(|p| p.parse().expect("validated planted bug"));
        }
        let key = &self.keys[s.key];
        let signer: Box<dyn Signer> = match self.cfg.verify {
            VerifyMode::Trusted => Box::new(NullSigner::new(key)),
            VerifyMode::Full | VerifyMode::Cached => Box::new(key.clone()),
        };
        let mut node = Node::with_signer(
            ecfg,
            Some(signer),
            self.genesis.clone(),
            SimClock {
                now: self.now.clone(),
                local: s.local.clone(),
                out: s.out.clone(),
            },
            SimNet { out: s.out.clone() },
            s.store.clone(),
            (self.app)(CHAIN_ID),
            self.verifier(),
        )
        .expect("simulated storage holds a consistent chain");
        node.set_snapshot_policy(SnapshotPolicy {
            every: self.cfg.storage.snapshot_every,
            retain: self.cfg.storage.retain_blocks,
        });
        node
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.queue.push(at, ev);
    }

    pub fn now(&self) -> u64 {
        self.now.get()
    }

    /// Runs to the end and reports.
    pub fn run(mut self) -> Report {
        let nodes: Vec<(usize, Option<String>)> = self.slots.iter().map(|s| (s.key, s.byz.map(|b| b.name()))).collect();
        self.trace.start(&nodes);
        for i in 0..self.slots.len() {
            self.start_slot(i);
        }
        let deadline = self.cfg.faults_end_ms() + self.cfg.liveness_bound_ms;
        let mut past_deadline = false;
        while !self.stop {
            let Some((t, ev)) = self.queue.pop() else {
                break;
            };
            if t > self.cfg.max_time_ms {
                break;
            }
            if !past_deadline && t > deadline {
                // The liveness verdict is known now: a node that has not decided since the
                // faults ended has missed the bound, so running on only costs time.
                past_deadline = true;
                if self.liveness_checked() && self.late_nodes(deadline).next().is_some() {
                    self.now.set(t);
                    break;
                }
            }
            self.now.set(t);
            self.stats.events += 1;
            self.step(ev);
        }
        self.finish()
    }

    fn start_slot(&mut self, i: usize) {
        let mut node = self.build_node(i);
        if self.cfg.storage.state_sync {
            if let Some(anchor) = self.trusted_block(i) {
                // An application that cannot be checked is caught up by block sync instead.
                let _ = node.start_state_sync(anchor);
            }
        }
        self.slots[i].node = Some(node);
        let _ = self.call(i, |n| n.start());
    }

    /// What an operator would copy from a node they trust: the newest block an honest running
    /// node (other than `me`) has decided.
    fn trusted_block(&self, me: usize) -> Option<TrustAnchor> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(j, s)| *j != me && s.byz.is_none())
            .filter_map(|(_, s)| s.node.as_ref())
            .filter_map(|n| {
                let c = n.engine().chain();
                c.last_block.map(|(id, _)| TrustAnchor {
                    height: Height(c.height.0 - 1),
                    block_id: id,
                })
            })
            .max_by_key(|a| a.height)
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                to,
                from,
                sent,
                payload,
            } => {
                self.trace.deliver(self.now(), sent, from, to, &payload);
                if self.slots[to].node.is_none() {
                    return;
                }
                self.stats.delivered += 1;
                let from_peer = self.keys[self.slots[from].key].address();
                if let (Payload::Msg(m), true) = (&payload, self.slots[to].byz.is_some()) {
                    if let Message::Proposal(p) = m.as_ref() {
                        if let Some((a, _)) = self.adversaries.get_mut(&self.slots[to].key) {
                            a.saw_proposal(p);
                        }
                    }
                }
                let r = match payload {
                    Payload::Msg(m) if self.cfg.wire_codec => {
                        // As a real node receives it: a frame of at most the wire's limit,
                        // decoded by the node (the sender's encoder never makes a larger one).
                        let bytes = tendr_core::codec::encode_message(&m);
                        if bytes.len() > tendr_core::limits::MAX_MESSAGE_BYTES {
                            self.stats.rejected += 1;
                            if self.slots[from].byz.is_some() {
                                return; // a real peer's stream would refuse the frame
                            }
                            self.checker.violate(
                                Invariant::HonestNotBlamed,
                                self.now(),
                                format!(
                                    "node {from} sent a {} message of {} bytes, over the wire limit",
                                    m.kind(),
                                    bytes.len()
                                ),
                            );
                            return;
                        }
                        self.call(to, |n| n.on_bytes(from_peer, &bytes))
                    }
                    Payload::Msg(m) => {
                        let watch = self.vote_to_watch(to, &m);
                        let r = self.call(to, |n| n.on_message(from_peer, Rc::unwrap_or_clone(m)));
                        if let (Some(w), Ok(())) = (watch, &r) {
                            self.watch_vote(to, w);
                        }
                        r
                    }
                    Payload::Bytes(b) => self.call(to, |n| n.on_bytes(from_peer, &b)),
                };
                if let Err(e) = r {
                    self.stats.rejected += 1;
                    if e.blames_sender() {
                        let pair = (self.slots[to].key, self.slots[from].key);
                        *self.blamed.entry(pair).or_default() += 1;
                    }
                    let honest = |s: &Slot<A>| s.byz.is_none();
                    if e.blames_sender() && honest(&self.slots[to]) && honest(&self.slots[from]) {
                        self.checker.violate(
                            Invariant::HonestNotBlamed,
                            self.now(),
                            format!("honest node {to} refused honest node {from}'s message, blaming it: {e}"),
                        );
                    }
                }
            }
            Ev::Timer { slot, inc, t } => {
                // A timer that would do nothing (of a height the node has left, or whose rule's
                // guard no longer holds) is dropped: the engine says so itself, and handling it
                // would change nothing. Most timers end this way.
                let matters = self.slots[slot]
                    .node
                    .as_ref()
                    .is_some_and(|n| n.engine().timeout_matters(&t));
                if self.slots[slot].incarnation == inc && matters {
                    let rate = self.cfg.buggify.restart_mid_height;
                    let budget = self.buggify_crashes < MAX_BUGGIFY_CRASHES;
                    if budget && self.slots[slot].byz.is_none() && self.buggify_rng.chance(rate.0, rate.1) {
                        self.trace.halt(self.now(), slot);
                        self.buggify_crash(slot);
                        return;
                    }
                    self.trace.timer(self.now(), slot, &t);
                    let _ = self.call(slot, |n| n.on_timeout(t));
                }
            }
            Ev::Fault(i) => self.fault(i),
            Ev::Restart { slot, inc } => {
                if self.slots[slot].incarnation == inc && self.slots[slot].node.is_none() {
                    self.trace.restart(self.now(), slot);
                    self.start_slot(slot);
                }
            }
            Ev::Clog { node, on } => self.clog(node, on),
            Ev::Tx => self.submit_workload_tx(),
        }
    }

    /// A vote delivered to an honest node at the vote's height (state sync aside): what
    /// `evidence-reported` watches, with the node's incarnation.
    fn vote_to_watch(&self, slot: usize, m: &Message) -> Option<(Vote, u32)> {
        let s = &self.slots[slot];
        let Message::Vote(v) = m else { return None };
        let node = s.node.as_ref().filter(|_| s.byz.is_none())?;
        (node.engine().height() == v.height && !node.is_state_syncing()).then(|| (v.clone(), s.incarnation))
    }

    /// The node accepted `v` at its height: a second value of the same validator, round and
    /// type must have been reported as evidence by now (the engine's vote keeper holds the
    /// first, so it saw the conflict).
    fn watch_vote(&mut self, slot: usize, (v, inc): (Vote, u32)) {
        let now = self.now();
        let s = &mut self.slots[slot];
        if s.incarnation != inc {
            return; // it crashed while handling the vote
        }
        let w = &mut s.evidence_watch;
        if !w.move_to(v.height.0, inc) {
            return;
        }
        let key = (v.round.0, v.vote_type, v.validator);
        match w.first.get(&key) {
            None => {
                w.first.insert(key, v.block_id);
            }
            Some(first) if *first != v.block_id && !w.reported.contains(&key) => {
                self.checker.violate(
                    Invariant::EvidenceReported,
                    now,
                    format!(
                        "node {slot} accepted two {:?} of {} at height {} round {} and reported no evidence",
                        v.vote_type, v.validator, v.height, v.round
                    ),
                );
            }
            Some(_) => {}
        }
    }

    /// Calls a node and carries its outbox out onto the simulated network.
    fn call(&mut self, slot: usize, f: impl FnOnce(&mut SimNode<A>) -> Result<(), NodeError>) -> Result<(), NodeError> {
        let Some(node) = self.slots[slot].node.as_mut() else {
            return Ok(());
        };
        let r = f(node);
        if let Err(e @ NodeError::CorruptStore(..)) = &r {
            panic!("the simulated store cannot be corrupt: {e}");
        }
        self.flush(slot);
        self.observe(slot);
        if self.slots[slot].store.crashed_at_sync.replace(false) {
            self.trace.halt(self.now(), slot);
            self.buggify_crash(slot);
        } else if let Err(NodeError::Storage(_)) = &r {
            // A real node exits when its disk fails; so does this one. It sent nothing that
            // depends on the failed write (the driver skips sends once a sync fails).
            self.trace.halt(self.now(), slot);
            self.halt(slot);
        }
        r
    }

    /// BUGGIFY: `slot` crashes here (its unsynced writes lost) and restarts 50-500 ms later,
    /// at most [`MAX_BUGGIFY_CRASHES`] times a run (later draws leave it running).
    fn buggify_crash(&mut self, slot: usize) {
        self.buggify_crashes += 1;
        if self.buggify_crashes >= MAX_BUGGIFY_CRASHES {
            for s in &self.slots {
                if let Some(c) = &s.store.sync_crash {
                    c.borrow_mut().0 = Ratio::ZERO;
                }
            }
        }
        self.halt(slot);
        let at = self.now() + self.buggify_rng.range(50, 500);
        let inc = self.slots[slot].incarnation;
        self.push(at, Ev::Restart { slot, inc });
    }

    fn flush(&mut self, slot: usize) {
        let (mut log, mut timers) = (
            std::mem::take(&mut self.scratch_log),
            std::mem::take(&mut self.scratch_timers),
        );
        {
            let mut o = self.slots[slot].out.borrow_mut();
            std::mem::swap(&mut o.log, &mut log);
            std::mem::swap(&mut o.timers, &mut timers);
        }
        let inc = self.slots[slot].incarnation;
        let delay = self.slots[slot].slow_ms;
        let local = self.slots[slot].local.get();
        for (at, t) in timers.drain(..) {
            let g = local.global(at.0).max(self.now()) + delay;
            self.push(g, Ev::Timer { slot, inc, t });
        }
        let me = self.keys[self.slots[slot].key].address();
        for item in log.drain(..) {
            match item {
                OutItem::Persist(e) => self.checker.on_persist(slot, &e),
                OutItem::Broadcast(m) => self.emit(slot, me, None, m),
                OutItem::Send(to, m) => self.emit(slot, me, Some(to), m),
            }
        }
        self.scratch_log = log;
        self.scratch_timers = timers;
    }

    fn emit(&mut self, slot: usize, me: Address, to: Option<PeerId>, msg: Message) {
        if self.slots[slot].byz.is_none() {
            // Honest: the message as the engine made it, to every other node (or to `to`).
            self.checker.on_own_send(slot, me, &msg, self.now());
            self.checker.on_wire(&msg, self.now());
            self.check_proposer(slot, me, &msg);
            let payload = Payload::msg(msg);
            let mut dests: Vec<usize> = (0..self.slots.len())
                .filter(|&j| self.is_destination(slot, j, to))
                .collect();
            let rate = self.cfg.buggify.quorum_sends;
            if to.is_none() && self.buggify_rng.chance(rate.0, rate.1) {
                self.just_a_quorum(slot, &mut dests);
            }
            for j in dests {
                self.deliver(slot, j, payload.clone());
            }
            return;
        }
        let dests: Vec<usize> = (0..self.slots.len())
            .filter(|&j| self.is_destination(slot, j, to))
            .collect();
        let key = self.slots[slot].key;
        let halves = self.halves();
        let (adversary, rng) = self
            .adversaries
            .get_mut(&key)
            .expect("every Byzantine validator has an adversary");
        let mut ctx = AdversaryCtx {
            node: key as u32,
            key: &self.keys[key],
            chain_id: CHAIN_ID,
            halves: &halves,
            rng,
        };
        let sends = adversary.transform(&mut ctx, msg, dests);
        for (payload, dests) in sends {
            if let Payload::Msg(m) = &payload {
                self.checker.on_wire(m, self.now());
                if let Message::Proposal(p) = m.as_ref() {
                    self.checker.on_proposal_sent(me, p);
                }
            }
            for j in dests {
                self.deliver(slot, j, payload.clone());
            }
        }
    }

    /// BUGGIFY `quorum_sends`: keeps only as many of `dests` (in a drawn order) as make, with
    /// the sender, more than 2/3 of the power.
    fn just_a_quorum(&mut self, slot: usize, dests: &mut Vec<usize>) {
        shuffle(dests, &mut self.buggify_rng);
        let total = self.cfg.total_power();
        let mut power = self.cfg.power(self.slots[slot].key as u32);
        let mut keep = 0;
        while keep < dests.len() && 3 * power <= 2 * total {
            power += self.cfg.power(self.slots[dests[keep]].key as u32);
            keep += 1;
        }
        dests.truncate(keep);
        dests.sort_unstable();
    }

    /// Records an honest node's own proposal, and checks that a value it prevotes at its
    /// height came from the proposer of that round, and that it entered the round of its
    /// first vote there by L55 or L65.
    fn check_proposer(&mut self, slot: usize, me: Address, msg: &Message) {
        match msg {
            Message::Proposal(p) => self.checker.on_proposal_sent(me, p),
            Message::Vote(v) if v.validator == me => {
                let Some(node) = self.slots[slot].node.as_ref() else {
                    return;
                };
                let engine = node.engine();
                if engine.height() != v.height {
                    return;
                }
                if v.vote_type == VoteType::Prevote {
                    let proposer = engine.chain().proposer(v.round);
                    self.checker.on_honest_prevote(slot, v, proposer, self.now());
                }
                let hr = (v.height.0, v.round.0);
                if hr > self.slots[slot].voted_round {
                    let vs = engine.validators().clone();
                    self.slots[slot].voted_round = hr;
                    self.checker.on_round_entered(slot, me, hr.0, hr.1, &vs, self.now());
                }
            }
            _ => {}
        }
    }

    /// Whether slot `j` receives what slot `from` sends to `to` (everyone else, when `None`):
    /// never itself nor another copy of its key (a twin).
    fn is_destination(&self, from: usize, j: usize, to: Option<PeerId>) -> bool {
        let key = self.slots[j].key;
        j != from && key != self.slots[from].key && to.is_none_or(|p| self.keys[key].address() == p)
    }

    /// Which half of the network each slot is in (for split-vote style attacks and twins):
    /// even and odd node numbers, so that honest nodes fall on both sides.
    fn halves(&self) -> Vec<u8> {
        self.slots.iter().map(|s| s.side.unwrap_or(half(s.key))).collect()
    }

    fn link_ok(&self, from: usize, to: usize) -> bool {
        let (a, b) = (&self.slots[from], &self.slots[to]);
        if self.blocked.contains(&(a.key, b.key)) {
            return false;
        }
        if let Some(g) = &self.slot_groups {
            return g[from].is_some() && g[from] == g[to];
        }
        if self.twins_free {
            return true;
        }
        // A twin copy only talks with its half of the network.
        match (a.side, b.side) {
            (Some(sa), None) => half(b.key) == sa,
            (None, Some(sb)) => half(a.key) == sb,
            _ => true,
        }
    }

    fn deliver(&mut self, from: usize, to: usize, payload: Payload) {
        let (fk, tk) = (self.slots[from].key, self.slots[to].key);
        if let Some(k) = [fk, tk].into_iter().find(|k| self.clogged.contains(k)) {
            self.held.entry(k).or_default().push((from, to, payload));
            return;
        }
        self.stats.sent += 1;
        let net = self.cfg.network.clone();
        if !self.link_ok(from, to) || self.net_rng.chance(net.loss.0, net.loss.1) {
            self.stats.dropped += 1;
            return;
        }
        let mut lat = net.latency.sample(&mut self.net_rng).max(1);
        if self.net_rng.chance(net.reorder.0, net.reorder.1) {
            lat += self.net_rng.range(0, 5 * lat);
        }
        let mut at = self.now() + lat + self.slots[to].slow_ms;
        if let Some(per_ms) = std::num::NonZeroU64::new(net.bandwidth_bytes_per_ms) {
            let size = match &payload {
                Payload::Msg(m) => tendr_core::codec::encode_message(m).len() as u64,
                Payload::Bytes(b) => b.len() as u64,
            };
            let now = self.now();
            let free = self.link_free_at.entry((from, to)).or_insert(0);
            let start = (*free).max(now);
            *free = start + size / per_ms;
            at = at.max(*free + lat);
        }
        let late = self.cfg.buggify.redeliver_late;
        if self.buggify_rng.chance(late.0, late.1) {
            let again = at + self.buggify_rng.range(1000, 5000);
            let sent = self.now();
            let payload = payload.clone();
            self.push(
                again,
                Ev::Deliver {
                    to,
                    from,
                    sent,
                    payload,
                },
            );
        }
        if self.net_rng.chance(net.duplicate.0, net.duplicate.1) {
            let again = at + net.latency.sample(&mut self.net_rng);
            self.push(
                again,
                Ev::Deliver {
                    to,
                    from,
                    sent: self.now(),
                    payload: payload.clone(),
                },
            );
        }
        let sent = self.now();
        self.push(
            at,
            Ev::Deliver {
                to,
                from,
                sent,
                payload,
            },
        );
    }

    /// Reads what the node decided and reports it to the checker.
    fn observe(&mut self, slot: usize) {
        let now = self.now();
        let (honest, inc) = (self.slots[slot].byz.is_none(), self.slots[slot].incarnation);
        let Some(node) = self.slots[slot].node.as_mut() else {
            return;
        };
        if honest {
            self.checker.on_state(slot, u64::from(inc), node.engine().state(), now);
        }
        let events = node.drain_events();
        if events.is_empty() {
            // Nothing decided: only a broken invariant can end the run now.
            if self.slots[slot].byz == Some(Behaviour::Amnesia) {
                self.amnesia(slot);
            }
            if !self.checker.ok() {
                self.stop = true;
            }
            return;
        }
        let engine_height = node.engine().height().0;
        let last_vs = node.engine().chain().last_validators.clone();
        let honest = self.slots[slot].byz.is_none();
        let mut newest = None;
        for e in events {
            match e {
                NodeEvent::Decided {
                    block,
                    commit,
                    app_hash,
                    ..
                } => {
                    let h = block.height().0;
                    // The commit names the block's id (the checker holds it to that).
                    self.trace.decided(now, slot, h, &commit.block_id);
                    if !honest {
                        continue;
                    }
                    if h > self.highest_decided {
                        self.highest_decided = h;
                        if self.cfg.timeline {
                            self.decisions.push((now, h));
                        }
                        for tx in &block.txs {
                            if let Some((t0, to)) = self.tx_submitted.remove(&tendr_core::crypto::sha256(tx)) {
                                self.tx_pending[to] -= 1;
                                if self.cfg.timeline {
                                    self.tx_latencies.push((now, now - t0));
                                }
                            }
                        }
                    }
                    let vs = (engine_height == h + 1).then_some(last_vs.as_ref()).flatten();
                    self.checker.on_decided(slot, block, &commit, vs, now);
                    self.checker.on_app_hash(slot, h, app_hash, now);
                    newest = Some(h);
                    let s = &mut self.slots[slot];
                    s.last_height = s.last_height.max(h);
                    s.last_decided_at = now;
                    if now >= self.cfg.faults_end_ms() && s.first_after_faults.is_none() {
                        s.first_after_faults = Some(now);
                    }
                }
                NodeEvent::Evidence(ev) => {
                    let Evidence::DuplicateVote { a, .. } = &ev;
                    let s = &mut self.slots[slot];
                    if s.evidence_watch.move_to(a.height.0, s.incarnation) {
                        s.evidence_watch.reported.insert((a.round.0, a.vote_type, a.validator));
                    }
                    self.checker.on_evidence(&ev);
                }
                NodeEvent::StateSynced { height, .. } => self.state_syncs.push((now, slot, height.0)),
                NodeEvent::Rejected { .. } | NodeEvent::PeerPruned { .. } => {}
            }
        }
        if let (Some(h), Some(node)) = (newest, self.slots[slot].node.as_ref()) {
            for inv in &mut self.invariants {
                if let Err(e) = inv.check(slot, h, &node.app) {
                    self.checker.violate(
                        Invariant::Application,
                        now,
                        format!("{}: node {slot} after height {h}: {e}", inv.name()),
                    );
                }
            }
        }
        if self.slots[slot].byz == Some(Behaviour::Amnesia) {
            self.amnesia(slot);
        }
        self.check_done();
    }

    /// An amnesiac forgets its lock and votes whenever its round moves within a height.
    fn amnesia(&mut self, slot: usize) {
        let Some(node) = self.slots[slot].node.as_ref() else {
            return;
        };
        let hr = (node.engine().height().0, node.engine().round().0);
        let prev = self.slots[slot].amnesia_at;
        self.slots[slot].amnesia_at = hr;
        if hr.0 == prev.0 && hr.1 > prev.1 {
            self.slots[slot].store.forget_wal();
            self.slots[slot].incarnation += 1;
            self.start_slot(slot);
        }
    }

    fn honest_running(&self) -> impl Iterator<Item = &Slot<A>> {
        self.slots
            .iter()
            .filter(|s| s.byz.is_none() && s.node.is_some() && (s.key as u32) < self.cfg.validators)
    }

    fn check_done(&mut self) {
        if !self.checker.ok() {
            self.stop = true; // fail fast: the first broken invariant ends the run
            return;
        }
        let min = self.honest_running().map(|s| s.last_height).min().unwrap_or(0);
        // Crashed honest nodes count too: after a restart they decide again from where they were.
        let low = self
            .slots
            .iter()
            .filter(|s| s.byz.is_none() && (s.key as u32) < self.cfg.validators)
            .map(|s| s.last_height)
            .min()
            .unwrap_or(0);
        self.checker.prune(low);
        let faults_end = self.cfg.faults_end_ms();
        let live = self.honest_running().all(|s| s.first_after_faults.is_some());
        if min >= self.cfg.heights && self.now() >= faults_end && live {
            self.stop = true;
        }
    }

    fn fault(&mut self, i: usize) {
        let f = self.cfg.faults[i].clone();
        self.trace.fault(self.now(), &f);
        let slots_of = |w: &World<A>, node: u32| -> Vec<usize> {
            (0..w.slots.len())
                .filter(|&s| w.slots[s].key == node as usize)
                .collect()
        };
        let all: Vec<usize> = (0..(self.cfg.validators + self.cfg.spares) as usize).collect();
        match f.kind {
            FaultKind::Partition { groups } => {
                let group_of = |k: usize| groups.iter().position(|g| g.contains(&(k as u32)));
                for &a in &all {
                    for &b in &all {
                        if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                            self.blocked.insert((a, b));
                        }
                    }
                }
            }
            FaultKind::OneWay { from, to } => {
                for a in &from {
                    for b in &to {
                        if a != b {
                            self.blocked.insert((*a as usize, *b as usize));
                        }
                    }
                }
            }
            FaultKind::Isolate { node } => {
                for &b in &all {
                    if b != node as usize {
                        self.blocked.insert((node as usize, b));
                        self.blocked.insert((b, node as usize));
                    }
                }
            }
            FaultKind::Heal => {
                self.blocked.clear();
                self.slot_groups = None;
            }
            FaultKind::SlotPartition { groups } => {
                let group_of = |s: usize| groups.iter().position(|g| g.contains(&(s as u32)));
                self.slot_groups = Some((0..self.slots.len()).map(group_of).collect());
                self.twins_free = true;
            }
            FaultKind::Crash { node } => {
                for s in slots_of(self, node) {
                    self.halt(s);
                }
            }
            FaultKind::Restart { node } => {
                for s in slots_of(self, node) {
                    self.slots[s].store.failed.set(false); // a failed disk is replaced
                    if self.slots[s].node.is_none() {
                        self.start_slot(s);
                    }
                }
            }
            FaultKind::DiskFail { node } => {
                for s in slots_of(self, node) {
                    self.slots[s].store.fail_disk();
                }
            }
            FaultKind::Clock {
                node,
                skew_ms,
                drift_ppm,
            } => {
                for s in slots_of(self, node) {
                    self.slots[s].local.set(LocalTime { skew_ms, drift_ppm });
                }
            }
            FaultKind::Slow { node, delay_ms } => {
                for s in slots_of(self, node) {
                    self.slots[s].slow_ms = delay_ms;
                }
            }
            FaultKind::SetPower { node, power } => self.approve_power(node, power),
            FaultKind::Swizzle { nodes, step_ms } => self.swizzle(i, nodes as usize, step_ms),
        }
    }

    /// Swizzle-clogging: `count` nodes drawn from the seed are clogged one by one, `step_ms`
    /// apart, then unclogged one by one in another drawn order.
    fn swizzle(&mut self, fault: usize, count: usize, step_ms: u64) {
        let mut rng = Rng::stream(self.cfg.seed, &format!("swizzle-{fault}"));
        let all = (self.cfg.validators + self.cfg.spares) as usize;
        let mut order: Vec<usize> = (0..all).collect();
        shuffle(&mut order, &mut rng);
        order.truncate(count.min(all));
        let mut unclog = order.clone();
        shuffle(&mut unclog, &mut rng);
        let now = self.now();
        let k = order.len() as u64;
        for (j, node) in order.into_iter().enumerate() {
            self.push(now + j as u64 * step_ms, Ev::Clog { node, on: true });
        }
        for (j, node) in unclog.into_iter().enumerate() {
            self.push(now + (k + 1 + j as u64) * step_ms, Ev::Clog { node, on: false });
        }
    }

    /// Clogs or unclogs `node`'s links; unclogging sends on what they held whose other end
    /// is not clogged (the rest waits for that end).
    fn clog(&mut self, node: usize, on: bool) {
        self.trace.clog(self.now(), node, on);
        if on {
            self.clogged.insert(node);
            return;
        }
        self.clogged.remove(&node);
        for (from, to, payload) in self.held.remove(&node).unwrap_or_default() {
            self.deliver(from, to, payload);
        }
    }

    /// The node stops (crash, or exit on a failed disk): its unsynced writes are lost.
    fn halt(&mut self, slot: usize) {
        if self.slots[slot].node.take().is_some() {
            self.stats.halts += 1;
        }
        self.slots[slot].incarnation += 1;
        self.stats.lost_writes += self.slots[slot].store.crash() as u64;
    }

    /// Every honest node that is a validator now submits its signed approval; the change takes effect once
    /// approvals from more than 2/3 of the power are committed.
    fn approve_power(&mut self, node: u32, power: u64) {
        let target = self.keys[node as usize].public_key();
        for s in 0..self.slots.len() {
            let key = self.slots[s].key;
            let is_validator = self.slots[s].node.as_ref().is_some_and(|n| n.engine().is_validator());
            if self.slots[s].byz.is_some() || !is_validator {
                continue;
            }
            let tx = ValidatorApproval::new(CHAIN_ID, target, power, &self.keys[key]).to_tx();
            let _ = self.call(s, |n| n.submit_tx(tx).map(|_| ()));
        }
    }

    fn submit_workload_tx(&mut self) {
        let honest: Vec<usize> = (0..self.slots.len())
            .filter(|&s| self.slots[s].byz.is_none() && self.slots[s].node.is_some())
            .collect();
        let mut out = Vec::new();
        self.tx_pending.resize(self.slots.len(), 0);
        let next = self.workload.tick(&mut WorkloadCtx {
            now_ms: self.now(),
            rng: &mut self.tx_rng,
            nodes: &honest,
            pending: &self.tx_pending,
            out: &mut out,
        });
        for (s, tx) in out {
            let hash = tendr_core::crypto::sha256(&tx);
            if self.tx_submitted.insert(hash, (self.now(), s)).is_none() {
                self.tx_pending[s] += 1;
            }
            if self.call(s, |n| n.submit_tx(tx).map(|_| ())).is_err() {
                // Refused (a full mempool): it will never commit, so it waits on nothing.
                if self.tx_submitted.remove(&hash).is_some() {
                    self.tx_pending[s] -= 1;
                }
            }
        }
        if let Some(at) = next {
            self.push(at.max(self.now() + 1), Ev::Tx);
        }
    }

    /// Whether Tendermint promises liveness for this run (see [`SimConfig::liveness_expected`]).
    fn liveness_checked(&self) -> bool {
        self.cfg.within_assumption() && self.cfg.liveness_expected()
    }

    /// Honest running validators that had not decided after the faults ended by `deadline`.
    fn late_nodes(&self, deadline: u64) -> impl Iterator<Item = (usize, &Slot<A>)> {
        let validators = self.cfg.validators;
        self.slots
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.byz.is_none() && s.node.is_some() && (s.key as u32) < validators)
            .filter(move |(_, s)| s.first_after_faults.is_none_or(|t| t > deadline))
    }

    fn finish(mut self) -> Report {
        let now = self.now();
        self.checker.finish_accountability(now);
        let faults_end = self.cfg.faults_end_ms();
        let bound = self.cfg.liveness_bound_ms;
        let liveness_checked = self.liveness_checked();
        if liveness_checked && now >= faults_end + bound {
            let late: Vec<String> = self
                .late_nodes(faults_end + bound)
                .map(|(i, s)| format!("node {i} (last height {})", s.last_height))
                .collect();
            if !late.is_empty() {
                self.checker.violate(
                    Invariant::Liveness,
                    now,
                    format!(
                        "no decision within {bound} ms after the last fault at {faults_end} ms: {}",
                        late.join(", ")
                    ),
                );
            }
        }
        let heights = self.honest_running().map(|s| s.last_height).min().unwrap_or(0);
        let final_validators: Vec<String> = self
            .honest_running()
            .next()
            .and_then(|s| s.node.as_ref())
            .map(|n| {
                n.engine()
                    .validators()
                    .validators()
                    .iter()
                    .map(|v| v.address.to_string())
                    .collect()
            })
            .unwrap_or_default();
        let recovery_ms = if self.cfg.faults.is_empty() {
            None
        } else {
            self.honest_running()
                .map(|s| s.first_after_faults.map(|t| t - faults_end))
                .collect::<Option<Vec<u64>>>()
                .and_then(|v| v.into_iter().max())
        };
        let max_height = self.slots.iter().map(|s| s.last_height).max().unwrap_or(0);
        let mean_rounds = if self.checker.decisions > 0 {
            1.0 + self.checker.rounds_sum as f64 / self.checker.decisions as f64
        } else {
            0.0
        };
        Report {
            seed: self.cfg.seed,
            validators: self.cfg.validators,
            byzantine: self
                .cfg
                .byzantine
                .iter()
                .map(|b| {
                    let name = self.adversaries.get(&(b.node as usize)).map(|(a, _)| a.name());
                    (b.node, name.unwrap_or_else(|| b.behaviour.name()))
                })
                .collect(),
            within_assumption: self.cfg.within_assumption(),
            liveness_checked,
            heights,
            max_height,
            mean_rounds,
            virtual_ms: now,
            stats: self.stats,
            violations: self.checker.violations.clone(),
            convicted: self
                .checker
                .convicted()
                .into_iter()
                .map(|(a, p)| (a.to_string(), p))
                .collect(),
            fork_heights: self.checker.fork_heights.iter().copied().collect(),
            trace_hash: self.trace.hash_hex(),
            decisions: self.decisions,
            tx_latencies: self.tx_latencies,
            recovery_ms,
            final_validators,
            blocks_kept: self.slots.iter().map(|s| s.store.blocks_kept()).max().unwrap_or(0),
            state_syncs: std::mem::take(&mut self.state_syncs),
            blamed: self.blamed.iter().map(|(&(to, from), &n)| (to, from, n)).collect(),
            buggify: self.cfg.buggify.describe(),
            buggify_crashes: self.buggify_crashes,
        }
    }
}

/// Runs one configuration of the built-in key-value application with its load
/// (`cfg.workload`). For another application see [`crate::Simulation`].
pub fn run(cfg: SimConfig) -> Result<Report, String> {
    crate::Simulation::kv(cfg).run()
}

/// Runs one configuration, streaming the trace as JSON lines to `out`.
pub fn run_traced(cfg: SimConfig, out: Box<dyn std::io::Write>) -> Result<Report, String> {
    crate::Simulation::kv(cfg).trace_to(out).run()
}
