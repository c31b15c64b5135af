//! FinalizeBlock's results per height, kept beside the store (`data/abci_results.log`), so
//! that a restarted node can re-execute its stored blocks against an application that already
//! has them: what the application answered then is read from here instead of asking it twice.
//!
//! Format: records appended in height order, each `len: u32 LE | postcard(Record) | the first
//! 4 bytes of SHA-256(postcard)`. A record cut short or failing its checksum (a crash while
//! appending) ends the log: it is cut there when opened.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use tendr_core::crypto::sha256;
use tendr_core::traits::ExecResult;
use tendr_core::types::Hash;

/// Longest record read back (a block's results; a tendr block is far smaller).
const MAX_RECORD_BYTES: u32 = 64 << 20;

#[derive(Serialize, Deserialize)]
struct Record {
    height: u64,
    block_id: Hash,
    result: ExecResult,
}

/// What the log held up to some height: the block id and results per height.
pub type Kept = BTreeMap<u64, (Hash, ExecResult)>;

/// The open log. How to use it: [`ResultsLog::open`] once, [`ResultsLog::truncate_after`] to
/// forget heights the application lost, [`ResultsLog::append`] after every FinalizeBlock
/// (before its Commit).
pub struct ResultsLog {
    file: File,
    path: PathBuf,
    /// Where each kept height's record starts.
    offsets: BTreeMap<u64, u64>,
    end: u64,
}

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("ABCI results log `{}`: {e}", path.display())
}

impl ResultsLog {
    /// Opens (or creates) the log at `path` and reads it: the records in height order, cut at
    /// the first damaged one.
    pub fn open(path: &Path) -> Result<(ResultsLog, Kept), String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(path, e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| err(path, e))?;
        let mut kept = Kept::new();
        let mut offsets = BTreeMap::new();
        let mut r = BufReader::new(file.try_clone().map_err(|e| err(path, e))?);
        let mut end = 0u64;
        while let Some((rec, len)) = read_record(&mut r) {
            if kept.last_key_value().is_some_and(|(h, _)| *h + 1 != rec.height) {
                break; // not the next height: written by something else; cut here
            }
            offsets.insert(rec.height, end);
            kept.insert(rec.height, (rec.block_id, rec.result));
            end += len;
        }
        let mut log = ResultsLog {
            file,
            path: path.to_path_buf(),
            offsets,
            end,
        };
        log.file.set_len(end).map_err(|e| err(path, e))?;
        log.file.seek(SeekFrom::End(0)).map_err(|e| err(path, e))?;
        Ok((log, kept))
    }

    /// Forgets the records above `height` (the application does not have those blocks).
    pub fn truncate_after(&mut self, height: u64) -> Result<(), String> {
        let Some((_, &at)) = self.offsets.range(height + 1..).next() else {
            return Ok(());
        };
        self.file.set_len(at).map_err(|e| err(&self.path, e))?;
        self.file.sync_data().map_err(|e| err(&self.path, e))?;
        self.offsets.split_off(&(height + 1));
        self.end = at;
        Ok(())
    }

    /// Appends the results of block `height` and makes them durable.
    pub fn append(&mut self, height: u64, block_id: Hash, result: &ExecResult) -> Result<(), String> {
        self.truncate_after(height.saturating_sub(1))?;
        let rec = Record {
            height,
            block_id,
            result: result.clone(),
        };
        let body = postcard::to_allocvec(&rec).map_err(|e| err(&self.path, e))?;
        let mut bytes = Vec::with_capacity(body.len() + 8);
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes.extend_from_slice(&sha256(&body).0[..4]);
        self.file.write_all(&bytes).map_err(|e| err(&self.path, e))?;
        self.file.sync_data().map_err(|e| err(&self.path, e))?;
        self.offsets.insert(height, self.end);
        self.end += bytes.len() as u64;
        Ok(())
    }
}

/// The next whole, intact record and its length in bytes; `None` at the end or at damage.
fn read_record(r: &mut impl Read) -> Option<(Record, u64)> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).ok()?;
    let len = u32::from_le_bytes(len);
    if len > MAX_RECORD_BYTES {
        return None;
    }
    let mut body = Vec::new();
    r.by_ref().take(u64::from(len)).read_to_end(&mut body).ok()?;
    let mut sum = [0u8; 4];
    r.read_exact(&mut sum).ok()?;
    if body.len() != len as usize || sha256(&body).0[..4] != sum {
        return None;
    }
    let rec = postcard::from_bytes(&body).ok()?;
    Some((rec, 4 + u64::from(len) + 4))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tendr_core::traits::TxResult;

    fn result(n: u8) -> ExecResult {
        ExecResult {
            app_hash: Hash([n; 32]),
            tx_results: vec![TxResult {
                code: n.into(),
                log: format!("tx {n}"),
            }],
            validator_updates: vec![],
        }
    }

    #[test]
    fn records_survive_reopening_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data/abci_results.log");
        let (mut log, kept) = ResultsLog::open(&p).unwrap();
        assert!(kept.is_empty());
        for h in 1..=3u8 {
            log.append(h.into(), Hash([h + 100; 32]), &result(h)).unwrap();
        }
        drop(log);
        // A crash in the middle of the fourth record.
        let whole = std::fs::metadata(&p).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(&[40, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);
        let (mut log, kept) = ResultsLog::open(&p).unwrap();
        assert_eq!(kept.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(kept[&2], (Hash([102; 32]), result(2)));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), whole, "the torn record is cut");
        // The application lost height 3: it is forgotten and written again.
        log.truncate_after(2).unwrap();
        log.append(3, Hash([7; 32]), &result(7)).unwrap();
        drop(log);
        let (_, kept) = ResultsLog::open(&p).unwrap();
        assert_eq!(kept[&3], (Hash([7; 32]), result(7)));
        assert_eq!(kept.len(), 3);
    }

    #[test]
    fn a_damaged_record_ends_the_log_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abci_results.log");
        let (mut log, _) = ResultsLog::open(&p).unwrap();
        log.append(1, Hash([1; 32]), &result(1)).unwrap();
        log.append(2, Hash([2; 32]), &result(2)).unwrap();
        drop(log);
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff; // inside record 2
        std::fs::write(&p, &bytes).unwrap();
        let (_, kept) = ResultsLog::open(&p).unwrap();
        assert_eq!(kept.keys().copied().collect::<Vec<_>>(), vec![1]);
        // Hostile bytes: an answer, never a panic.
        for junk in [
            &[0xff_u8; 3][..],
            &[0xff; 4],
            &[255, 255, 255, 127, 0],
            &[1, 0, 0, 0, 9, 9, 9, 9, 9],
        ] {
            std::fs::write(&p, junk).unwrap();
            let (_, kept) = ResultsLog::open(&p).unwrap();
            assert!(kept.is_empty());
        }
    }
}
