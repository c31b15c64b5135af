//! Block sync: how a node that is behind fetches decided blocks (each with the commit that
//! decided it) from the peers that are ahead.
//!
//! A window of heights is in flight at once, spread over every peer known to hold them, so
//! catch-up runs at the speed of verification and execution rather than one round trip per
//! block. Blocks that arrive ahead of our height wait in a bounded buffer and are applied in
//! order as each height is decided. A request that is not answered within the retry time is
//! sent to another peer, and that peer is asked less; a peer that serves a block failing
//! verification is dropped from the set for good.
//!
//! This is pure bookkeeping: the [`crate::engine::Engine`] owns one, feeds it what it sees
//! and sends the requests it produces, so the simulator explores catch-up under faults with
//! the same code real nodes run.

use crate::types::{Block, Commit, Height, PeerId, TimeMs};
use std::collections::BTreeMap;

/// Peers tracked at once; the lowest ones are forgotten beyond this.
const MAX_SYNC_PEERS: usize = 64;
/// Unanswered requests in a row after which a peer is only asked when no other peer can serve.
const SLOW_AFTER: u32 = 3;
/// Bytes of blocks buffered ahead of our height (beyond it, no new requests are sent).
pub const MAX_BUFFERED_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Default)]
struct PeerSync {
    /// The height the peer showed us it is at (it has decided every height below it).
    height: Height,
    /// Requests sent to it and not yet answered.
    in_flight: u32,
    /// Requests in a row it left unanswered.
    missed: u32,
    /// It served a block that failed verification: never asked again.
    dropped: bool,
    /// Blocks it served that we used.
    served: u64,
}

#[derive(Debug, Clone)]
struct Request {
    peer: PeerId,
    at: TimeMs,
}

/// A block received ahead of our height, waiting for its turn.
#[derive(Debug, Clone)]
pub struct Buffered {
    pub from: PeerId,
    pub block: Block,
    pub commit: Commit,
    /// Its commit was verified on arrival (against the validator set its header names).
    pub verified: bool,
}

/// What [`BlockSync`] reports about itself (for status and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncProgress {
    /// The highest height a peer showed us (0 when none is ahead).
    pub target: u64,
    /// Requests in flight.
    pub in_flight: usize,
    /// Blocks buffered ahead of our height.
    pub buffered: usize,
    /// Peers that can serve us, and peers dropped for serving bad blocks.
    pub peers: usize,
    pub dropped_peers: usize,
    /// Blocks applied through sync since start.
    pub applied: u64,
}

/// The block-sync state of one node.
#[derive(Debug, Clone)]
pub struct BlockSync {
    window: u64,
    retry_ms: u64,
    peers: BTreeMap<PeerId, PeerSync>,
    requests: BTreeMap<Height, Request>,
    buffered: BTreeMap<Height, Buffered>,
    buffered_bytes: usize,
    applied: u64,
}

impl BlockSync {
    /// `window`: heights requested at once (at least 1); `retry_ms`: how long a request may
    /// stay unanswered before it goes to another peer.
    pub fn new(window: u64, retry_ms: u64) -> Self {
        BlockSync {
            window: window.max(1),
            retry_ms: retry_ms.max(1),
            peers: BTreeMap::new(),
            requests: BTreeMap::new(),
            buffered: BTreeMap::new(),
            buffered_bytes: 0,
            applied: 0,
        }
    }

    /// A verified message showed that `peer` is at height `h`.
    pub fn note_peer(&mut self, peer: PeerId, h: Height) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.height = p.height.max(h);
            return;
        }
        if self.peers.len() >= MAX_SYNC_PEERS {
            // Forget the lowest (the least useful for catch-up); ties by id, deterministic.
            let lowest = self
                .peers
                .iter()
                .filter(|(_, p)| p.in_flight == 0)
                .min_by_key(|(id, p)| (p.height, **id))
                .map(|(id, _)| *id);
            match lowest {
                Some(id) if self.peers[&id].height < h => {
                    self.peers.remove(&id);
                }
                _ => return,
            }
        }
        self.peers.insert(
            peer,
            PeerSync {
                height: h,
                ..PeerSync::default()
            },
        );
    }

    /// The highest height an honest-looking peer showed us.
    pub fn target(&self) -> Height {
        self.peers
            .values()
            .filter(|p| !p.dropped)
            .map(|p| p.height)
            .max()
            .unwrap_or_default()
    }

    /// Requests to send now, for a node at height `cur`: `(peer, height)` pairs. Heights in
    /// `[cur, cur + window)` that a peer can serve, are not buffered, and are not in flight
    /// (or their request expired, in which case another peer is preferred).
    pub fn requests(&mut self, now: TimeMs, cur: Height) -> Vec<(PeerId, Height)> {
        self.forget_below(cur);
        let target = self.target();
        let mut out = Vec::new();
        if target <= cur {
            return out;
        }
        let end = cur.0.saturating_add(self.window).min(target.0);
        for h in cur.0..end {
            let h = Height(h);
            if self.buffered.contains_key(&h) {
                continue;
            }
            if h > cur && self.buffered_bytes >= MAX_BUFFERED_BYTES {
                break;
            }
            let avoid = match self.requests.get(&h) {
                Some(r) if now.0 < r.at.0.saturating_add(self.retry_ms) => continue,
                Some(r) => {
                    let peer = r.peer;
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.in_flight = p.in_flight.saturating_sub(1);
                        p.missed = p.missed.saturating_add(1);
                    }
                    Some(peer)
                }
                None => None,
            };
            let Some(peer) = self.choose(h, avoid) else { continue };
            if let Some(p) = self.peers.get_mut(&peer) {
                p.in_flight += 1;
            }
            self.requests.insert(h, Request { peer, at: now });
            out.push((peer, h));
        }
        out
    }

    /// The peer to ask for `h`: one that holds it and is not dropped, preferring peers that
    /// answer, then the least loaded, then the lowest id (deterministic).
    fn choose(&self, h: Height, avoid: Option<PeerId>) -> Option<PeerId> {
        let candidates = || {
            self.peers
                .iter()
                .filter(move |(_, p)| !p.dropped && p.height > h)
                .map(|(id, p)| (*id, p))
        };
        let pick = |avoid: Option<PeerId>| {
            candidates()
                .filter(|(id, _)| Some(*id) != avoid)
                .min_by_key(|(id, p)| (p.missed >= SLOW_AFTER, p.in_flight, p.missed, *id))
                .map(|(id, _)| id)
        };
        pick(avoid).or_else(|| pick(None))
    }

    /// Whether we asked `peer` for height `h` (and are still waiting for it).
    pub fn requested_from(&self, peer: PeerId, h: Height) -> bool {
        self.requests.get(&h).is_some_and(|r| r.peer == peer)
    }

    /// A block for height `h` arrived from `peer`, the answer to our request: the request
    /// is done and the peer answers again.
    pub fn answered(&mut self, peer: PeerId, h: Height) {
        if self.requests.get(&h).is_some_and(|r| r.peer == peer) {
            self.requests.remove(&h);
            if let Some(p) = self.peers.get_mut(&peer) {
                p.in_flight = p.in_flight.saturating_sub(1);
                p.missed = 0;
                p.height = p.height.max(h.next());
            }
        }
    }

    /// Keeps a block that arrived ahead of our height `cur` (the caller checked what it
    /// could). Returns false when it is not wanted (outside the window, or already held).
    pub fn buffer(&mut self, cur: Height, b: Buffered) -> bool {
        let h = b.block.height();
        if h <= cur || h.0 >= cur.0.saturating_add(self.window) || self.buffered.contains_key(&h) {
            return false;
        }
        self.buffered_bytes += block_bytes(&b.block);
        self.buffered.insert(h, b);
        true
    }

    /// Keeps a block whatever the window (state sync's blocks, already held in memory).
    pub fn hold(&mut self, b: Buffered) {
        let h = b.block.height();
        if let Some(old) = self.buffered.insert(h, b) {
            self.buffered_bytes = self.buffered_bytes.saturating_sub(block_bytes(&old.block));
        }
        self.buffered_bytes += block_bytes(&self.buffered[&h].block);
    }

    /// The buffered block for height `h`, if any, removed from the buffer.
    pub fn take(&mut self, h: Height) -> Option<Buffered> {
        let b = self.buffered.remove(&h)?;
        self.buffered_bytes = self.buffered_bytes.saturating_sub(block_bytes(&b.block));
        Some(b)
    }

    /// A block from `peer` was applied.
    pub fn applied(&mut self, peer: PeerId) {
        self.applied += 1;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.served += 1;
        }
    }

    /// `peer` served a block that failed verification: it is never asked again, and what it
    /// sent us or was asked for goes to other peers.
    pub fn drop_peer(&mut self, peer: PeerId) {
        let p = self.peers.entry(peer).or_default();
        p.dropped = true;
        p.in_flight = 0;
        self.requests.retain(|_, r| r.peer != peer);
        let theirs: Vec<Height> = self
            .buffered
            .iter()
            .filter(|(_, b)| b.from == peer)
            .map(|(h, _)| *h)
            .collect();
        for h in theirs {
            self.take(h);
        }
    }

    /// Whether `peer` was dropped for serving a bad block.
    pub fn is_dropped(&self, peer: PeerId) -> bool {
        self.peers.get(&peer).is_some_and(|p| p.dropped)
    }

    fn forget_below(&mut self, cur: Height) {
        while let Some((&h, _)) = self.buffered.first_key_value() {
            if h >= cur {
                break;
            }
            self.take(h);
        }
        let stale: Vec<Height> = self.requests.range(..cur).map(|(h, _)| *h).collect();
        for h in stale {
            if let Some(r) = self.requests.remove(&h) {
                if let Some(p) = self.peers.get_mut(&r.peer) {
                    p.in_flight = p.in_flight.saturating_sub(1);
                }
            }
        }
    }

    pub fn progress(&self) -> SyncProgress {
        SyncProgress {
            target: self.target().0,
            in_flight: self.requests.len(),
            buffered: self.buffered.len(),
            peers: self.peers.values().filter(|p| !p.dropped).count(),
            dropped_peers: self.peers.values().filter(|p| p.dropped).count(),
            applied: self.applied,
        }
    }
}

fn block_bytes(b: &Block) -> usize {
    b.txs.iter().map(|t| t.len()).sum::<usize>() + 512
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Address;

    fn peer(n: u8) -> PeerId {
        Address([n; 20])
    }

    #[test]
    fn requests_spread_over_peers_and_stay_in_the_window() {
        let mut s = BlockSync::new(8, 100);
        s.note_peer(peer(1), Height(100));
        s.note_peer(peer(2), Height(100));
        let r = s.requests(TimeMs(0), Height(10));
        assert_eq!(r.len(), 8, "one request per height of the window");
        assert_eq!(r.first().map(|x| x.1), Some(Height(10)));
        assert_eq!(r.last().map(|x| x.1), Some(Height(17)));
        let to1 = r.iter().filter(|(p, _)| *p == peer(1)).count();
        assert_eq!(to1, 4, "half to each peer: {r:?}");
        assert!(
            s.requests(TimeMs(50), Height(10)).is_empty(),
            "nothing new before the retry time"
        );
    }

    #[test]
    fn only_peers_that_hold_a_height_are_asked_for_it() {
        let mut s = BlockSync::new(8, 100);
        s.note_peer(peer(1), Height(12)); // has decided 1..=11
        s.note_peer(peer(2), Height(100));
        let r = s.requests(TimeMs(0), Height(10));
        for (p, h) in &r {
            assert!(*p == peer(2) || h.0 < 12, "{p:?} asked for {h:?}");
        }
    }

    #[test]
    fn an_unanswered_request_goes_to_another_peer() {
        let mut s = BlockSync::new(1, 100);
        s.note_peer(peer(1), Height(100));
        s.note_peer(peer(2), Height(100));
        let first = s.requests(TimeMs(0), Height(5));
        assert_eq!(first.len(), 1);
        let again = s.requests(TimeMs(100), Height(5));
        assert_eq!(again.len(), 1);
        assert_ne!(first[0].0, again[0].0, "the retry goes elsewhere");
    }

    #[test]
    fn a_dropped_peer_is_never_asked_and_its_blocks_are_discarded() {
        let mut s = BlockSync::new(4, 100);
        s.note_peer(peer(1), Height(100));
        s.note_peer(peer(2), Height(50));
        s.drop_peer(peer(1));
        assert_eq!(s.target(), Height(50), "a dropped peer's claims no longer count");
        for (p, _) in s.requests(TimeMs(0), Height(1)) {
            assert_eq!(p, peer(2));
        }
        assert!(s.is_dropped(peer(1)));
    }

    #[test]
    fn nothing_is_requested_when_no_peer_is_ahead() {
        let mut s = BlockSync::new(4, 100);
        s.note_peer(peer(1), Height(7));
        assert!(s.requests(TimeMs(0), Height(7)).is_empty());
        assert_eq!(s.progress().target, 7);
    }
}
