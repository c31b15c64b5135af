//! The durable store: one redb database holding decided blocks with their commits, the
//! consensus log (our own signed proposals and votes), and the transaction history.
//!
//! Every write is one redb transaction committed with immediate durability (fsync) before the
//! call returns, so after `kill -9` at any moment the store holds every block the node decided
//! and every vote it signed. The application state is not stored separately: on start the node
//! re-executes the stored blocks (deterministically) and gets it back.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use tendr_core::codec::{decode_bounded, encode};
use tendr_core::crypto::sha256;
use tendr_core::engine::WalEntry;
use tendr_core::limits::MAX_MESSAGE_BYTES;
use tendr_core::traits::{Storage, StorageError, TxResult};
use tendr_core::types::{Block, Commit, Height};

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const WAL: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("wal");
const TXS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("txs");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const INFO: TableDefinition<&str, &str> = TableDefinition::new("info");
/// Transaction hash -> (height, index), for `/tx?hash=`.
const TX_INDEX: TableDefinition<&[u8], (u64, u32)> = TableDefinition::new("tx_index");
const RESULTS_HEIGHT: &str = "results_height";
const GENESIS_HASH: &str = "genesis_hash";

/// One transaction of a decided block with its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    pub height: u64,
    pub index: u32,
    pub hash: String,
    pub tx: Vec<u8>,
    pub result: TxResult,
}

/// A handle on the database. Clones share it; reads may run on any thread.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
}

fn err(e: impl std::fmt::Display) -> StorageError {
    StorageError(e.to_string())
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StorageError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create `{}`: {e}", dir.display())))?;
        }
        let db = Database::create(path).map_err(|e| {
            // Only a lock held elsewhere means another process; a damaged file is something else.
            let hint = match e {
                redb::DatabaseError::DatabaseAlreadyOpen => " (is another `tendr` process using this folder?)",
                _ => "",
            };
            err(format!("database `{}`: {e}{hint}", path.display()))
        })?;
        let tx = db.begin_write().map_err(err)?;
        {
            tx.open_table(BLOCKS).map_err(err)?;
            tx.open_table(WAL).map_err(err)?;
            tx.open_table(TXS).map_err(err)?;
            tx.open_table(META).map_err(err)?;
            tx.open_table(INFO).map_err(err)?;
            tx.open_table(TX_INDEX).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(Store { db: Arc::new(db) })
    }

    /// Binds the database to one genesis: records `hash` on first use, and refuses another.
    pub fn check_genesis(&self, hash_hex: &str) -> Result<(), StorageError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(INFO).map_err(err)?;
            let stored = t.get(GENESIS_HASH).map_err(err)?.map(|v| v.value().to_string());
            match stored {
                Some(s) if s != hash_hex => {
                    return Err(StorageError(format!(
                        "this data folder holds the chain of genesis {s}, not {hash_hex}; \
                         use another folder (`home` in the config) or remove the `data` folder to start over"
                    )))
                }
                Some(_) => {}
                None => {
                    t.insert(GENESIS_HASH, hash_hex).map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)
    }

    /// Height up to which the transaction history is written.
    pub fn results_height(&self) -> Result<u64, StorageError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(META).map_err(err)?;
        Ok(t.get(RESULTS_HEIGHT).map_err(err)?.map(|v| v.value()).unwrap_or(0))
    }

    /// Records the results of the transactions of decided block `height`.
    pub fn save_results(&self, block: &Block, results: &[TxResult]) -> Result<(), StorageError> {
        let h = block.height().0;
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(TXS).map_err(err)?;
            let mut index = tx.open_table(TX_INDEX).map_err(err)?;
            for (i, (payload, result)) in block.txs.iter().zip(results).enumerate() {
                let hash = sha256(payload);
                let rec = TxRecord {
                    height: h,
                    index: i as u32,
                    hash: hash.to_hex(),
                    tx: payload.clone(),
                    result: result.clone(),
                };
                t.insert((h, i as u32), encode(&rec).as_slice()).map_err(err)?;
                index.insert(hash.0.as_slice(), (h, i as u32)).map_err(err)?;
            }
            let mut m = tx.open_table(META).map_err(err)?;
            let prev = m.get(RESULTS_HEIGHT).map_err(err)?.map(|v| v.value()).unwrap_or(0);
            m.insert(RESULTS_HEIGHT, prev.max(h)).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// The latest `limit` transactions, newest first.
    pub fn transactions(&self, limit: usize) -> Result<Vec<TxRecord>, StorageError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(TXS).map_err(err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(err)?.rev().take(limit) {
            let (_, v) = item.map_err(err)?;
            out.push(decode_bounded(v.value(), MAX_MESSAGE_BYTES).map_err(err)?);
        }
        Ok(out)
    }

    /// The transactions of decided block `height` with their results, in block order (empty
    /// when the block has none, or its results are not written yet: see
    /// [`Store::results_height`]).
    pub fn transactions_at(&self, height: u64) -> Result<Vec<TxRecord>, StorageError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(TXS).map_err(err)?;
        let mut out = Vec::new();
        for item in t.range((height, 0)..=(height, u32::MAX)).map_err(err)? {
            let (_, v) = item.map_err(err)?;
            out.push(decode_bounded(v.value(), MAX_MESSAGE_BYTES).map_err(err)?);
        }
        Ok(out)
    }

    pub fn transaction_by_hash(&self, hash_hex: &str) -> Result<Option<TxRecord>, StorageError> {
        let Ok(hash) = hex::decode(hash_hex) else {
            return Ok(None);
        };
        let r = self.db.begin_read().map_err(err)?;
        let index = r.open_table(TX_INDEX).map_err(err)?;
        let Some(at) = index.get(hash.as_slice()).map_err(err)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let t = r.open_table(TXS).map_err(err)?;
        let rec = match t.get(at).map_err(err)? {
            Some(v) => Some(decode_bounded(v.value(), MAX_MESSAGE_BYTES).map_err(err)?),
            None => None,
        };
        Ok(rec)
    }
}

impl Storage for Store {
    fn append_wal(&mut self, entry: WalEntry) -> Result<(), StorageError> {
        let h = entry.height().0;
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(WAL).map_err(err)?;
            let next = t
                .range((h, 0)..=(h, u64::MAX))
                .map_err(err)?
                .next_back()
                .transpose()
                .map_err(err)?
                .map(|(k, _)| k.value().1 + 1)
                .unwrap_or(0);
            t.insert((h, next), encode(&entry).as_slice()).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn wal(&self, height: Height) -> Result<Vec<WalEntry>, StorageError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(WAL).map_err(err)?;
        let mut out = Vec::new();
        for item in t.range((height.0, 0)..=(height.0, u64::MAX)).map_err(err)? {
            let (_, v) = item.map_err(err)?;
            out.push(decode_bounded(v.value(), MAX_MESSAGE_BYTES).map_err(err)?);
        }
        Ok(out)
    }

    fn save_decided(&mut self, block: &Block, commit: &Commit) -> Result<(), StorageError> {
        let h = block.height().0;
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut t = tx.open_table(BLOCKS).map_err(err)?;
            t.insert(h, encode(&(block, commit)).as_slice()).map_err(err)?;
            // The log of heights before this one is no longer needed: those heights are
            // decided, and a restarted engine starts after them.
            let mut w = tx.open_table(WAL).map_err(err)?;
            w.retain_in((0, 0)..(h, 0), |_, _| false).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    fn decided(&self, height: Height) -> Result<Option<(Block, Commit)>, StorageError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(BLOCKS).map_err(err)?;
        match t.get(height.0).map_err(err)? {
            Some(v) => Ok(Some(decode_bounded(v.value(), MAX_MESSAGE_BYTES).map_err(err)?)),
            None => Ok(None),
        }
    }

    fn last_height(&self) -> Result<Height, StorageError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(BLOCKS).map_err(err)?;
        let last = t.last().map_err(err)?.map(|(k, _)| k.value()).unwrap_or(0);
        Ok(Height(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tendr_core::crypto::PrivateKey;
    use tendr_core::types::*;

    fn vote(h: u64, r: u32) -> WalEntry {
        let k = PrivateKey::from_seed(b"v");
        WalEntry::Vote(Vote {
            vote_type: VoteType::Prevote,
            height: Height(h),
            round: Round(r),
            block_id: None,
            validator: k.address(),
            signature: k.sign(b"x"),
        })
    }

    #[test]
    fn wal_order_survives_reopen_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db.redb");
        {
            let mut s = Store::open(&p).unwrap();
            s.append_wal(vote(1, 0)).unwrap();
            s.append_wal(vote(1, 1)).unwrap();
            s.append_wal(vote(2, 0)).unwrap();
        }
        let s = Store::open(&p).unwrap();
        assert_eq!(s.wal(Height(1)).unwrap(), vec![vote(1, 0), vote(1, 1)]);
        assert_eq!(s.wal(Height(2)).unwrap(), vec![vote(2, 0)]);
        assert_eq!(s.last_height().unwrap(), Height(0));
        assert_eq!(s.results_height().unwrap(), 0);
        assert!(s.transactions(10).unwrap().is_empty());
    }

    #[test]
    fn decided_blocks_and_history_survive_reopen() {
        use tendr_core::chain::ChainState;
        use tendr_core::traits::Application;
        use tendr_core::ValidatorSet;
        use tendr_kv::KvApp;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db.redb");
        let k = PrivateKey::from_seed(b"v");
        let vs = ValidatorSet::new(vec![(k.public_key(), VotingPower(1))]).unwrap();
        let mut app = KvApp::new("c");
        let chain = ChainState::genesis("c", vs.clone(), app.initial_app_hash(), TimeMs(1));
        let txs = vec![b"a=1".to_vec(), b"bad".to_vec()];
        let block: Block = tendr_core::types::BlockData {
            header: chain.new_header(k.address(), TimeMs(5), &txs),
            txs,
            last_commit: None,
        }
        .into();
        let commit = Commit {
            height: Height(1),
            round: Round(0),
            block_id: block.id(),
            signatures: vec![],
        };
        let res = app.execute_block(&block, &vs);
        {
            let mut s = Store::open(&p).unwrap();
            s.append_wal(vote(1, 0)).unwrap();
            s.save_decided(&block, &commit).unwrap();
            s.save_results(&block, &res.tx_results).unwrap();
            s.check_genesis("g1").unwrap();
        }
        let s = Store::open(&p).unwrap();
        assert_eq!(s.last_height().unwrap(), Height(1));
        assert_eq!(s.decided(Height(1)).unwrap(), Some((block.clone(), commit)));
        assert_eq!(s.results_height().unwrap(), 1);
        let txs = s.transactions(10).unwrap();
        assert_eq!(txs.len(), 2);
        assert_eq!(txs[0].index, 1);
        assert_ne!(txs[0].result.code, 0);
        let found = s.transaction_by_hash(&sha256(b"a=1").to_hex()).unwrap().unwrap();
        assert_eq!((found.height, found.index, found.result.code), (1, 0, 0));
        assert!(s.transaction_by_hash("00").unwrap().is_none());
        assert!(s.check_genesis("g1").is_ok());
        assert!(s
            .check_genesis("g2")
            .unwrap_err()
            .0
            .contains("holds the chain of genesis g1"));
    }
}

#[cfg(test)]
mod open_errors {
    use super::*;

    /// Issue 18, item 7: only a lock held elsewhere asks about another process; a damaged
    /// file says what is wrong with it and nothing about processes.
    #[test]
    fn only_a_held_lock_mentions_another_process() {
        let dir = std::env::temp_dir().join(format!("tendr-store-open-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.redb");
        std::fs::write(&garbage, vec![7u8; 4096]).unwrap();
        let e = Store::open(&garbage).err().expect("a damaged file is refused").0;
        assert!(e.contains("garbage.redb") && !e.contains("another"), "{e}");
        let good = dir.join("good.redb");
        let _held = Store::open(&good).unwrap();
        let e = Store::open(&good).err().expect("a second open is refused").0;
        assert!(e.contains("is another `tendr` process using this folder?"), "{e}");
        drop(_held);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
