//! The durable store: one redb database holding decided blocks with their commits, the
//! consensus log (our own signed proposals and votes), and the transaction history.
//!
//! Every write is one redb transaction committed with immediate durability (fsync), so after
//! `kill -9` at any moment the store holds every block the node decided and every vote it
//! signed. The application state is not stored separately: on start the node re-executes the
//! stored blocks (deterministically) and gets it back.
//!
//! What it checks: every value is sealed (a format byte and SHA-256 of the payload, see
//! [`seal`]) and verified when read, on top of redb's own page checksums; a panic inside redb
//! (it has `unreachable!()`s for pages it cannot parse) is contained and reported as damage.
//! A damaged store is reported with what is damaged and what to do, never a panic.
//!
//! When a write fails (a full disk), the write is kept in order in memory (up to
//! [`MAX_PENDING_BYTES`]) and retried with backoff, reopening the database (redb refuses
//! further use after an I/O error). [`Storage::sync`] fails while anything is unwritten, so
//! nothing that depends on it leaves the node; [`Store::problem`] says why for the status.
//!
//! Format: store format 1 (values sealed) is marked in the `meta` table. A store of format 0
//! (tendr before the seals: no marker, raw values) is migrated in place on open, in one
//! transaction; a store of a later format is refused.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};
use tendr_core::codec::{decode_bounded, encode};
use tendr_core::crypto::sha256;
use tendr_core::engine::WalEntry;
use tendr_core::limits::MAX_MESSAGE_BYTES;
use tendr_core::traits::{Snapshot, Storage, StorageError, TxResult};
use tendr_core::types::{Block, Commit, Height};

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const WAL: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("wal");
const TXS: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("txs");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const INFO: TableDefinition<&str, &str> = TableDefinition::new("info");
/// Transaction hash -> (height, index), for `/tx?hash=`.
const TX_INDEX: TableDefinition<&[u8], (u64, u32)> = TableDefinition::new("tx_index");
/// Snapshots by the height they are ready to decide (the newest [`SNAPSHOTS_KEPT`] are kept).
const SNAPSHOTS: TableDefinition<u64, &[u8]> = TableDefinition::new("snapshots");
/// How many snapshots the store keeps (the newest, and one before it while it is new).
const SNAPSHOTS_KEPT: usize = 2;
const RESULTS_HEIGHT: &str = "results_height";
/// The lowest height whose block may still be held (everything below was pruned).
const EARLIEST_HEIGHT: &str = "earliest_height";
const GENESIS_HASH: &str = "genesis_hash";
/// Key in `meta` of the store format.
const STORE_FORMAT: &str = "store_format";
/// The format this tendr writes: values sealed with [`seal`].
pub const FORMAT: u64 = 1;
/// First byte of a sealed value.
const SEAL_V1: u8 = 1;
/// Unwritten writes kept in memory while the disk refuses them; beyond this, writes fail.
pub const MAX_PENDING_BYTES: usize = 256 << 20;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One transaction of a decided block with its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxRecord {
    pub height: u64,
    pub index: u32,
    pub hash: String,
    pub tx: Vec<u8>,
    pub result: TxResult,
}

/// What is wrong with the store, for the log, `tendr status` and `/health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreProblem {
    /// Writes fail (e.g. the disk is full); they are kept and retried.
    WriteFailing(String),
    /// What was read is not what was written.
    Damaged(String),
}

impl std::fmt::Display for StoreProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreProblem::WriteFailing(m) | StoreProblem::Damaged(m) => f.write_str(m),
        }
    }
}

/// Seals a value: [`SEAL_V1`], SHA-256 of `payload`, `payload`.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(33 + payload.len());
    v.push(SEAL_V1);
    v.extend_from_slice(&sha256(payload).0);
    v.extend_from_slice(payload);
    v
}

/// The payload of a sealed value, if its seal holds.
pub fn unseal(bytes: &[u8]) -> Result<&[u8], String> {
    if bytes.len() < 33 || bytes[0] != SEAL_V1 {
        return Err(format!("not a sealed record ({} bytes)", bytes.len()));
    }
    let (sum, payload) = bytes[1..].split_at(32);
    if sha256(payload).0 != sum {
        return Err("checksum mismatch".into());
    }
    Ok(payload)
}

/// Why a store operation failed: damage (what was read is not what was written), or an I/O
/// failure (the disk refused, the lock is held).
#[derive(Debug)]
enum Fault {
    Damaged(String),
    Io(String),
}

impl<E: Into<redb::Error>> From<E> for Fault {
    fn from(e: E) -> Self {
        let e: redb::Error = e.into();
        match &e {
            redb::Error::Corrupted(_) => Fault::Damaged(e.to_string()),
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => Fault::Damaged(e.to_string()),
            _ => Fault::Io(e.to_string()),
        }
    }
}

fn damaged(what: impl std::fmt::Display) -> Fault {
    Fault::Damaged(what.to_string())
}

/// Decodes a sealed record; `what` names it in the error.
fn open_record<T: serde::de::DeserializeOwned>(what: &dyn std::fmt::Display, bytes: &[u8]) -> Result<T, Fault> {
    let payload = unseal(bytes).map_err(|e| damaged(format!("{what}: {e}")))?;
    decode_bounded(payload, MAX_MESSAGE_BYTES).map_err(|e| damaged(format!("{what}: {e}")))
}

thread_local! {
    /// Set while this thread runs a redb call under [`contain`]: its panic is reported as an
    /// error, so the panic hook stays quiet.
    static CONTAINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (redb calls), turning a panic inside redb into [`Fault::Damaged`].
fn contain<T>(f: impl FnOnce() -> Result<T, Fault>) -> Result<T, Fault> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINED.with(|c| c.get()) {
                previous(info)
            }
        }));
    });
    let outer = CONTAINED.with(|c| c.replace(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(outer));
    r.unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(damaged(format!("the database failed to read its own pages ({msg})")))
    })
}

/// A write kept in order until it is durable.
enum Write {
    Wal {
        height: u64,
        record: Vec<u8>,
    },
    Decided {
        height: u64,
        record: Vec<u8>,
    },
    Results {
        height: u64,
        rows: Vec<(u32, [u8; 32], Vec<u8>)>,
    },
    Snapshot {
        height: u64,
        record: Vec<u8>,
    },
    /// Forget decided blocks, their transaction history and the log below `below`.
    Prune {
        below: u64,
    },
}

impl Write {
    fn bytes(&self) -> usize {
        match self {
            Write::Wal { record, .. } | Write::Decided { record, .. } | Write::Snapshot { record, .. } => record.len(),
            Write::Prune { .. } => 0,
            Write::Results { rows, .. } => rows.iter().map(|r| r.2.len() + 40).sum(),
        }
    }
}

/// Writes not yet durable, and the state of the retries.
#[derive(Default)]
struct Pending {
    queue: VecDeque<Write>,
    bytes: usize,
    /// The last write failure, while writes fail.
    error: Option<String>,
    since: Option<Instant>,
    next_try: Option<Instant>,
    backoff: Duration,
    failures: u64,
    reopen: bool,
}

struct Inner {
    path: PathBuf,
    /// `None` only between a failed write and a successful reopen.
    db: RwLock<Option<Database>>,
    pending: Mutex<Pending>,
    damage: Mutex<Option<String>>,
}

/// A handle on the database. Clones share it; reads may run on any thread.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The message for a damaged store: what is damaged and what to do.
fn damage_message(path: &Path, what: &str) -> String {
    let data = path.parent().unwrap_or(Path::new(".")).display().to_string();
    format!(
        "store `{}` is damaged ({what}). To recover: stop the node, move the folder `{data}` aside \
         (e.g. `mv {data} {data}.damaged`) and start again: the node re-syncs the chain from its peers, \
         and validator_state.json (beside the keys, not in `{data}`) keeps it from signing anything that \
         conflicts with what it signed before. Or restore `{data}` from a backup",
        path.display()
    )
}

/// Opens the database file and runs redb's own integrity check (which repairs an unclean
/// shutdown, and fails on pages whose checksums do not match).
fn open_db(path: &Path) -> Result<Database, Fault> {
    let mut db = Database::create(path).map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => {
            Fault::Io(format!("{e} (is another `tendr` process using this folder?)"))
        }
        e => Fault::from(e),
    })?;
    if !db.check_integrity()? {
        tracing::warn!(
            "store `{}` was repaired by the database on open; its newest writes may be lost (the chain re-syncs from peers)",
            path.display()
        );
    }
    Ok(db)
}

/// A format-0 value (raw, unsealed) checked by decoding it, then sealed.
fn reseal<T: serde::de::DeserializeOwned>(what: &str, raw: &[u8]) -> Result<Vec<u8>, Fault> {
    decode_bounded::<T>(raw, MAX_MESSAGE_BYTES).map_err(|e| damaged(format!("{what} (format 0): {e}")))?;
    Ok(seal(raw))
}

/// Seals every value of a format-0 store, in the caller's transaction.
fn migrate_format_0(tx: &redb::WriteTransaction) -> Result<(), Fault> {
    let mut t = tx.open_table(BLOCKS)?;
    let rows: Vec<(u64, Vec<u8>)> = t
        .iter()?
        .map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())))
        .collect::<Result<_, _>>()?;
    for (k, raw) in rows {
        t.insert(k, reseal::<(Block, Commit)>(&format!("block {k}"), &raw)?.as_slice())?;
    }
    let mut t = tx.open_table(WAL)?;
    let rows: Vec<((u64, u64), Vec<u8>)> = t
        .iter()?
        .map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())))
        .collect::<Result<_, _>>()?;
    for (k, raw) in rows {
        t.insert(
            k,
            reseal::<WalEntry>(&format!("consensus log entry {k:?}"), &raw)?.as_slice(),
        )?;
    }
    let mut t = tx.open_table(TXS)?;
    let rows: Vec<((u64, u32), Vec<u8>)> = t
        .iter()?
        .map(|r| r.map(|(k, v)| (k.value(), v.value().to_vec())))
        .collect::<Result<_, _>>()?;
    for (k, raw) in rows {
        t.insert(k, reseal::<TxRecord>(&format!("transaction {k:?}"), &raw)?.as_slice())?;
    }
    Ok(())
}

/// Carries out one write in one durable transaction.
fn apply(db: &Database, w: &Write) -> Result<(), Fault> {
    let tx = db.begin_write()?;
    match w {
        Write::Wal { height, record } => {
            let h = *height;
            let mut t = tx.open_table(WAL)?;
            let last = t.range((h, 0)..=(h, u64::MAX))?.next_back().transpose()?;
            let next = last.map(|(k, _)| k.value().1 + 1).unwrap_or(0);
            t.insert((h, next), record.as_slice())?;
        }
        Write::Decided { height, record } => {
            let mut t = tx.open_table(BLOCKS)?;
            t.insert(*height, record.as_slice())?;
            // The log of heights before this one is no longer needed: those heights are
            // decided, and a restarted engine starts after them.
            let mut w = tx.open_table(WAL)?;
            w.retain_in((0, 0)..(*height, 0), |_, _| false)?;
        }
        Write::Results { height, rows } => {
            let mut t = tx.open_table(TXS)?;
            let mut index = tx.open_table(TX_INDEX)?;
            for (i, hash, record) in rows {
                t.insert((*height, *i), record.as_slice())?;
                index.insert(hash.as_slice(), (*height, *i))?;
            }
            let mut m = tx.open_table(META)?;
            let prev = m.get(RESULTS_HEIGHT)?.map(|v| v.value()).unwrap_or(0);
            m.insert(RESULTS_HEIGHT, prev.max(*height))?;
        }
        Write::Snapshot { height, record } => {
            let mut t = tx.open_table(SNAPSHOTS)?;
            t.insert(*height, record.as_slice())?;
            let heights: Vec<u64> = t.iter()?.map(|r| r.map(|(k, _)| k.value())).collect::<Result<_, _>>()?;
            for h in heights.iter().rev().skip(SNAPSHOTS_KEPT) {
                t.remove(*h)?;
            }
        }
        Write::Prune { below } => {
            let below = *below;
            tx.open_table(BLOCKS)?.retain_in(..below, |_, _| false)?;
            tx.open_table(WAL)?.retain_in((0, 0)..(below, 0), |_, _| false)?;
            let mut t = tx.open_table(TXS)?;
            let mut index = tx.open_table(TX_INDEX)?;
            let mut gone = Vec::new();
            for row in t.range((0, 0)..(below, 0))? {
                let (k, v) = row?;
                let rec: TxRecord = open_record(&format_args!("transaction {:?}", k.value()), v.value())?;
                gone.push(rec.hash);
            }
            for hash in gone {
                if let Ok(h) = hex::decode(&hash) {
                    index.remove(h.as_slice())?;
                }
            }
            t.retain_in((0, 0)..(below, 0), |_, _| false)?;
            let mut m = tx.open_table(META)?;
            let prev = m.get(EARLIEST_HEIGHT)?.map(|v| v.value()).unwrap_or(1);
            m.insert(EARLIEST_HEIGHT, prev.max(below))?;
        }
    }
    tx.commit()?;
    Ok(())
}

impl Store {
    /// Opens (or creates) the store at `path`: redb's integrity check, the format (a format-0
    /// store is migrated), and every seal. A damaged store is refused with what is damaged
    /// and what to do; only a lock held by another process asks about another process.
    pub fn open(path: &Path) -> Result<Store, StorageError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StorageError(format!("cannot create `{}`: {e}", dir.display())))?;
        }
        let fail = |f: Fault| match f {
            Fault::Damaged(what) => StorageError(damage_message(path, &what)),
            Fault::Io(e) => StorageError(format!("database `{}`: {e}", path.display())),
        };
        let db = contain(|| open_db(path)).map_err(fail)?;
        let store = Store {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db: RwLock::new(Some(db)),
                pending: Mutex::new(Pending::default()),
                damage: Mutex::new(None),
            }),
        };
        store.with_db(|db| store.prepare(db)).map_err(fail)?;
        Ok(store)
    }

    /// Creates the tables, checks (or migrates) the format, then checks every seal.
    fn prepare(&self, db: &Database) -> Result<(), Fault> {
        let tx = db.begin_write()?;
        {
            tx.open_table(BLOCKS)?;
            tx.open_table(WAL)?;
            tx.open_table(TXS)?;
            tx.open_table(INFO)?;
            tx.open_table(TX_INDEX)?;
            tx.open_table(SNAPSHOTS)?;
            let mut meta = tx.open_table(META)?;
            let format = meta.get(STORE_FORMAT)?.map(|v| v.value());
            match format {
                Some(FORMAT) => {}
                Some(f) => {
                    return Err(Fault::Io(format!(
                        "store format {f} was written by a newer tendr (this one reads format {FORMAT}): \
                         run that version, or move the data folder aside to re-sync the chain from peers"
                    )))
                }
                None => {
                    migrate_format_0(&tx)?;
                    meta.insert(STORE_FORMAT, FORMAT)?;
                }
            }
        }
        tx.commit()?;
        let r = db.begin_read()?;
        let t = r.open_table(BLOCKS)?;
        for row in t.iter()? {
            let (k, v) = row?;
            unseal(v.value()).map_err(|e| damaged(format!("block {}: {e}", k.value())))?;
        }
        let t = r.open_table(WAL)?;
        for row in t.iter()? {
            let (k, v) = row?;
            unseal(v.value()).map_err(|e| damaged(format!("consensus log entry {:?}: {e}", k.value())))?;
        }
        let t = r.open_table(TXS)?;
        for row in t.iter()? {
            let (k, v) = row?;
            unseal(v.value()).map_err(|e| damaged(format!("transaction {:?}: {e}", k.value())))?;
        }
        let t = r.open_table(SNAPSHOTS)?;
        for row in t.iter()? {
            let (k, v) = row?;
            unseal(v.value()).map_err(|e| damaged(format!("snapshot {}: {e}", k.value())))?;
        }
        Ok(())
    }

    /// Runs `f` on the open database, containing panics.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T, Fault>) -> Result<T, Fault> {
        let g = self.inner.db.read().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(db) => contain(|| f(db)),
            None => Err(Fault::Io(
                "the database is closed after a failed write; reopening it is retried".into(),
            )),
        }
    }

    /// A read: panics contained, damage recorded for [`Store::problem`].
    fn read<T>(&self, f: impl FnOnce(&Database) -> Result<T, Fault>) -> Result<T, StorageError> {
        self.with_db(f).map_err(|e| self.fault(e))
    }

    fn fault(&self, f: Fault) -> StorageError {
        match f {
            Fault::Damaged(what) => {
                let msg = damage_message(&self.inner.path, &what);
                let mut d = lock(&self.inner.damage);
                if d.is_none() {
                    tracing::error!("{msg}");
                    *d = Some(msg.clone());
                }
                StorageError(msg)
            }
            Fault::Io(e) => StorageError(format!("store `{}`: {e}", self.inner.path.display())),
        }
    }

    /// What is wrong with the store, if anything: damage found by a read, or writes that fail.
    pub fn problem(&self) -> Option<StoreProblem> {
        if let Some(d) = lock(&self.inner.damage).clone() {
            return Some(StoreProblem::Damaged(d));
        }
        let p = lock(&self.inner.pending);
        p.error.as_ref().map(|_| StoreProblem::WriteFailing(self.waiting(&p).0))
    }

    /// Retries the writes that failed, if their backoff has passed (the node calls it once a
    /// second). `Ok` when nothing waits.
    pub fn flush(&self) -> Result<(), StorageError> {
        let mut p = lock(&self.inner.pending);
        self.flush_locked(&mut p)
    }

    fn flush_locked(&self, p: &mut Pending) -> Result<(), StorageError> {
        if p.queue.is_empty() {
            return Ok(());
        }
        if p.next_try.is_some_and(|t| Instant::now() < t) {
            return Err(self.waiting(p));
        }
        if p.reopen {
            let mut g = self.inner.db.write().unwrap_or_else(|e| e.into_inner());
            *g = None; // releases the file lock, so the file can be opened again
            match contain(|| open_db(&self.inner.path)) {
                Ok(db) => *g = Some(db),
                Err(f) => {
                    drop(g);
                    self.failed(p, f);
                    return Err(self.waiting(p));
                }
            }
            p.reopen = false;
        }
        while let Some(w) = p.queue.front() {
            if let Err(f) = self.with_db(|db| apply(db, w)) {
                self.failed(p, f);
                return Err(self.waiting(p));
            }
            p.bytes -= w.bytes();
            p.queue.pop_front();
        }
        if let Some(e) = p.error.take() {
            let secs = p.since.map_or(0, |s| s.elapsed().as_secs());
            tracing::info!(
                failures = p.failures,
                "store `{}`: writes succeed again after {secs} s (last error: {e}); resuming",
                self.inner.path.display()
            );
            *p = Pending::default();
        }
        Ok(())
    }

    fn failed(&self, p: &mut Pending, f: Fault) {
        let msg = match f {
            Fault::Io(e) => e,
            Fault::Damaged(d) => self.fault(Fault::Damaged(d)).0,
        };
        if p.error.is_none() {
            p.since = Some(Instant::now());
            tracing::error!(
                "store `{}` cannot write: {msg}; this node stops signing and sending until its writes succeed \
                 (free disk space; the writes are retried)",
                self.inner.path.display()
            );
        }
        p.error = Some(msg);
        p.failures += 1;
        p.backoff = (p.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
        p.next_try = Some(Instant::now() + p.backoff);
        p.reopen = true;
    }

    fn waiting(&self, p: &Pending) -> StorageError {
        StorageError(format!(
            "store `{}` cannot write ({}): {} writes ({} KiB) wait in memory and are retried; free disk space",
            self.inner.path.display(),
            p.error.as_deref().unwrap_or("retrying"),
            p.queue.len(),
            p.bytes.div_ceil(1024)
        ))
    }

    /// Queues `w` behind any waiting writes and tries to write them all. `Ok` once queued:
    /// [`Storage::sync`] reports whether it is durable.
    fn write(&self, w: Write) -> Result<(), StorageError> {
        let mut p = lock(&self.inner.pending);
        if p.bytes + w.bytes() > MAX_PENDING_BYTES {
            return Err(StorageError(format!(
                "{}; {} MiB wait already, refusing more",
                self.waiting(&p).0,
                MAX_PENDING_BYTES >> 20
            )));
        }
        p.bytes += w.bytes();
        p.queue.push_back(w);
        let _ = self.flush_locked(&mut p);
        Ok(())
    }

    /// Binds the database to one genesis: records `hash` on first use, and refuses another.
    pub fn check_genesis(&self, hash_hex: &str) -> Result<(), StorageError> {
        let stored = self.read(|db| {
            let tx = db.begin_write()?;
            let stored = {
                let mut t = tx.open_table(INFO)?;
                let stored = t.get(GENESIS_HASH)?.map(|v| v.value().to_string());
                if stored.is_none() {
                    t.insert(GENESIS_HASH, hash_hex)?;
                }
                stored
            };
            tx.commit()?;
            Ok(stored)
        })?;
        match stored {
            Some(s) if s != hash_hex => Err(StorageError(format!(
                "this data folder holds the chain of genesis {s}, not {hash_hex}; \
                 use another folder (`home` in the config) or remove the `data` folder to start over"
            ))),
            _ => Ok(()),
        }
    }

    /// The lowest height whose decided block the store may hold (1 unless pruned).
    pub fn earliest_height(&self) -> Result<u64, StorageError> {
        self.read(|db| {
            let r = db.begin_read()?;
            let t = r.open_table(META)?;
            let pruned = t.get(EARLIEST_HEIGHT)?.map(|v| v.value()).unwrap_or(1);
            let first = r.open_table(BLOCKS)?.first()?.map(|(k, _)| k.value());
            Ok(first.map_or(pruned, |f| f.max(pruned)).max(1))
        })
    }

    /// Height up to which the transaction history is written.
    pub fn results_height(&self) -> Result<u64, StorageError> {
        self.read(|db| {
            let r = db.begin_read()?;
            let t = r.open_table(META)?;
            Ok(t.get(RESULTS_HEIGHT)?.map(|v| v.value()).unwrap_or(0))
        })
    }

    /// Records the results of the transactions of decided block `height`.
    pub fn save_results(&self, block: &Block, results: &[TxResult]) -> Result<(), StorageError> {
        let h = block.height().0;
        let rows = block
            .txs
            .iter()
            .zip(results)
            .enumerate()
            .map(|(i, (payload, result))| {
                let hash = sha256(payload);
                let rec = TxRecord {
                    height: h,
                    index: i as u32,
                    hash: hash.to_hex(),
                    tx: payload.clone(),
                    result: result.clone(),
                };
                (i as u32, hash.0, seal(&encode(&rec)))
            })
            .collect();
        self.write(Write::Results { height: h, rows })
    }

    /// The latest `limit` transactions, newest first.
    pub fn transactions(&self, limit: usize) -> Result<Vec<TxRecord>, StorageError> {
        self.read(|db| {
            let r = db.begin_read()?;
            let t = r.open_table(TXS)?;
            let mut out = Vec::new();
            for item in t.iter()?.rev().take(limit) {
                let (k, v) = item?;
                out.push(open_record(&format_args!("transaction {:?}", k.value()), v.value())?);
            }
            Ok(out)
        })
    }

    /// The transactions of decided block `height` with their results, in block order (empty
    /// when the block has none, or its results are not written yet: see
    /// [`Store::results_height`]).
    pub fn transactions_at(&self, height: u64) -> Result<Vec<TxRecord>, StorageError> {
        self.read(|db| {
            let r = db.begin_read()?;
            let t = r.open_table(TXS)?;
            let mut out = Vec::new();
            for item in t.range((height, 0)..=(height, u32::MAX))? {
                let (k, v) = item?;
                out.push(open_record(&format_args!("transaction {:?}", k.value()), v.value())?);
            }
            Ok(out)
        })
    }

    /// The transaction whose SHA-256 is `hash_hex`, if it is in a decided block.
    pub fn transaction_by_hash(&self, hash_hex: &str) -> Result<Option<TxRecord>, StorageError> {
        let Ok(hash) = hex::decode(hash_hex) else {
            return Ok(None);
        };
        self.read(|db| {
            let r = db.begin_read()?;
            let index = r.open_table(TX_INDEX)?;
            let Some(at) = index.get(hash.as_slice())?.map(|v| v.value()) else {
                return Ok(None);
            };
            let t = r.open_table(TXS)?;
            let rec = match t.get(at)? {
                Some(v) => Some(open_record(&format_args!("transaction {at:?}"), v.value())?),
                None => None,
            };
            Ok(rec)
        })
    }

    /// Writes of `height` still waiting in memory, decoded.
    fn pending_wal(&self, height: u64) -> Result<Vec<WalEntry>, StorageError> {
        let p = lock(&self.inner.pending);
        p.queue
            .iter()
            .filter_map(|w| match w {
                Write::Wal { height: h, record } if *h == height => Some(record),
                _ => None,
            })
            .map(|r| open_record(&"a waiting consensus log entry", r).map_err(|e| self.fault(e)))
            .collect()
    }

    fn pending_decided(&self, height: Option<u64>) -> Option<(u64, Vec<u8>)> {
        let p = lock(&self.inner.pending);
        p.queue.iter().rev().find_map(|w| match w {
            Write::Decided { height: h, record } if height.is_none_or(|x| x == *h) => Some((*h, record.clone())),
            _ => None,
        })
    }
}

impl Storage for Store {
    fn append_wal(&mut self, entry: WalEntry) -> Result<(), StorageError> {
        let height = entry.height().0;
        self.write(Write::Wal {
            height,
            record: seal(&encode(&entry)),
        })
    }

    fn wal(&self, height: Height) -> Result<Vec<WalEntry>, StorageError> {
        let mut out = self.read(|db| {
            let r = db.begin_read()?;
            let t = r.open_table(WAL)?;
            let mut out = Vec::new();
            for item in t.range((height.0, 0)..=(height.0, u64::MAX))? {
                let (k, v) = item?;
                out.push(open_record(
                    &format_args!("consensus log entry {:?}", k.value()),
                    v.value(),
                )?);
            }
            Ok(out)
        })?;
        out.extend(self.pending_wal(height.0)?);
        Ok(out)
    }

    fn save_decided(&mut self, block: &Block, commit: &Commit) -> Result<(), StorageError> {
        self.write(Write::Decided {
            height: block.height().0,
            record: seal(&encode(&(block, commit))),
        })
    }

    fn decided(&self, height: Height) -> Result<Option<(Block, Commit)>, StorageError> {
        if let Some((_, record)) = self.pending_decided(Some(height.0)) {
            return open_record(&format_args!("waiting block {height}"), &record)
                .map(Some)
                .map_err(|e| self.fault(e));
        }
        self.read(|db| {
            let r = db.begin_read()?;
            let t = r.open_table(BLOCKS)?;
            match t.get(height.0)? {
                Some(v) => Ok(Some(open_record(&format_args!("block {height}"), v.value())?)),
                None => Ok(None),
            }
        })
    }

    fn last_height(&self) -> Result<Height, StorageError> {
        let waiting = self.pending_decided(None).map_or(0, |(h, _)| h);
        let stored = self.read(|db| {
            let r = db.begin_read()?;
            let t = r.open_table(BLOCKS)?;
            let last = t.last()?.map(|(k, _)| k.value()).unwrap_or(0);
            Ok(last)
        })?;
        Ok(Height(stored.max(waiting)))
    }

    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.write(Write::Snapshot {
            height: snapshot.chain.height.0,
            record: seal(&snapshot.encode()),
        })
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        let waiting = {
            let p = lock(&self.inner.pending);
            p.queue.iter().rev().find_map(|w| match w {
                Write::Snapshot { height, record } => Some((*height, record.clone())),
                _ => None,
            })
        };
        let record = match waiting {
            Some((_, r)) => Some(r),
            None => self.read(|db| {
                let r = db.begin_read()?;
                let t = r.open_table(SNAPSHOTS)?;
                let last = t.last()?.map(|(_, v)| v.value().to_vec());
                Ok(last)
            })?,
        };
        let Some(record) = record else { return Ok(None) };
        let bytes = unseal(&record).map_err(|e| self.fault(damaged(format!("snapshot: {e}"))))?;
        Snapshot::decode(bytes)
            .map(Some)
            .map_err(|e| self.fault(damaged(format!("snapshot: {e}"))))
    }

    fn prune_decided(&mut self, below: Height) -> Result<(), StorageError> {
        self.write(Write::Prune { below: below.0 })
    }

    /// Durable once every waiting write is written; fails (without waiting for the backoff)
    /// while writes fail, so nothing that depends on them is sent.
    fn sync(&mut self) -> Result<(), StorageError> {
        self.flush()
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
        let res = app.execute_block(&block, &vs).unwrap();
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

/// Issue 16: damaged and failing stores give clear errors and safe states, never a panic.
#[cfg(test)]
pub(crate) mod faults {
    use super::*;
    use tendr_core::crypto::PrivateKey;
    use tendr_core::types::*;

    /// A block at `h` with `n` transactions of `size` bytes (not a chain: the store does not
    /// check that).
    /// Snapshots and pruning: blocks, their transaction history and index below the retention
    /// are gone, the newest snapshot survives a reopen, and a node restarts from it (replaying
    /// only the blocks above it) at the same height and app hash as one that replays everything.
    #[test]
    fn snapshots_prune_the_history_and_a_node_restarts_from_them() {
        use tendr_core::chain::ChainState;
        use tendr_core::traits::{Application, Snapshot};
        use tendr_core::ValidatorSet;
        use tendr_kv::KvApp;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db.redb");
        let k = PrivateKey::from_seed(b"v");
        let vs = ValidatorSet::new(vec![(k.public_key(), VotingPower(1))]).unwrap();
        let mut app = KvApp::new("c");
        let genesis = ChainState::genesis("c", vs.clone(), app.initial_app_hash(), TimeMs(1));
        let mut chain = genesis.clone();
        let mut s = Store::open(&p).unwrap();
        for h in 1..=45u64 {
            let txs = vec![format!("k{h}=v{h}").into_bytes()];
            let block: Block = BlockData {
                header: chain.new_header(k.address(), TimeMs(10 + h), &txs),
                txs,
                last_commit: chain.last_commit.clone(),
            }
            .into();
            let commit = Commit {
                height: Height(h),
                round: Round(0),
                block_id: block.id(),
                signatures: vec![],
            };
            let res = app.execute_block(&block, &vs).unwrap();
            s.save_decided(&block, &commit).unwrap();
            s.save_results(&block, &res.tx_results).unwrap();
            chain.advance(&block, &commit, res.app_hash, &res.validator_updates);
            if h % 10 == 0 {
                s.save_snapshot(&Snapshot {
                    chain: chain.clone(),
                    app: app.snapshot().unwrap(),
                })
                .unwrap();
                s.prune_decided(Height(h - 5 + 1)).unwrap();
            }
        }
        s.sync().unwrap();
        drop(s);
        let s = Store::open(&p).unwrap();
        assert_eq!(s.earliest_height().unwrap(), 36);
        assert!(s.decided(Height(35)).unwrap().is_none());
        assert!(s.decided(Height(36)).unwrap().is_some());
        assert!(s.transactions_at(35).unwrap().is_empty());
        assert!(s.transaction_by_hash(&sha256(b"k35=v35").to_hex()).unwrap().is_none());
        assert!(s.transaction_by_hash(&sha256(b"k36=v36").to_hex()).unwrap().is_some());
        let snap = s.snapshot().unwrap().expect("the newest snapshot is kept");
        assert_eq!(snap.chain.height, Height(41));
        assert_eq!(
            snap.chain.encode(),
            ChainState::decode(&snap.chain.encode()).unwrap().encode()
        );
        struct Still;
        impl tendr_core::traits::Clock for Still {
            fn now(&self) -> TimeMs {
                TimeMs(0)
            }
            fn schedule(&mut self, _: TimeMs, _: tendr_core::engine::Timeout) {}
        }
        struct Mute;
        impl tendr_core::traits::Network for Mute {
            fn broadcast(&mut self, _: &Message) {}
            fn send(&mut self, _: PeerId, _: &Message) {}
        }
        // A node started from this store: snapshot at 41, then blocks 41..=45 replayed.
        let node = tendr_core::traits::Node::new(
            tendr_core::EngineConfig::new("c", Default::default()),
            None,
            genesis,
            Still,
            Mute,
            s.clone(),
            KvApp::new("c"),
            Box::new(tendr_core::traits::CachingVerifier::new()),
        )
        .unwrap();
        assert_eq!(node.engine().height(), Height(46));
        assert_eq!(node.engine().chain().app_hash, chain.app_hash);
        assert_eq!(node.app.get("k45"), Some("v45"));
        assert_eq!(
            node.app.get("k3"),
            Some("v3"),
            "state from before the snapshot is restored"
        );
    }

    pub(crate) fn block(h: u64, n: usize, size: usize) -> (Block, Commit) {
        let k = PrivateKey::from_seed(b"v");
        let txs: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("k{h}.{i}={}", "x".repeat(size)).into_bytes())
            .collect();
        let block: Block = BlockData {
            header: Header {
                chain_id: "c".into(),
                height: Height(h),
                time: TimeMs(h),
                prev_block_id: None,
                last_commit_hash: Hash::default(),
                txs_hash: Hash::default(),
                validators_hash: Hash::default(),
                app_hash: Hash::default(),
                proposer: k.address(),
            },
            txs,
            last_commit: None,
        }
        .into();
        let commit = Commit {
            height: Height(h),
            round: Round(0),
            block_id: block.id(),
            signatures: vec![],
        };
        (block, commit)
    }

    fn ok_result(n: usize) -> Vec<TxResult> {
        vec![
            TxResult {
                code: 0,
                log: String::new()
            };
            n
        ]
    }

    /// Everything a node reads from its store, each read either right or a clear error.
    fn read_all(s: &Store, blocks: &[(Block, Commit)]) -> Vec<String> {
        let mut errors = Vec::new();
        let mut check = |r: Result<(), StorageError>| {
            if let Err(e) = r {
                errors.push(e.0);
            }
        };
        check(s.last_height().map(|_| ()));
        for (b, c) in blocks {
            check(s.decided(b.height()).map(|got| {
                if let Some(got) = got {
                    assert_eq!(got, (b.clone(), c.clone()), "a damaged block was read as good");
                }
            }));
        }
        check(s.wal(Height(blocks.len() as u64 + 1)).map(|_| ()));
        check(s.transactions(100_000).map(|_| ()));
        check(s.results_height().map(|_| ()));
        errors
    }

    /// The reproduction: 4 KiB of random bytes at 10%, 25%, 40% of the file and over
    /// its last 32 KiB. Today's store panics inside redb (`entered unreachable code`, from
    /// `Store::decided`); now every open or read is either right or a clear error naming the
    /// damage and the way out.
    #[test]
    fn random_bytes_in_the_file_are_reported_never_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.redb");
        let blocks: Vec<(Block, Commit)> = (1..=300).map(|h| block(h, 3, 200)).collect();
        {
            let mut s = Store::open(&good).unwrap();
            for (b, c) in &blocks {
                s.save_decided(b, c).unwrap();
                s.save_results(b, &ok_result(3)).unwrap();
            }
            s.append_wal(WalEntry::Lock {
                block: block(301, 1, 10).0,
                prevotes: vec![],
            })
            .unwrap();
            s.sync().unwrap();
        }
        let bytes = std::fs::read(&good).unwrap();
        let len = bytes.len() as u64;
        let mut rng = 0x9e3779b97f4a7c15u64;
        let (mut refused, mut reported) = (0, 0);
        for at in [len / 10, len / 4, len * 2 / 5, len.saturating_sub(32 << 10)] {
            for pass in 0..4u64 {
                let mut damaged = bytes.clone();
                let start = (at + pass * 8192).min(len - 4096) as usize;
                for b in &mut damaged[start..start + 4096] {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    *b = rng as u8;
                }
                let p = dir.path().join(format!("bad-{at}-{pass}.redb"));
                std::fs::write(&p, &damaged).unwrap();
                match Store::open(&p) {
                    Err(e) => {
                        refused += 1;
                        assert!(e.0.contains("is damaged") && e.0.contains("re-syncs"), "{e}");
                        assert!(!e.0.contains("another `tendr` process"), "{e}");
                    }
                    Ok(s) => {
                        let errors = read_all(&s, &blocks);
                        for e in &errors {
                            assert!(e.contains("is damaged") || e.contains("cannot"), "{e}");
                        }
                        if !errors.is_empty() {
                            reported += 1;
                            assert!(matches!(s.problem(), Some(StoreProblem::Damaged(_))));
                        }
                    }
                }
            }
        }
        eprintln!("16 damaged copies of a {len}-byte store: {refused} refused at open, {reported} reported on read");
        assert!(refused + reported > 0, "no damage was noticed at all");
    }

    /// A truncated file (the "file truncated") and a file that is not a store at all
    /// say the store is damaged and what to do, not that another process holds it.
    #[test]
    fn a_truncated_or_foreign_file_is_reported_as_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.redb");
        {
            let mut s = Store::open(&p).unwrap();
            for h in 1..=50 {
                let (b, c) = block(h, 2, 100);
                s.save_decided(&b, &c).unwrap();
            }
        }
        let bytes = std::fs::read(&p).unwrap();
        for (what, content) in [
            ("half", bytes[..bytes.len() / 2].to_vec()),
            ("4 KiB", bytes[..4096].to_vec()),
            ("foreign", b"{\"not\": \"a store\"}".repeat(300)),
        ] {
            std::fs::write(&p, &content).unwrap();
            match Store::open(&p) {
                Err(e) => {
                    assert!(e.0.contains("is damaged") && e.0.contains("restore"), "{what}: {e}");
                    assert!(!e.0.contains("another `tendr` process"), "{what}: {e}");
                }
                Ok(s) => {
                    // redb may recover an older state from its second header: then what it
                    // reads is whole, or reported.
                    for h in 1..=50 {
                        if let Err(e) = s.decided(Height(h)) {
                            assert!(e.0.contains("is damaged"), "{what}: {e}");
                        }
                    }
                }
            }
        }
    }

    /// Damage found while running (a record that fails its seal when read): the read is a
    /// clear error, the store reports the damage (so the node is not healthy and does not
    /// sign), and the next open refuses the store.
    #[test]
    fn damage_found_while_running_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.redb");
        let mut s = Store::open(&p).unwrap();
        for h in 1..=5 {
            let (b, c) = block(h, 1, 10);
            s.save_decided(&b, &c).unwrap();
        }
        s.with_db(|db| {
            let tx = db.begin_write()?;
            tx.open_table(BLOCKS)?
                .insert(3, b"\x01not what was written".as_slice())?;
            tx.commit()?;
            Ok(())
        })
        .unwrap();
        assert!(s.decided(Height(2)).unwrap().is_some());
        assert_eq!(s.problem(), None);
        let e = s.decided(Height(3)).unwrap_err().0;
        assert!(e.contains("is damaged (block 3: not a sealed record"), "{e}");
        assert!(matches!(s.problem(), Some(StoreProblem::Damaged(m)) if m.contains("block 3")));
        drop(s);
        let e = Store::open(&p).err().unwrap().0;
        assert!(e.contains("block 3") && e.contains("mv "), "{e}");
    }

    /// A value changed on disk behind redb's back (its page checksum recomputed) is caught by
    /// the seal: the record is refused, not decoded into something else.
    #[test]
    fn a_changed_value_fails_its_seal() {
        let (b, c) = block(1, 1, 10);
        let sealed = seal(&encode(&(&b, &c)));
        assert!(unseal(&sealed).is_ok());
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(unseal(&bad).unwrap_err(), "checksum mismatch");
        assert!(unseal(&sealed[..20]).is_err());
        let e = open_record::<(Block, Commit)>(&"block 1", &bad).unwrap_err();
        assert!(matches!(e, Fault::Damaged(m) if m.contains("block 1")));
    }

    /// A store written by tendr before the seals (format 0: raw values, no marker) is migrated
    /// on open; its blocks, log and history read back the same.
    #[test]
    fn a_format_0_store_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("old.redb");
        let (b, c) = block(1, 2, 10);
        let k = PrivateKey::from_seed(b"v");
        let vote = WalEntry::Vote(Vote {
            vote_type: VoteType::Prevote,
            height: Height(2),
            round: Round(0),
            block_id: None,
            validator: k.address(),
            signature: k.sign(b"x"),
        });
        let rec = TxRecord {
            height: 1,
            index: 0,
            hash: sha256(&b.txs[0]).to_hex(),
            tx: b.txs[0].clone(),
            result: ok_result(1).remove(0),
        };
        {
            let db = Database::create(&p).unwrap();
            let tx = db.begin_write().unwrap();
            {
                tx.open_table(BLOCKS)
                    .unwrap()
                    .insert(1, encode(&(&b, &c)).as_slice())
                    .unwrap();
                tx.open_table(WAL)
                    .unwrap()
                    .insert((2, 0), encode(&vote).as_slice())
                    .unwrap();
                tx.open_table(TXS)
                    .unwrap()
                    .insert((1, 0), encode(&rec).as_slice())
                    .unwrap();
                tx.open_table(META).unwrap().insert(RESULTS_HEIGHT, 1).unwrap();
            }
            tx.commit().unwrap();
        }
        let s = Store::open(&p).unwrap();
        assert_eq!(s.decided(Height(1)).unwrap(), Some((b, c)));
        assert_eq!(s.wal(Height(2)).unwrap(), vec![vote]);
        assert_eq!(s.transactions(10).unwrap(), vec![rec]);
        drop(s);
        // A later format is refused with the reason.
        {
            let db = Database::create(&p).unwrap();
            let tx = db.begin_write().unwrap();
            tx.open_table(META).unwrap().insert(STORE_FORMAT, FORMAT + 1).unwrap();
            tx.commit().unwrap();
        }
        let e = Store::open(&p).err().unwrap().0;
        assert!(e.contains("newer tendr"), "{e}");
    }

    /// A small tmpfs, unmounted on drop; `None` (with the reason printed) where mounting is
    /// not permitted.
    pub(crate) struct Tmpfs(pub PathBuf);

    impl Tmpfs {
        pub(crate) fn mount(name: &str, size: &str) -> Option<Tmpfs> {
            let dir = std::env::temp_dir().join(format!("tendr-tmpfs-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).ok()?;
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&dir)
                .output();
            match out {
                Ok(o) if o.status.success() => Some(Tmpfs(dir)),
                Ok(o) => {
                    eprintln!(
                        "SKIPPED: cannot mount a tmpfs ({}); run as root to test a full disk",
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                    None
                }
                Err(e) => {
                    eprintln!("SKIPPED: cannot run mount ({e})");
                    None
                }
            }
        }

        /// Fills the file system with `filler` until it refuses.
        pub(crate) fn fill(&self) -> PathBuf {
            use std::io::Write;
            let filler = self.0.join("filler");
            let mut f = std::fs::File::create(&filler).unwrap();
            let chunk = vec![0u8; 64 << 10];
            while f.write_all(&chunk).is_ok() {}
            let _ = f.sync_all();
            filler
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A full disk: writes are kept and `sync` fails (so nothing depending on them is sent),
    /// reads still see them, the problem is reported; after space is freed the writes land by
    /// themselves and survive a reopen.
    #[test]
    fn a_full_disk_holds_writes_and_resumes_when_space_returns() {
        let Some(fs) = Tmpfs::mount("store", "4m") else { return };
        let p = fs.0.join("data/tendr.redb");
        let mut s = Store::open(&p).unwrap();
        let blocks: Vec<(Block, Commit)> = (1..=40).map(|h| block(h, 4, 2000)).collect();
        for (b, c) in &blocks[..5] {
            s.save_decided(b, c).unwrap();
        }
        s.sync().unwrap();
        let filler = fs.fill();
        for (b, c) in &blocks[5..] {
            s.save_decided(b, c).unwrap();
            s.save_results(b, &ok_result(4)).unwrap();
        }
        let e = s.sync().unwrap_err().0;
        assert!(e.contains("cannot write") && e.contains("free disk space"), "{e}");
        assert!(
            matches!(s.problem(), Some(StoreProblem::WriteFailing(_))),
            "{:?}",
            s.problem()
        );
        assert_eq!(s.last_height().unwrap(), Height(40));
        assert_eq!(s.decided(Height(40)).unwrap(), Some(blocks[39].clone()));
        std::fs::remove_file(filler).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.flush().is_err() {
            assert!(Instant::now() < deadline, "the writes did not land: {:?}", s.problem());
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(s.problem(), None);
        drop(s);
        let s = Store::open(&p).unwrap();
        assert_eq!(s.last_height().unwrap(), Height(40));
        assert!(read_all(&s, &blocks).is_empty());
        assert_eq!(s.results_height().unwrap(), 40);
    }
}
