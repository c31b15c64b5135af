//! A bounded, deduplicating, first-in-first-out pool of transactions waiting for a block.

use crate::crypto::sha256;
use crate::limits::{MAX_TX_BYTES, MEMPOOL_MAX_BYTES, MEMPOOL_MAX_TXS};
use crate::types::Hash;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    #[error("transaction of {0} bytes exceeds the limit of {MAX_TX_BYTES} bytes")]
    TooLarge(usize),
    #[error("empty transaction")]
    Empty,
    #[error("mempool full ({0} transactions, {1} bytes); try again after the next block")]
    Full(usize, usize),
    #[error("transaction already committed")]
    AlreadyCommitted,
}

/// Committed transaction hashes remembered, so gossip does not bring them back.
const COMMITTED_MEMORY: usize = 200_000;

#[derive(Debug, Default, Clone)]
pub struct Mempool {
    queue: BTreeMap<u64, (Hash, Vec<u8>)>,
    by_hash: BTreeMap<Hash, u64>,
    bytes: usize,
    next: u64,
    committed: BTreeSet<Hash>,
    committed_order: VecDeque<Hash>,
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
        if tx.is_empty() {
            return Err(MempoolError::Empty);
        }
        if tx.len() > MAX_TX_BYTES {
            return Err(MempoolError::TooLarge(tx.len()));
        }
        let h = sha256(&tx);
        if self.by_hash.contains_key(&h) {
            return Ok(false);
        }
        if self.committed.contains(&h) {
            return Err(MempoolError::AlreadyCommitted);
        }
        if self.queue.len() >= MEMPOOL_MAX_TXS || self.bytes + tx.len() > MEMPOOL_MAX_BYTES {
            return Err(MempoolError::Full(self.queue.len(), self.bytes));
        }
        self.bytes += tx.len();
        self.by_hash.insert(h, self.next);
        self.queue.insert(self.next, (h, tx));
        self.next += 1;
        Ok(true)
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

    /// Removes transactions that a decided block included.
    pub fn remove_committed(&mut self, txs: &[Vec<u8>]) {
        for tx in txs {
            let h = sha256(tx);
            if let Some(seq) = self.by_hash.remove(&h) {
                if let Some((_, t)) = self.queue.remove(&seq) {
                    self.bytes -= t.len();
                }
            }
            if self.committed.insert(h) {
                self.committed_order.push_back(h);
                if self.committed_order.len() > COMMITTED_MEMORY {
                    let old = self.committed_order.pop_front().expect("non-empty");
                    self.committed.remove(&old);
                }
            }
        }
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
        assert_eq!(m.add(b"a".to_vec()), Err(MempoolError::AlreadyCommitted));
        assert_eq!(
            m.add(vec![0; MAX_TX_BYTES + 1]),
            Err(MempoolError::TooLarge(MAX_TX_BYTES + 1))
        );
        assert_eq!(m.add(vec![]), Err(MempoolError::Empty));
    }
}
