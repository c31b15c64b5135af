//! State sync: a node that is new, or further behind than its peers keep blocks, starts from a
//! peer's snapshot instead of replaying history.
//!
//! Trust comes from the operator, as in CometBFT: a decided block they trust (its height `T`
//! and id, read from a node they trust). Nothing a peer sends is believed without a chain of
//! hashes to that block:
//!
//! 1. **Discover.** Ask every peer which snapshot it keeps; pick the newest one at a height
//!    `S` with `own height < S <= T` (a snapshot of height `S` covers the blocks below `S`).
//! 2. **Blocks `S - 1 ..= T`.** Block `T` must have the trusted id; each block below must be
//!    the one its successor names as `prev_block_id`. The chain is checked downwards as blocks
//!    arrive, so a forged block is caught (and its sender dropped) before anything uses it.
//!    No signature is needed: the hashes lead back to the trusted block.
//! 3. **Chunks.** The snapshot's encoding, in [`SNAPSHOT_CHUNK_BYTES`] chunks from one peer
//!    that offered it; the whole must hash to what was offered.
//! 4. **Check** ([`verify_snapshot`]): the snapshot's chain state must be the one the trusted
//!    headers describe: the last block is block `S - 1`, the validator sets, the app hash and
//!    the last commit are those named by the headers of blocks `S - 1` and `S`, and the proposer
//!    schedule names block `S`'s proposer. The node then restores the application and asks it
//!    whether its state is the one the app hash commits to
//!    ([`crate::traits::Application::verify_restored`]); only then is anything kept.
//!
//! The blocks `S ..= T` fetched for the check are then decided through the engine as usual,
//! and block sync takes the node from `T` to the tip.
//!
//! Pure bookkeeping, like [`crate::sync`]: the [`crate::traits::Node`] owns one, so the
//! simulator runs the same state sync as real nodes.

use crate::chain::ChainState;
use crate::crypto::sha256;
use crate::types::*;
use std::collections::{BTreeMap, BTreeSet};

/// The most heights between the snapshot and the trust height (their blocks are held in memory
/// until the snapshot is checked).
pub const MAX_TRUST_GAP: u64 = 4_096;
/// The largest snapshot accepted (it is assembled in memory).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;
/// Block requests in flight at once.
const BLOCK_WINDOW: usize = 64;
/// Chunk requests in flight at once.
const CHUNK_WINDOW: usize = 4;

/// The block the operator trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustAnchor {
    pub height: Height,
    pub block_id: BlockId,
}

/// Where state sync stands (for status, logs and metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateSyncPhase {
    /// Asking peers for snapshots; `offers` suitable ones heard so far. `newer_than_trust`:
    /// the lowest snapshot offered above the trusted height, useless here (the trust anchor
    /// proves only snapshots at or below it): the operator needs a newer trusted block.
    Discovering {
        offers: usize,
        newer_than_trust: Option<Height>,
    },
    /// Fetching the snapshot of `height`: blocks checked so far of those needed, chunks held
    /// of all.
    Fetching {
        height: Height,
        blocks: u64,
        blocks_needed: u64,
        chunks: u32,
        chunks_needed: u32,
    },
    /// Restored at `height`; block sync goes on from there. `dropped_peers` sent something
    /// false on the way.
    Done { height: Height, dropped_peers: usize },
}

#[derive(Debug, Clone)]
struct Offer {
    height: Height,
    hash: Hash,
    size: u64,
}

#[derive(Debug, Clone)]
struct Fetch {
    height: Height,
    hash: Hash,
    chunks_needed: u32,
    /// Peers that offered this snapshot (chunks come from the first one not dropped).
    peers: Vec<PeerId>,
    /// Blocks `height - 1 ..= T`, each with its sender; `checked` are proven by hashes.
    blocks: BTreeMap<Height, (PeerId, Block, Commit)>,
    /// Lowest height whose block is proven (`T + 1` before block `T` is).
    checked_from: Height,
    block_requests: BTreeMap<Height, (PeerId, TimeMs)>,
    chunks: BTreeMap<u32, Vec<u8>>,
    chunk_requests: BTreeMap<u32, (PeerId, TimeMs)>,
}

/// What [`StateSync::on_decided`] and friends conclude about a peer's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Used (or harmlessly not needed).
    Ok,
    /// The peer sent something false: it is dropped, and the caller blames it.
    Forged(String),
}

/// A snapshot assembled and its blocks proven: what the node checks and restores.
#[derive(Debug, Clone)]
pub struct Assembled {
    pub height: Height,
    pub bytes: Vec<u8>,
    /// Blocks `height - 1 ..= T` with their commits and senders, lowest first.
    pub blocks: Vec<(PeerId, Block, Commit)>,
    /// The peers that offered this snapshot (to drop if its content is false).
    pub offered_by: Vec<PeerId>,
}

#[derive(Debug, Clone)]
pub struct StateSync {
    anchor: TrustAnchor,
    own: Height,
    retry_ms: u64,
    last_ask: Option<TimeMs>,
    first_offer: Option<TimeMs>,
    offers: BTreeMap<PeerId, Offer>,
    /// The lowest snapshot height offered above the trusted height.
    newer_than_trust: Option<Height>,
    dropped: BTreeSet<PeerId>,
    fetch: Option<Fetch>,
    done: Option<Height>,
}

impl StateSync {
    /// State sync of a node at height `own` towards the trusted block `anchor`.
    pub fn new(anchor: TrustAnchor, own: Height, retry_ms: u64) -> Self {
        StateSync {
            anchor,
            own,
            retry_ms: retry_ms.max(1),
            last_ask: None,
            first_offer: None,
            offers: BTreeMap::new(),
            newer_than_trust: None,
            dropped: BTreeSet::new(),
            fetch: None,
            done: None,
        }
    }

    pub fn anchor(&self) -> TrustAnchor {
        self.anchor
    }

    pub fn is_done(&self) -> bool {
        self.done.is_some()
    }

    pub fn dropped_peers(&self) -> usize {
        self.dropped.len()
    }

    pub fn phase(&self) -> StateSyncPhase {
        if let Some(height) = self.done {
            return StateSyncPhase::Done {
                height,
                dropped_peers: self.dropped.len(),
            };
        }
        match &self.fetch {
            None => StateSyncPhase::Discovering {
                offers: self.offers.len(),
                newer_than_trust: self.newer_than_trust,
            },
            Some(f) => StateSyncPhase::Fetching {
                height: f.height,
                blocks: self.anchor.height.0 + 1 - f.checked_from.0,
                blocks_needed: self.anchor.height.0 + 2 - f.height.0,
                chunks: f.chunks.len() as u32,
                chunks_needed: f.chunks_needed,
            },
        }
    }

    /// Messages due now: `(None, m)` to broadcast, `(Some(peer), m)` to send.
    pub fn tick(&mut self, now: TimeMs) -> Vec<(Option<PeerId>, Message)> {
        let mut out = Vec::new();
        if self.done.is_some() {
            return out;
        }
        if self.fetch.is_none() {
            let waited = self.first_offer.is_some_and(|t| now.0 >= t.0 + self.retry_ms);
            if waited && self.choose() {
                return self.tick(now);
            }
            if self.last_ask.is_none_or(|t| now.0 >= t.0 + self.retry_ms) {
                self.last_ask = Some(now);
                out.push((None, Message::RequestSnapshot));
            }
            return out;
        }
        let retry = self.retry_ms;
        let dropped = self.dropped.clone();
        let anchor = self.anchor;
        let f = self.fetch.as_mut().expect("checked above");
        let live: Vec<PeerId> = f.peers.iter().filter(|p| !dropped.contains(p)).copied().collect();
        if live.is_empty() {
            self.restart();
            return self.tick(now);
        }
        // Blocks: every height not held, highest first (the chain is proven downwards).
        let expired = |at: TimeMs| now.0 >= at.0 + retry;
        f.block_requests.retain(|_, (_, at)| !expired(*at));
        let mut turn = 0usize;
        for h in (f.height.0 - 1..=anchor.height.0).rev() {
            if f.block_requests.len() >= BLOCK_WINDOW {
                break;
            }
            let h = Height(h);
            if f.blocks.contains_key(&h) || f.block_requests.contains_key(&h) {
                continue;
            }
            let peer = live[(h.0 as usize + 2 * turn) % live.len()]; // spread over the peers
            turn += 1;
            f.block_requests.insert(h, (peer, now));
            out.push((Some(peer), Message::RequestDecided(h)));
        }
        // Chunks: from the first live peer that offered the snapshot.
        f.chunk_requests.retain(|_, (_, at)| !expired(*at));
        let from = live[0];
        for i in 0..f.chunks_needed {
            if f.chunk_requests.len() >= CHUNK_WINDOW {
                break;
            }
            if f.chunks.contains_key(&i) || f.chunk_requests.contains_key(&i) {
                continue;
            }
            f.chunk_requests.insert(i, (from, now));
            out.push((
                Some(from),
                Message::RequestChunk {
                    height: f.height,
                    index: i,
                },
            ));
        }
        out
    }

    /// Picks the newest suitable snapshot offered; false when there is none.
    fn choose(&mut self) -> bool {
        let best = self
            .offers
            .iter()
            .filter(|(p, _)| !self.dropped.contains(p))
            .max_by_key(|(p, o)| (o.height, std::cmp::Reverse(**p)))
            .map(|(_, o)| o.clone());
        let Some(best) = best else { return false };
        let peers = self
            .offers
            .iter()
            .filter(|(p, o)| !self.dropped.contains(p) && o.height == best.height && o.hash == best.hash)
            .map(|(p, _)| *p)
            .collect();
        let chunks_needed = best.size.div_ceil(SNAPSHOT_CHUNK_BYTES as u64) as u32;
        self.fetch = Some(Fetch {
            height: best.height,
            hash: best.hash,
            chunks_needed,
            peers,
            blocks: BTreeMap::new(),
            checked_from: self.anchor.height.next(),
            block_requests: BTreeMap::new(),
            chunks: BTreeMap::new(),
            chunk_requests: BTreeMap::new(),
        });
        true
    }

    /// Back to discovery (the chosen snapshot's peers were all dropped, or it was false).
    fn restart(&mut self) {
        self.fetch = None;
        self.first_offer = None;
        self.last_ask = None;
        let dropped = &self.dropped;
        self.offers.retain(|p, _| !dropped.contains(p));
        if !self.offers.is_empty() {
            self.first_offer = Some(TimeMs(0));
        }
    }

    /// Drops `peer` for good (it sent something false).
    pub fn drop_peer(&mut self, peer: PeerId) {
        self.dropped.insert(peer);
        self.offers.remove(&peer);
        if let Some(f) = &mut self.fetch {
            f.block_requests.retain(|_, (p, _)| *p != peer);
            f.chunk_requests.retain(|_, (p, _)| *p != peer);
            if f.peers.first() == Some(&peer) {
                f.chunks.clear(); // they came from the dropped peer
            }
            let unproven: Vec<Height> = f
                .blocks
                .iter()
                .filter(|(h, (p, _, _))| *p == peer && **h < f.checked_from)
                .map(|(h, _)| *h)
                .collect();
            for h in unproven {
                f.blocks.remove(&h);
            }
            f.peers.retain(|p| *p != peer);
        }
    }

    pub fn on_offer(&mut self, now: TimeMs, from: PeerId, height: Height, hash: Hash, size: u64) -> Verdict {
        if self.done.is_some() || self.dropped.contains(&from) {
            return Verdict::Ok;
        }
        if size == 0 || size > MAX_SNAPSHOT_BYTES {
            return Verdict::Ok; // not usable here, not necessarily false
        }
        if height > self.anchor.height && self.newer_than_trust.is_none_or(|h| height < h) {
            self.newer_than_trust = Some(height);
        }
        let usable = height > self.own && height <= self.anchor.height && height.0 >= 2;
        let close = self.anchor.height.0 - height.0.min(self.anchor.height.0) <= MAX_TRUST_GAP;
        if !(usable && close) {
            return Verdict::Ok;
        }
        // A peer offers each snapshot it keeps: its newest usable one counts.
        if self.offers.get(&from).is_none_or(|o| o.height <= height) {
            self.offers.insert(from, Offer { height, hash, size });
        }
        self.first_offer.get_or_insert(now);
        if let Some(f) = &mut self.fetch {
            if f.height == height && f.hash == hash && !f.peers.contains(&from) {
                f.peers.push(from);
            }
        }
        Verdict::Ok
    }

    /// A decided block: kept if it is one of the blocks we fetch, and proven as soon as its
    /// successor is (block `T` by the trusted id).
    pub fn on_decided(&mut self, from: PeerId, block: Block, commit: Commit) -> Verdict {
        let anchor = self.anchor;
        let Some(f) = &mut self.fetch else { return Verdict::Ok };
        let h = block.height();
        if h.0 + 1 < f.height.0 || h > anchor.height || f.blocks.contains_key(&h) {
            return Verdict::Ok;
        }
        if f.block_requests.get(&h).is_none_or(|(p, _)| *p != from) {
            return Verdict::Ok; // not asked of this peer
        }
        f.block_requests.remove(&h);
        if commit.block_id != block.id() || commit.height != h {
            self.drop_peer(from);
            return Verdict::Forged(format!("state sync: the commit of height {h} is not for its block"));
        }
        if let Err(e) = crate::chain::check_body(&block) {
            self.drop_peer(from);
            return Verdict::Forged(format!("state sync: block {h}: {e}"));
        }
        f.blocks.insert(h, (from, block, commit));
        // Prove downwards from the highest unproven height.
        while f.checked_from.0 > f.height.0 - 1 {
            let h = Height(f.checked_from.0 - 1);
            let Some((sender, b, _)) = f.blocks.get(&h) else { break };
            let expected = if h == anchor.height {
                Some(anchor.block_id)
            } else {
                f.blocks.get(&h.next()).and_then(|(_, nb, _)| nb.header.prev_block_id)
            };
            if Some(b.id()) != expected {
                let sender = *sender;
                f.blocks.remove(&h);
                self.drop_peer(sender);
                return Verdict::Forged(format!("state sync: block {h} is not the one the trusted chain names"));
            }
            f.checked_from = h;
        }
        Verdict::Ok
    }

    pub fn on_chunk(&mut self, from: PeerId, height: Height, index: u32, data: Vec<u8>) -> Verdict {
        let Some(f) = &mut self.fetch else { return Verdict::Ok };
        if f.height != height || f.chunk_requests.get(&index).is_none_or(|(p, _)| *p != from) {
            return Verdict::Ok;
        }
        f.chunk_requests.remove(&index);
        let last = index + 1 == f.chunks_needed;
        let size_ok = if last {
            !data.is_empty() && data.len() <= SNAPSHOT_CHUNK_BYTES
        } else {
            data.len() == SNAPSHOT_CHUNK_BYTES
        };
        if !size_ok {
            self.drop_peer(from);
            return Verdict::Forged(format!("state sync: chunk {index} has the wrong size"));
        }
        f.chunks.insert(index, data);
        // Checked as soon as the last chunk is in, so the lie is blamed on the message that
        // completes it: every chunk held came from this one peer (a dropped peer's are cleared).
        if f.chunks.len() as u32 == f.chunks_needed {
            let bytes: Vec<u8> = f.chunks.values().flatten().copied().collect();
            if sha256(&bytes) != f.hash {
                self.drop_peer(from);
                return Verdict::Forged("state sync: the snapshot's chunks do not hash to the offer".into());
            }
        }
        Verdict::Ok
    }

    /// The snapshot (its bytes already checked against the offer) and its proven blocks,
    /// once all are held.
    pub fn take_assembled(&mut self) -> Option<Assembled> {
        let f = self.fetch.as_ref()?;
        let complete = f.chunks.len() as u32 == f.chunks_needed && f.checked_from.0 + 1 == f.height.0;
        if !complete {
            return None;
        }
        let f = self.fetch.take().expect("checked above");
        Some(Assembled {
            height: f.height,
            bytes: f.chunks.into_values().flatten().collect(),
            blocks: f.blocks.into_values().collect(),
            offered_by: f.peers,
        })
    }

    /// The assembled snapshot was false (its content does not match the proven blocks): every
    /// peer that offered it is dropped and discovery starts again.
    pub fn reject(&mut self, offered_by: &[PeerId]) {
        for p in offered_by {
            self.dropped.insert(*p);
        }
        self.restart();
    }

    pub fn finish(&mut self, height: Height) {
        self.done = Some(height);
        self.fetch = None;
        self.offers.clear();
    }
}

/// Checks a decoded snapshot's chain state against the proven blocks `S - 1` and `S` (see the
/// module's step 4); `commit_s` is the commit of block `S`.
///
/// The snapshot's last commit is replaced by the one block `S` carries (proven by its header's
/// `last_commit_hash`: state sync checks every fetched block's body, [`crate::chain::check_body`]). A commit is not unique: each node holds the +2/3 precommits it saw when
/// it decided, and block `S`'s proposer put its own in the block, so an honest snapshot's last
/// commit may be another valid one for block `S - 1`. It must be a commit for that block.
pub fn verify_snapshot(
    chain: &mut ChainState,
    chain_id: &str,
    before: &Block,
    first: &Block,
    commit_s: &Commit,
) -> Result<(), String> {
    let s = first.height();
    if chain.chain_id != chain_id {
        return Err(format!("snapshot of chain `{}`, not `{chain_id}`", chain.chain_id));
    }
    if chain.height != s || before.height().next() != s {
        return Err(format!("snapshot of height {} offered as {s}", chain.height));
    }
    if chain.last_block != Some((before.id(), before.header.time)) {
        return Err("its last block is not the proven block".into());
    }
    let last_vs = chain.last_validators.as_ref().map(|v| v.hash());
    if last_vs != Some(before.header.validators_hash) {
        return Err("its last validator set is not the one the proven block names".into());
    }
    if chain.validators.hash() != first.header.validators_hash {
        return Err("its validator set is not the one the next proven block names".into());
    }
    if chain.app_hash != first.header.app_hash {
        return Err("its app hash is not the one the next proven block names".into());
    }
    let before_id = before.id();
    if chain
        .last_commit
        .as_ref()
        .is_none_or(|c| c.height != before.height() || c.block_id != before_id)
    {
        return Err("its last commit is not a commit for the proven block".into());
    }
    // The block was built by the proposer of its round or, re-proposed as a validValue, of an
    // earlier one.
    let rounds = commit_s.round.0.min(256);
    if !(0..=rounds).any(|r| chain.proposer(Round(r)) == first.header.proposer) {
        return Err("its proposer schedule does not name the next proven block's proposer".into());
    }
    chain.last_commit = first.last_commit.clone();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;
    use crate::validator::ValidatorSet;

    /// A chain of `n` empty blocks with their commits, and the chain state after each.
    fn chain(n: u64) -> (Vec<(Block, Commit)>, Vec<ChainState>) {
        let k = PrivateKey::from_seed(b"s");
        let vs = ValidatorSet::new(vec![(k.public_key(), VotingPower(1))]).unwrap();
        let mut c = ChainState::genesis("c", vs, Hash::default(), TimeMs(1));
        let (mut blocks, mut states) = (vec![], vec![c.clone()]);
        for h in 1..=n {
            let header = c.new_header(k.address(), TimeMs(10 * h), &[]);
            let b: Block = BlockData {
                header,
                txs: vec![],
                last_commit: c.last_commit.clone(),
            }
            .into();
            let commit = Commit {
                height: Height(h),
                round: Round(0),
                block_id: b.id(),
                signatures: vec![],
            };
            c.advance(&b, &commit, Hash([h as u8; 32]), &[]);
            blocks.push((b, commit));
            states.push(c.clone());
        }
        (blocks, states)
    }

    fn peer(n: u8) -> PeerId {
        Address([n; 20])
    }

    /// Runs state sync to a trusted block 12 from a snapshot at 8, with `serve` answering each
    /// request (it may lie); returns the sync and the verdicts.
    fn run(
        snapshot: Vec<u8>,
        mut serve: impl FnMut(Height) -> (Block, Commit),
    ) -> (StateSync, Vec<Verdict>, Option<Assembled>) {
        let (blocks, _) = chain(12);
        let anchor = TrustAnchor {
            height: Height(12),
            block_id: blocks[11].0.id(),
        };
        let mut ss = StateSync::new(anchor, Height(1), 100);
        let p = peer(1);
        let mut verdicts = vec![];
        assert!(matches!(ss.tick(TimeMs(0))[0], (None, Message::RequestSnapshot)));
        ss.on_offer(TimeMs(0), p, Height(8), sha256(&snapshot), snapshot.len() as u64);
        let mut now = 100;
        for _ in 0..20 {
            for (to, m) in ss.tick(TimeMs(now)) {
                if to.is_none() {
                    assert_eq!(m, Message::RequestSnapshot, "only discovery is broadcast");
                    continue;
                }
                assert_eq!(to, Some(p));
                match m {
                    Message::RequestDecided(h) => {
                        let (b, c) = serve(h);
                        verdicts.push(ss.on_decided(p, b, c));
                    }
                    Message::RequestChunk { height, index } => {
                        let data = snapshot.clone();
                        verdicts.push(ss.on_chunk(p, height, index, data));
                    }
                    other => panic!("{other:?}"),
                }
            }
            if let Some(a) = ss.take_assembled() {
                return (ss, verdicts, Some(a));
            }
            now += 100;
        }
        (ss, verdicts, None)
    }

    #[test]
    fn an_honest_peer_gives_a_snapshot_that_checks_against_the_trusted_chain() {
        let (blocks, states) = chain(12);
        let snap = crate::traits::Snapshot {
            chain: states[7].clone(),
            app: vec![1, 2, 3],
        };
        let bytes = snap.encode();
        let (_, verdicts, a) = run(bytes.clone(), |h| blocks[h.0 as usize - 1].clone());
        assert!(verdicts.iter().all(|v| *v == Verdict::Ok), "{verdicts:?}");
        let a = a.expect("assembled");
        assert_eq!(a.height, Height(8));
        assert_eq!(a.blocks.len(), 6, "blocks 7..=12");
        let mut decoded = crate::traits::Snapshot::decode(&a.bytes).unwrap();
        verify_snapshot(&mut decoded.chain, "c", &a.blocks[0].1, &a.blocks[1].1, &a.blocks[1].2).unwrap();
    }

    #[test]
    fn a_forged_block_is_caught_by_the_hash_chain_and_its_peer_dropped() {
        let (blocks, states) = chain(12);
        let (forged_chain, _) = {
            // Another chain: the same heights, different blocks.
            let k = PrivateKey::from_seed(b"other");
            let vs = ValidatorSet::new(vec![(k.public_key(), VotingPower(1))]).unwrap();
            let mut c = ChainState::genesis("c", vs, Hash::default(), TimeMs(1));
            let mut out = vec![];
            for h in 1..=12u64 {
                let b: Block = BlockData {
                    header: c.new_header(k.address(), TimeMs(10 * h), &[]),
                    txs: vec![],
                    last_commit: c.last_commit.clone(),
                }
                .into();
                let commit = Commit {
                    height: Height(h),
                    round: Round(0),
                    block_id: b.id(),
                    signatures: vec![],
                };
                c.advance(&b, &commit, Hash::default(), &[]);
                out.push((b, commit));
            }
            (out, ())
        };
        let bytes = crate::traits::Snapshot {
            chain: states[7].clone(),
            app: vec![],
        }
        .encode();
        let (ss, verdicts, a) = run(bytes, |h| {
            if h.0 == 10 {
                forged_chain[9].clone()
            } else {
                blocks[h.0 as usize - 1].clone()
            }
        });
        assert!(a.is_none(), "nothing assembled from a forged chain");
        assert!(
            verdicts
                .iter()
                .any(|v| matches!(v, Verdict::Forged(e) if e.contains("block 10"))),
            "{verdicts:?}"
        );
        assert_eq!(ss.dropped_peers(), 1);
    }

    /// Each node holds the commit it saw: an honest snapshot's last commit for block `S - 1`
    /// may differ from the one block `S`'s proposer put in block `S`. It is accepted, and the
    /// restored chain takes the proven one; a commit for another block is refused.
    #[test]
    fn a_snapshot_with_another_commit_for_its_last_block_is_honest() {
        let (blocks, states) = chain(12);
        let mut seen = states[7].clone();
        seen.last_commit.as_mut().unwrap().round = Round(1);
        let bytes = crate::traits::Snapshot {
            chain: seen,
            app: vec![],
        }
        .encode();
        let (_, _, a) = run(bytes, |h| blocks[h.0 as usize - 1].clone());
        let a = a.expect("its bytes hash to what was offered");
        let decoded = crate::traits::Snapshot::decode(&a.bytes).unwrap();
        let (before, first, commit) = (&a.blocks[0].1, &a.blocks[1].1, &a.blocks[1].2);
        let mut wrong = decoded.chain.clone();
        wrong.last_commit.as_mut().unwrap().block_id = blocks[0].0.id();
        let e = verify_snapshot(&mut wrong, "c", before, first, commit).unwrap_err();
        assert!(e.contains("last commit"), "{e}");
        let mut chain = decoded.chain;
        verify_snapshot(&mut chain, "c", before, first, commit).unwrap();
        assert_eq!(chain.last_commit, blocks[7].0.last_commit, "the proven commit");
        assert_eq!(commit_hash(&chain.last_commit), blocks[7].0.header.last_commit_hash);
    }

    #[test]
    fn a_forged_snapshot_fails_the_check_against_the_trusted_headers() {
        let (blocks, states) = chain(12);
        let mut forged = states[7].clone();
        forged.app_hash = Hash([0xee; 32]);
        let bytes = crate::traits::Snapshot {
            chain: forged,
            app: vec![],
        }
        .encode();
        let (_, _, a) = run(bytes, |h| blocks[h.0 as usize - 1].clone());
        let a = a.expect("its bytes hash to what was offered");
        let mut decoded = crate::traits::Snapshot::decode(&a.bytes).unwrap();
        let e = verify_snapshot(&mut decoded.chain, "c", &a.blocks[0].1, &a.blocks[1].1, &a.blocks[1].2).unwrap_err();
        assert!(e.contains("app hash"), "{e}");
    }

    /// Snapshots newer than the trusted height cannot be proven by it: discovery says so, with
    /// the lowest such height, so the operator can take a newer trusted block.
    #[test]
    fn snapshots_above_the_trusted_height_are_named_not_used() {
        let (blocks, _) = chain(12);
        let anchor = TrustAnchor {
            height: Height(5),
            block_id: blocks[4].0.id(),
        };
        let mut ss = StateSync::new(anchor, Height(1), 100);
        ss.tick(TimeMs(0));
        ss.on_offer(TimeMs(0), peer(1), Height(10), Hash([1; 32]), 10);
        ss.on_offer(TimeMs(0), peer(2), Height(8), Hash([2; 32]), 10);
        let discovering = |n| StateSyncPhase::Discovering {
            offers: n,
            newer_than_trust: Some(Height(8)),
        };
        assert_eq!(ss.phase(), discovering(0));
        let out = ss.tick(TimeMs(500));
        assert!(out.iter().all(|(to, _)| to.is_none()), "nothing fetched: {out:?}");
        ss.on_offer(TimeMs(500), peer(3), Height(4), Hash([3; 32]), 10);
        assert_eq!(ss.phase(), discovering(1), "a usable offer counts");
    }

    #[test]
    fn chunks_that_do_not_hash_to_the_offer_are_refused() {
        let (blocks, states) = chain(12);
        let bytes = crate::traits::Snapshot {
            chain: states[7].clone(),
            app: vec![],
        }
        .encode();
        let anchor = TrustAnchor {
            height: Height(12),
            block_id: blocks[11].0.id(),
        };
        let mut ss = StateSync::new(anchor, Height(1), 100);
        ss.on_offer(TimeMs(0), peer(1), Height(8), Hash([7; 32]), bytes.len() as u64);
        for (_, m) in ss.tick(TimeMs(100)) {
            match m {
                Message::RequestDecided(h) => {
                    let (b, c) = blocks[h.0 as usize - 1].clone();
                    ss.on_decided(peer(1), b, c);
                }
                Message::RequestChunk { height, index } => {
                    let verdict = ss.on_chunk(peer(1), height, index, bytes.clone());
                    assert!(matches!(verdict, Verdict::Forged(_)), "{verdict:?}");
                }
                _ => {}
            }
        }
        assert!(ss.take_assembled().is_none());
        assert_eq!(ss.dropped_peers(), 1, "the peer whose bytes did not match its offer");
    }
}
