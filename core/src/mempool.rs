//! A bounded, deduplicating, first-in-first-out pool of transactions waiting for a block.
//!
//! How to drive it: [`Mempool::add`] (or [`Mempool::add_hashed`] when the caller already has
//! the transaction's SHA-256), [`Mempool::take`] to build a block, [`Mempool::remove_committed`]
//! with every decided block. Each transaction is hashed once on its way in; the pool keeps the
//! hash with it.
//!
//! A *duplicate* is a transaction whose bytes are identical to one pending here, or to one
//! committed in the last [`RECENT_COMMITTED_BLOCKS`] blocks (the recent-duplicates cache, as
//! CometBFT's mempool cache): gossip from a peer that has not yet decided a block must not bring
//! its transactions back into the next one. After that window the same bytes are accepted again
//! (setting a key back to an earlier value is ordinary use); replay protection beyond the window
//! belongs to the application (a nonce, a sequence number).

use crate::crypto::sha256;
use crate::limits::{
    MAX_TX_BYTES, MEMPOOL_MAX_BYTES, MEMPOOL_MAX_TXS, RECENT_COMMITTED_BLOCKS, RECENT_COMMITTED_MAX_TXS,
};
use crate::types::Hash;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    #[error("transaction of {0} bytes exceeds the limit of {MAX_TX_BYTES} bytes")]
    TooLarge(usize),
    #[error("empty transaction")]
    Empty,
    #[error("mempool full ({0} transactions, {1} bytes); try again after the next block")]
    Full(usize, usize),
    /// `blocks_ago` is 0 when the last decided block included it.
    #[error(
        "duplicate: identical bytes were committed in the last {} block(s), and identical \
         transactions are refused until {RECENT_COMMITTED_BLOCKS} blocks follow the one that \
         committed them; submit it again after {} more block(s), or make it differ (e.g. with a \
         nonce)",
        blocks_ago + 1,
        RECENT_COMMITTED_BLOCKS - blocks_ago
    )]
    RecentlyCommitted { blocks_ago: u64 },
}

/// A [`Hasher`] for tables keyed by SHA-256 digests (the pool's, and the network's seen-set):
/// a digest is already uniform, so folding its words is enough and SipHash's cost per lookup
/// buys nothing. Steering many keys into one bucket would take a SHA-256 preimage search per
/// key. The pool's tables are only looked up, never iterated, so their order cannot leak into
/// behaviour (the simulator stays deterministic).
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }
}

/// Builds [`DigestHasher`]s.
pub type ByDigest = BuildHasherDefault<DigestHasher>;

#[derive(Debug, Default, Clone)]
pub struct Mempool {
    /// Pending transactions in arrival order, with their hashes.
    queue: BTreeMap<u64, (Hash, Vec<u8>)>,
    by_hash: HashMap<Hash, u64, ByDigest>,
    bytes: usize,
    next: u64,
    /// The recent-duplicates cache: hash -> number of the block (counted by
    /// [`Mempool::remove_committed`]) that last committed it. Only looked up, never iterated.
    recent: HashMap<Hash, u64, ByDigest>,
    /// The same entries in commit order, to expire the oldest first.
    recent_order: VecDeque<(u64, Hash)>,
    /// Decided blocks seen by [`Mempool::remove_committed`].
    blocks: u64,
}

impl Mempool {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn len(&self) -> usize {
        self.queue.len()
    }
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn contains(&self, h: &Hash) -> bool {
        self.by_hash.contains_key(h)
    }

    /// Adds a transaction; `Ok(false)` if it is already pending.
    pub fn add(&mut self, tx: Vec<u8>) -> Result<bool, MempoolError> {
        let h = sha256(&tx);
        self.add_hashed(tx, h)
    }

    /// [`Mempool::add`] of a transaction whose hash `h` (`sha256(&tx)`) the caller computed.
    pub fn add_hashed(&mut self, tx: Vec<u8>, h: Hash) -> Result<bool, MempoolError> {
        if !self.admits(&h, tx.len())? {
            return Ok(false);
        }
        self.insert(tx, h);
        Ok(true)
    }

    /// Whether [`Mempool::insert`] may take a transaction of `len` bytes with hash `h`:
    /// `Ok(false)` if it is already pending, an error if it is refused.
    pub fn admits(&self, h: &Hash, len: usize) -> Result<bool, MempoolError> {
        if len == 0 {
            return Err(MempoolError::Empty);
        }
        if len > MAX_TX_BYTES {
            return Err(MempoolError::TooLarge(len));
        }
        if self.by_hash.contains_key(h) {
            return Ok(false);
        }
        if let Some(&block) = self.recent.get(h) {
            return Err(MempoolError::RecentlyCommitted {
                blocks_ago: self.blocks - block,
            });
        }
        if self.queue.len() >= MEMPOOL_MAX_TXS || self.bytes + len > MEMPOOL_MAX_BYTES {
            return Err(MempoolError::Full(self.queue.len(), self.bytes));
        }
        Ok(true)
    }

    /// Pools a transaction that [`Mempool::admits`] just accepted (`h` is `sha256(&tx)`).
    pub fn insert(&mut self, tx: Vec<u8>, h: Hash) {
        debug_assert_eq!(h, sha256(&tx), "the hash given with a transaction is its SHA-256");
        debug_assert!(
            !self.recent.contains_key(&h),
            "insert after admits: not recently committed"
        );
        let len = tx.len();
        assert!(
            len > 0
                && len <= MAX_TX_BYTES
                && self.queue.len() < MEMPOOL_MAX_TXS
                && self.bytes + len <= MEMPOOL_MAX_BYTES,
            "insert after admits: within the limits"
        );
        let pending = self.by_hash.insert(h, self.next);
        assert!(pending.is_none(), "insert after admits: not pending yet");
        self.bytes += len;
        self.queue.insert(self.next, (h, tx));
        self.next += 1;
    }

    /// Oldest transactions first, up to the given caps.
    pub fn take(&self, max_txs: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        let mut bytes = 0;
        self.queue
            .values()
            .take(max_txs)
            .take_while(|(_, tx)| {
                bytes += tx.len();
                bytes <= max_bytes
            })
            .map(|(_, tx)| tx.clone())
            .collect()
    }

    /// Removes transactions that a decided block included (call once per decided block, in
    /// order) and remembers them as recent duplicates for [`RECENT_COMMITTED_BLOCKS`] blocks.
    pub fn remove_committed(&mut self, txs: &[Vec<u8>]) {
        self.blocks += 1;
        for tx in txs {
            let h = sha256(tx);
            if let Some(seq) = self.by_hash.remove(&h) {
                if let Some((_, t)) = self.queue.remove(&seq) {
                    self.bytes -= t.len();
                }
            }
            self.recent.insert(h, self.blocks);
            self.recent_order.push_back((self.blocks, h));
        }
        self.expire_recent();
    }

    /// Forgets commits older than the window, and the oldest beyond the count cap.
    fn expire_recent(&mut self) {
        while let Some(&(block, h)) = self.recent_order.front() {
            let old = self.blocks - block >= RECENT_COMMITTED_BLOCKS;
            if !old && self.recent_order.len() <= RECENT_COMMITTED_MAX_TXS {
                break;
            }
            self.recent_order.pop_front();
            // A later commit of the same bytes has its own, newer entry: keep its mark.
            if self.recent.get(&h) == Some(&block) {
                self.recent.remove(&h);
            }
        }
    }

    /// Hashes in the recent-duplicates cache (bounded by [`RECENT_COMMITTED_MAX_TXS`]).
    pub fn recent_len(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_order_and_commit() {
        let mut m = Mempool::new();
        assert_eq!(m.add(b"a".to_vec()), Ok(true));
        assert_eq!(m.add(b"b".to_vec()), Ok(true));
        assert_eq!(m.add(b"a".to_vec()), Ok(false));
        assert_eq!(m.take(10, 1000), vec![b"a".to_vec(), b"b".to_vec()]);
        m.remove_committed(&[b"a".to_vec()]);
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.add(b"a".to_vec()),
            Err(MempoolError::RecentlyCommitted { blocks_ago: 0 })
        );
        assert_eq!(
            m.add(vec![0; MAX_TX_BYTES + 1]),
            Err(MempoolError::TooLarge(MAX_TX_BYTES + 1))
        );
        assert_eq!(m.add(vec![]), Err(MempoolError::Empty));
    }

    /// Issue 18, item 1: `color=blue`, then `color=red`, then `color=blue` again is ordinary
    /// use. A committed payload is a duplicate for a bounded window of blocks, then accepted.
    #[test]
    fn a_committed_payload_is_accepted_again_after_the_window() {
        let mut m = Mempool::new();
        let blue = b"color=blue".to_vec();
        assert_eq!(m.add(blue.clone()), Ok(true));
        m.remove_committed(std::slice::from_ref(&blue));
        m.remove_committed(&[b"color=red".to_vec()]);
        let refused = m.add(blue.clone()).unwrap_err();
        assert_eq!(refused, MempoolError::RecentlyCommitted { blocks_ago: 1 });
        let text = refused.to_string();
        assert!(
            text.contains("duplicate") && text.contains("in the last 2 block(s)"),
            "{text}"
        );
        let more = RECENT_COMMITTED_BLOCKS - 1;
        assert!(text.contains(&format!("after {more} more block(s)")), "{text}");
        for _ in 1..more {
            m.remove_committed(&[]);
        }
        assert!(m.add(blue.clone()).is_err(), "one block short of the window");
        m.remove_committed(&[]);
        assert_eq!(
            m.add(blue),
            Ok(true),
            "the window is over: the same bytes are new again"
        );
        assert_eq!(m.recent_len(), 1, "the cache forgot blue's commit, not red's");
    }

    #[test]
    fn the_recent_duplicates_cache_is_bounded_by_count() {
        let mut m = Mempool::new();
        let txs: Vec<Vec<u8>> = (0..RECENT_COMMITTED_MAX_TXS as u64 + 10)
            .map(|i| i.to_le_bytes().to_vec())
            .collect();
        m.remove_committed(&txs);
        assert_eq!(m.recent_len(), RECENT_COMMITTED_MAX_TXS);
        assert_eq!(m.add(txs[0].clone()), Ok(true), "the oldest were forgotten first");
        assert!(m.add(txs[txs.len() - 1].clone()).is_err());
    }
}
