//! Running a core [`Node`] on tokio against the QUIC transport.
//!
//! How to drive it: build a [`SystemClock`] with [`SystemClock::new`] (it returns the timer
//! receiver), build the `Node` with that clock and a [`NetHandle`], then spawn [`drive`] with
//! the transport's incoming receiver, the timer receiver and a command receiver. `drive` calls
//! `Node::start` itself and owns the node until [`Command::Shutdown`] (or until every command
//! sender is dropped).

use crate::claims::{Claims, Verdict};
use crate::{Incoming, NetHandle, PeerInfo};
use std::collections::{HashMap, VecDeque};
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

/// Proposals for later heights kept until their height starts.
const MAX_PARKED_PROPOSALS: usize = 16;

/// Counts rejected messages per peer; too many within the window means a penalty. Also keeps
/// the parked future proposals and the far-future [`Claims`].
struct Strikes {
    count: HashMap<PeerId, (u32, Instant)>,
    /// Peers penalized recently, whose already-queued messages are skipped.
    penalized: HashMap<PeerId, Instant>,
    parked: VecDeque<(PeerId, Message)>,
    claims: Claims,
}

impl Strikes {
    fn new(limits: &crate::Limits) -> Self {
        Strikes {
            count: HashMap::new(),
            penalized: HashMap::new(),
            parked: VecDeque::new(),
            claims: Claims::new(limits.far_future_answer, limits.far_future_strikes),
        }
    }

    fn park(&mut self, from: PeerId, msg: Message) {
        if self.parked.len() >= MAX_PARKED_PROPOSALS {
            self.parked.pop_front();
        }
        self.parked.push_back((from, msg));
    }

    /// Parked proposals for `height` (those for earlier heights are dropped).
    fn unpark(&mut self, height: Height) -> Vec<(PeerId, Message)> {
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .filter(|(_, m)| m.height().is_some_and(|h| h >= height))
            .partition(|(_, m)| m.height() == Some(height));
        self.parked = later.into();
        now
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

/// Whether a rejection is the sender's fault (an honest relay of a Byzantine proposer's
/// second proposal, or our own full buffer, is not).
fn counts_against_sender(e: &NodeError) -> bool {
    match e {
        NodeError::Decode(_) => true,
        NodeError::Rejected(e) => !matches!(
            e,
            EngineError::BufferFull | EngineError::ConflictingProposal { .. } | EngineError::NotYetVerifiable { .. }
        ),
        _ => false,
    }
}

/// How loudly to log a message that failed without counting against its sender. Only this
/// node's own failures (its store) are errors; a conflicting proposal is a peer's misbehaviour
/// (a warning); the rest are the ordinary conditions of catching up (a vote of a height whose
/// validator set we do not know yet, a full future buffer, a parked proposal): debug.
fn failure_level(e: &NodeError) -> tracing::Level {
    match e {
        NodeError::Storage(_) | NodeError::CorruptStore(..) => tracing::Level::ERROR,
        NodeError::Rejected(EngineError::ConflictingProposal { .. }) => tracing::Level::WARN,
        _ => tracing::Level::DEBUG,
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
    // The engine checks a proposal's signature against the proposer of *its* current height,
    // so a valid proposal for a later height would be rejected: park it until that height.
    let future_proposal = matches!(&msg, Message::Proposal(p) if p.height > current);
    if future_proposal && msg.height().is_some_and(|h| h.0 <= current.0 + MAX_FUTURE_HEIGHTS) {
        strikes.park(from, msg);
        return;
    }
    // Messages far beyond our height are claims that we are behind; they are never relayed
    // (the engine only takes them as a hint), and their sender must back them (see `claims`).
    let far = matches!(msg, Message::Vote(_) | Message::Proposal(_) | Message::Decided { .. })
        .then(|| msg.height())
        .flatten()
        .filter(|h| h.0 > current.0.saturating_add(MAX_FUTURE_HEIGHTS));
    if far.is_some_and(|h| strikes.claims.holds(from, h, started)) {
        return; // already asked this peer to back such claims; nothing to verify meanwhile
    }
    let answer = match &msg {
        Message::Decided { block, .. } if strikes.claims.pending(&from) == Some(block.height()) => {
            Some((block.height(), block.id()))
        }
        _ => None,
    };
    let relayable = matches!(msg, Message::Vote(_) | Message::Proposal(_) | Message::Evidence(_));
    let copy = (relayable && far.is_none() && node.net.would_relay(from, &msg)).then(|| msg.clone());
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
        }
        Err(e) if counts_against_sender(&e) && !future_proposal => {
            tracing::debug!(peer = %from, "rejected message: {e}");
            if strikes.strike(from) {
                let reason = format!("{STRIKES_BEFORE_PENALTY} rejected messages within {STRIKE_WINDOW:?}; last: {e}");
                node.net.penalize(from, &reason);
            }
        }
        Err(NodeError::TxRejected(_)) => {}
        Err(e) => match failure_level(&e) {
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
    let mut height = node.engine().height();
    loop {
        for e in node.drain_events() {
            on_event(&e);
        }
        // Consensus first: timers, votes, proposals and blocks; then clients; then gossiped txs.
        tokio::select! {
            biased;
            Some(t) = timers.recv() => {
                if let Err(e) = node.on_timeout(t) {
                    tracing::error!(?t, "timeout handling failed: {e}");
                }
            }
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
        let h = node.engine().height();
        if h != height {
            height = h;
            for (from, msg) in strikes.unpark(h) {
                let inc = Incoming {
                    from,
                    msg,
                    tx_hash: None,
                };
                on_incoming(&mut node, inc, &mut strikes);
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
