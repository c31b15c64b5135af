//! Running a core [`Node`] on tokio against the QUIC transport.
//!
//! How to drive it: build a [`SystemClock`] with [`SystemClock::new`] (it returns the timer
//! receiver), build the `Node` with that clock and a [`NetHandle`], then spawn [`drive`] with
//! the transport's incoming receiver, the timer receiver and a command receiver. `drive` calls
//! `Node::start` itself and owns the node until [`Command::Shutdown`] (or until every command
//! sender is dropped).

use crate::claims::{Claims, Verdict};
use crate::{Incoming, NetHandle, PeerInfo};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tendr_core::engine::{Engine, EngineError, Timeout};
use tendr_core::limits::MAX_FUTURE_HEIGHTS;
use tendr_core::mempool::Mempool;
use tendr_core::traits::{Application, Clock, Network, Node, NodeError, NodeEvent, QueryResult, Storage};
use tendr_core::{Hash, Height, Message, PeerId, TimeMs};
use tokio::sync::{mpsc, oneshot};

/// Timers waiting to fire at once; the engine asks for a handful per round.
const TIMER_QUEUE: usize = 1024;
/// Rejected messages from one peer within [`STRIKE_WINDOW`] before it is penalized.
pub const STRIKES_BEFORE_PENALTY: u32 = 20;
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);
/// Peers whose strikes are tracked at once.
const MAX_STRIKE_ENTRIES: usize = 4096;

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> TimeMs {
    TimeMs(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    )
}

/// Wall-clock time and tokio timers. Each `schedule` arms a timer task that sends the
/// [`Timeout`] into the driver's channel when it is due (stale timeouts are no-ops in the
/// engine, so they are never cancelled).
#[derive(Debug, Clone)]
pub struct SystemClock {
    timers: mpsc::Sender<Timeout>,
}

impl SystemClock {
    /// A clock and the receiver of its timeouts (give it to [`drive`]).
    pub fn new() -> (SystemClock, mpsc::Receiver<Timeout>) {
        let (tx, rx) = mpsc::channel(TIMER_QUEUE);
        (SystemClock { timers: tx }, rx)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> TimeMs {
        unix_ms()
    }

    fn schedule(&mut self, at: TimeMs, timeout: Timeout) {
        let delay = Duration::from_millis(at.0.saturating_sub(unix_ms().0));
        // A timeout that is already due goes straight into the channel: arming a timer for
        // zero would cost a tick of the timer wheel (1 ms) per height at target_block_time 0.
        if delay.is_zero() && self.timers.try_send(timeout).is_ok() {
            return;
        }
        let tx = self.timers.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(timeout).await;
                });
            }
            Err(_) => tracing::error!(?timeout, "timer scheduled outside a tokio runtime; it will not fire"),
        }
    }
}

/// A read-only look at the node inside the driver task, whatever its application (the trait
/// is object-safe: questions arrive as closures over `&dyn NodeView`).
pub trait NodeView {
    fn engine(&self) -> &Engine;
    fn mempool(&self) -> &Mempool;
    /// The application's answer to a read-only query ([`Application::query`]), about the
    /// state after the last executed block.
    fn query(&self, path: &str, data: &[u8]) -> QueryResult;
    /// The application's [`Application::check_tx`] of a transaction, without pooling it.
    fn check_tx(&self, tx: &[u8]) -> Result<(), String>;
    fn peers(&self) -> Vec<PeerInfo>;
    /// Why peers were refused for another chain or genesis, newest last.
    fn genesis_refusals(&self) -> Vec<String>;
    /// State sync's progress, if this node state-syncs.
    fn state_sync(&self) -> Option<tendr_core::statesync::StateSyncPhase>;
}

struct View<'a, S, A>(&'a Node<SystemClock, NetHandle, S, A>);

impl<S: Storage, A: Application> NodeView for View<'_, S, A> {
    fn engine(&self) -> &Engine {
        self.0.engine()
    }
    fn mempool(&self) -> &Mempool {
        self.0.mempool()
    }
    fn query(&self, path: &str, data: &[u8]) -> QueryResult {
        self.0.app.query(path, data)
    }
    fn state_sync(&self) -> Option<tendr_core::statesync::StateSyncPhase> {
        self.0.state_sync_phase()
    }
    fn check_tx(&self, tx: &[u8]) -> Result<(), String> {
        self.0.app.check_tx(tx)
    }
    fn peers(&self) -> Vec<PeerInfo> {
        self.0.net.peers()
    }
    fn genesis_refusals(&self) -> Vec<String> {
        self.0.net.genesis_refusals()
    }
}

/// A question for the node, answered inside the driver task.
pub type QueryFn = Box<dyn FnOnce(&dyn NodeView) + Send>;

/// What the outside world asks of the driver.
pub enum Command {
    /// A client transaction; the reply is its hash or why it was refused.
    SubmitTx(Vec<u8>, oneshot::Sender<Result<Hash, String>>),
    /// Runs the closure on the node (status, mempool size, application queries).
    Query(QueryFn),
    Shutdown,
}

/// Counts rejected messages per peer; too many within the window means a penalty. Also keeps
/// the far-future [`Claims`].
struct Strikes {
    count: HashMap<PeerId, (u32, Instant)>,
    /// Peers penalized recently, whose already-queued messages are skipped.
    penalized: HashMap<PeerId, Instant>,
    claims: Claims,
    /// When this node's own store last failed, and when that was last logged as an error:
    /// while it fails, peers are not blamed for what it cannot do, and the log is not flooded.
    own_failure: Option<Instant>,
    own_failure_logged: Option<Instant>,
}

/// A failing store is logged as an error at most this often (the store logs its own state).
const OWN_FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

impl Strikes {
    fn new(limits: &crate::Limits) -> Self {
        Strikes {
            count: HashMap::new(),
            penalized: HashMap::new(),
            claims: Claims::new(limits.far_future_answer, limits.far_future_strikes),
            own_failure: None,
            own_failure_logged: None,
        }
    }

    /// Notes a failure of this node's own store; true when it is worth an error line now.
    fn own_failure(&mut self) -> bool {
        let now = Instant::now();
        self.own_failure = Some(now);
        let log = self
            .own_failure_logged
            .is_none_or(|t| now.duration_since(t) >= OWN_FAILURE_LOG_EVERY);
        if log {
            self.own_failure_logged = Some(now);
        }
        log
    }

    /// Whether this node's own store failed recently (within [`STRIKE_WINDOW`]).
    fn failing_itself(&self) -> bool {
        self.own_failure.is_some_and(|t| t.elapsed() < STRIKE_WINDOW)
    }

    fn penalized(&mut self, peer: &PeerId) -> bool {
        match self.penalized.get(peer) {
            Some(t) if t.elapsed() < STRIKE_WINDOW => true,
            Some(_) => {
                self.penalized.remove(peer);
                false
            }
            None => false,
        }
    }

    /// Records one strike; true when the peer has now earned a penalty.
    fn strike(&mut self, peer: PeerId) -> bool {
        let now = Instant::now();
        if self.count.len() >= MAX_STRIKE_ENTRIES && !self.count.contains_key(&peer) {
            self.count.retain(|_, (_, t)| now.duration_since(*t) < STRIKE_WINDOW);
            if self.count.len() >= MAX_STRIKE_ENTRIES {
                return false;
            }
        }
        let e = self.count.entry(peer).or_insert((0, now));
        if now.duration_since(e.1) >= STRIKE_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
        if e.0 >= STRIKES_BEFORE_PENALTY {
            self.count.remove(&peer);
            self.mark_penalized(peer, now);
            return true;
        }
        false
    }

    fn mark_penalized(&mut self, peer: PeerId, now: Instant) {
        if self.penalized.len() >= MAX_STRIKE_ENTRIES {
            self.penalized.retain(|_, t| t.elapsed() < STRIKE_WINDOW);
        }
        if self.penalized.len() < MAX_STRIKE_ENTRIES {
            self.penalized.insert(peer, now);
        }
    }
}

/// How loudly to log a message that failed without counting against its sender. Only this
/// node's own failures (its store) are errors; a conflicting proposal is a peer's misbehaviour
/// (a warning); the rest are the ordinary conditions of catching up (a vote of a height whose
/// validator set we do not know yet, a full future buffer, a parked proposal): debug.
fn failure_level(e: &NodeError) -> tracing::Level {
    match e {
        NodeError::Storage(_) | NodeError::CorruptStore(..) | NodeError::App(_) => tracing::Level::ERROR,
        NodeError::Rejected(EngineError::ConflictingProposal { .. }) => tracing::Level::WARN,
        _ => tracing::Level::DEBUG,
    }
}

/// Whether `msg` is relayed once the engine accepts it: votes and proposals of our height or
/// later, and evidence of our height, which the engine verifies before it takes them. Older
/// ones (and evidence of other heights) it accepts unverified, only to serve the sender the
/// decided block; relaying those let a peer's forged votes for an old height travel through
/// every honest node (found by the Byzantine end-to-end test: a flooder's forgeries came
/// back to it through its honest peers).
fn checked_before_use(msg: &Message, current: Height) -> bool {
    match msg {
        Message::Vote(_) | Message::Proposal(_) => msg.height().is_some_and(|h| h >= current),
        Message::Evidence(e) => e.height() == current,
        _ => false,
    }
}

fn on_incoming<S: Storage, A: Application>(
    node: &mut Node<SystemClock, NetHandle, S, A>,
    inc: Incoming,
    strikes: &mut Strikes,
) {
    let Incoming { from, msg, tx_hash } = inc;
    if strikes.penalized(&from) {
        return; // still queued from before the ban; not worth verifying
    }
    let started = Instant::now();
    let kind = msg.kind();
    let current = node.engine().height();
    // Messages far beyond our height are claims that we are behind; they are never relayed
    // (the engine only takes them as a hint), and their sender must back them (see `claims`).
    let far = matches!(msg, Message::Vote(_) | Message::Proposal(_))
        .then(|| msg.height())
        .flatten()
        .filter(|h| h.0 > current.0.saturating_add(MAX_FUTURE_HEIGHTS))
        // While state sync runs, consensus messages are not used and peers are not asked for
        // blocks of our height (they may have pruned them, which is no lie).
        .filter(|_| !node.is_state_syncing());
    if far.is_some_and(|h| strikes.claims.holds(from, h, started)) {
        return; // already asked this peer to back such claims; nothing to verify meanwhile
    }
    let answer = match &msg {
        Message::Decided { block, .. } if strikes.claims.pending(&from) == Some(block.height()) => {
            Some((block.height(), block.id()))
        }
        _ => None,
    };
    // A peer that pruned the height we asked for answers with its newest snapshot: it is ahead
    // (no lie), only of no use for block sync; the node tells the operator to state-sync.
    let pruned = match (&msg, strikes.claims.pending(&from)) {
        (Message::SnapshotOffer { height, .. }, Some(asked)) if *height > asked => Some(asked),
        _ => None,
    };
    let copy =
        (checked_before_use(&msg, current) && far.is_none() && node.net.would_relay(from, &msg)).then(|| msg.clone());
    let is_tx = matches!(msg, Message::Tx(_));
    if is_tx {
        node.net.set_tx_origin(Some(from));
    }
    let result = match (msg, tx_hash) {
        (Message::Tx(tx), Some(h)) => node.on_tx(tx, h),
        (msg, _) => node.on_message(from, msg),
    };
    if is_tx {
        node.net.set_tx_origin(None);
    }
    // A message that failed only because our own store cannot write was still handled: the
    // sender did its part (e.g. answered our challenge), so it is not blamed for our disk.
    let own_failure = matches!(result, Err(NodeError::Storage(_)));
    if own_failure {
        if let Some((h, id)) = answer {
            on_claim_answer(node, strikes, from, h, id);
        }
    }
    match result {
        Ok(()) => {
            if let Some(m) = copy {
                node.net.relay(from, &m);
            }
            if let Some(h) = far {
                on_far_future(node, strikes, from, h, current);
            }
            if let Some((h, id)) = answer {
                on_claim_answer(node, strikes, from, h, id);
            }
            if let Some(asked) = pruned {
                if strikes.claims.decided(from, asked) {
                    node.net.note_far_future(true);
                }
            }
        }
        Err(e) if e.blames_sender() => {
            tracing::debug!(peer = %from, "rejected message: {e}");
            if strikes.strike(from) {
                let reason = format!("{STRIKES_BEFORE_PENALTY} rejected messages within {STRIKE_WINDOW:?}; last: {e}");
                node.net.penalize(from, &reason);
            }
        }
        Err(NodeError::TxRejected(_)) => {}
        Err(e) => match failure_level(&e) {
            tracing::Level::ERROR if own_failure && !strikes.own_failure() => {
                tracing::debug!(peer = %from, "handling a message failed: {e}")
            }
            tracing::Level::ERROR => tracing::error!(peer = %from, "handling a message failed: {e}"),
            tracing::Level::WARN => tracing::warn!(peer = %from, "message refused: {e}"),
            _ => tracing::debug!(peer = %from, "message not used: {e}"),
        },
    }
    let took = started.elapsed();
    if took > SLOW_MESSAGE {
        tracing::debug!(peer = %from, kind, ms = took.as_millis() as u64, "slow message");
    }
}

/// A validly signed message for height `claimed`, far beyond `ours`: challenge its sender,
/// or cut it off when it failed too many challenges.
fn on_far_future<S: Storage, A: Application>(
    node: &mut Node<SystemClock, NetHandle, S, A>,
    strikes: &mut Strikes,
    from: PeerId,
    claimed: Height,
    ours: Height,
) {
    let now = Instant::now();
    match strikes.claims.far_message(from, claimed, ours, now) {
        Verdict::Wait => {}
        Verdict::Challenge(h) => {
            tracing::debug!(peer = %from, claimed = claimed.0, ours = ours.0, "far-future message; asking the peer for our height's decided block");
            node.net.note_far_future(false);
            node.net.send(from, &Message::RequestDecided(h));
        }
        Verdict::Penalize(reason) if strikes.failing_itself() => {
            tracing::debug!(peer = %from, "not penalizing while this node's own store fails: {reason}");
        }
        Verdict::Penalize(reason) => {
            strikes.mark_penalized(from, now);
            node.net.penalize(from, &reason);
        }
    }
}

/// A decided block from a peer we challenged: the challenge is answered when the block is
/// the one our chain decided at that height (the engine has just verified and applied it, or
/// had already decided that height).
fn on_claim_answer<S: Storage, A: Application>(
    node: &mut Node<SystemClock, NetHandle, S, A>,
    strikes: &mut Strikes,
    from: PeerId,
    height: Height,
    id: tendr_core::BlockId,
) {
    let ours = node.storage.decided(height).ok().flatten().map(|(b, _)| b.id());
    if ours == Some(id) && strikes.claims.decided(from, height) {
        node.net.note_far_future(true);
    }
}

/// Handling a message for longer than this is logged (debug).
const SLOW_MESSAGE: Duration = Duration::from_millis(20);

/// Owns the node in one task: selects over commands, timers and incoming messages (in that
/// priority), calls the node, hands every [`NodeEvent`] to `on_event`, and penalizes peers
/// whose messages are rejected repeatedly.
pub async fn drive<S: Storage + Send + 'static, A: Application + Send + 'static>(
    mut node: Node<SystemClock, NetHandle, S, A>,
    mut incoming: mpsc::Receiver<Incoming>,
    mut timers: mpsc::Receiver<Timeout>,
    mut commands: mpsc::Receiver<Command>,
    mut on_event: impl FnMut(&NodeEvent) + Send + 'static,
) {
    if let Err(e) = node.start() {
        tracing::error!("starting the node failed: {e}");
    }
    let mut strikes = Strikes::new(node.net.limits());
    let (mut txs, mut bulk) = match node.net.take_side_inboxes() {
        Some(s) => (s.txs, s.bulk),
        None => (mpsc::channel(1).1, mpsc::channel(1).1),
    };
    // A decided block the store refused (a full disk) is retried this often.
    let mut stalled = tokio::time::interval(Duration::from_secs(1));
    stalled.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        for e in node.drain_events() {
            on_event(&e);
        }
        // Consensus first: timers, votes, proposals and blocks; then clients; then gossiped txs.
        tokio::select! {
            biased;
            _ = stalled.tick(), if node.is_stalled() => {
                if let Err(e) = node.retry_stalled() {
                    tracing::debug!("a decided block still cannot be stored: {e}");
                }
            }
            Some(t) = timers.recv() => match node.on_timeout(t) {
                Err(e @ NodeError::Storage(_)) if !strikes.own_failure() => {
                    tracing::debug!(?t, "timeout handling failed: {e}")
                }
                Err(e) => tracing::error!(?t, "timeout handling failed: {e}"),
                Ok(()) => {}
            },
            Some(inc) = incoming.recv() => on_incoming(&mut node, inc, &mut strikes),
            Some(inc) = bulk.recv() => on_incoming(&mut node, inc, &mut strikes),
            c = commands.recv() => match c {
                None | Some(Command::Shutdown) => break,
                Some(Command::SubmitTx(tx, reply)) => {
                    let _ = reply.send(node.submit_tx(tx).map_err(|e| e.to_string()));
                }
                Some(Command::Query(f)) => f(&View(&node)),
            },
            Some(inc) = txs.recv() => {
                node.net.tx_taken(&inc);
                on_incoming(&mut node, inc, &mut strikes)
            }
        }
    }
    for e in node.drain_events() {
        on_event(&e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tendr_core::types::{Address, Round};

    /// Issue 16: while this node's own store fails, its peers are not penalized for claims it
    /// could not check (a full disk once made a node ban every honest peer), and the failure
    /// is logged as an error at most every [`OWN_FAILURE_LOG_EVERY`].
    #[test]
    fn own_store_failures_blame_no_peer_and_do_not_flood_the_log() {
        let mut s = Strikes::new(&crate::Limits::default());
        assert!(!s.failing_itself());
        assert!(s.own_failure(), "the first failure is logged");
        assert!(s.failing_itself());
        assert!(!s.own_failure(), "the next ones within the window are not");
        assert!(!NodeError::Storage(tendr_core::traits::StorageError("disk full".into())).blames_sender());
    }

    /// Issue 16: only what the engine verified is relayed (forged votes of old heights were).
    #[test]
    fn only_messages_the_engine_verifies_are_relayed() {
        let k = tendr_core::PrivateKey::from_seed(b"r");
        let vote = |h: u64| {
            Message::Vote(tendr_core::Vote {
                vote_type: tendr_core::VoteType::Prevote,
                height: Height(h),
                round: Round(0),
                block_id: None,
                validator: k.address(),
                signature: tendr_core::Signature([7; 64]),
            })
        };
        let evidence = |h: u64| {
            let Message::Vote(a) = vote(h) else { unreachable!() };
            Message::Evidence(Box::new(tendr_core::Evidence::DuplicateVote { a: a.clone(), b: a }))
        };
        let cur = Height(10);
        assert!(checked_before_use(&vote(10), cur) && checked_before_use(&vote(11), cur));
        assert!(!checked_before_use(&vote(9), cur) && !checked_before_use(&vote(1), cur));
        assert!(checked_before_use(&evidence(10), cur));
        assert!(!checked_before_use(&evidence(9), cur) && !checked_before_use(&evidence(11), cur));
        assert!(!checked_before_use(&Message::Tx(vec![1]), cur));
        assert!(!checked_before_use(&Message::RequestDecided(Height(3)), cur));
    }

    /// Issue 18, item 5: a late-joining observer's "cannot be checked yet" is catch-up, not an
    /// error; only the node's own store failures are.
    #[test]
    fn expected_failures_log_at_debug() {
        let not_yet = NodeError::Rejected(EngineError::NotYetVerifiable {
            height: Height(9),
            validator: Address::default(),
        });
        assert_eq!(failure_level(&not_yet), tracing::Level::DEBUG);
        assert_eq!(
            failure_level(&NodeError::Rejected(EngineError::BufferFull)),
            tracing::Level::DEBUG
        );
        let conflict = EngineError::ConflictingProposal {
            height: Height(9),
            round: Round(0),
        };
        assert_eq!(failure_level(&NodeError::Rejected(conflict)), tracing::Level::WARN);
        let corrupt = NodeError::CorruptStore(Height(3), "bad".into());
        assert_eq!(failure_level(&corrupt), tracing::Level::ERROR);
    }
}
