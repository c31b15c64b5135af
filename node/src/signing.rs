//! The double-sign guard: `validator_state.json` beside `validator_key.json` holds the last
//! height, round and step this key signed, with the sign bytes and signature (as CometBFT's
//! `priv_validator_state.json`). [`GuardedSigner`] is the engine's [`Signer`]: it refuses to
//! sign below the last signed height/round/step, or something else at the same one, and
//! writes the new state (atomically, fsynced) before the signature exists, so no signature
//! leaves the node that the file does not record.
//!
//! The file lives outside `data/`, so wiping, replacing or restoring an old `data/` cannot
//! make the validator sign a conflicting vote. It also refuses to sign while the store cannot
//! write (a node that cannot write stops signing).
//!
//! At start ([`open_guard`]): a missing file next to a non-empty chain is refused, unless the
//! operator asks to rebuild it from the store (`tendr start --rebuild-signing-state`); an
//! existing file behind the store's consensus log is raised to it.

use crate::error::{CliError, CliResult};
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tendr_core::crypto::{proposal_sign_bytes, vote_sign_bytes, SignRefused, SignStep, SignTarget, Signer};
use tendr_core::engine::WalEntry;
use tendr_core::traits::Storage;
use tendr_core::types::{Address, Height};
use tendr_core::{PrivateKey, PublicKey, Signature};

/// The file name, beside `validator_key.json`.
pub const STATE_FILE: &str = "validator_state.json";

/// What `validator_state.json` holds: the last signed height, round and step (0 before
/// anything was signed; 1 proposal, 2 prevote, 3 precommit), with the sign bytes and the
/// signature of that message (hex; empty when unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignState {
    /// The validator key's address: the state of another key does not count for this one.
    #[serde(default)]
    pub address: String,
    pub height: u64,
    pub round: u32,
    pub step: u8,
    #[serde(default)]
    pub sign_bytes: String,
    #[serde(default)]
    pub signature: String,
}

impl SignState {
    fn at(&self) -> (u64, u32, u8) {
        (self.height, self.round, self.step)
    }
}

fn at_tuple(at: SignTarget) -> (u64, u32, u8) {
    (at.height.0, at.round.0, at.step as u8)
}

fn describe((h, r, s): (u64, u32, u8)) -> String {
    let step = match s {
        0 => "nothing signed yet",
        1 => "proposal",
        2 => "prevote",
        3 => "precommit",
        _ => "unknown step",
    };
    format!("height {h} round {r} {step}")
}

/// Whether `at` with sign bytes `bytes` may be signed after `last`: `Ok(None)` to sign anew,
/// `Ok(Some(sig))` for the very message signed last (its signature again), `Err` why not.
pub fn check(last: &SignState, at: SignTarget, bytes: &[u8]) -> Result<Option<Signature>, String> {
    let new = at_tuple(at);
    match new.cmp(&last.at()) {
        std::cmp::Ordering::Greater => Ok(None),
        std::cmp::Ordering::Equal if !last.sign_bytes.is_empty() && last.sign_bytes == hex::encode(bytes) => {
            let sig = hex::decode(&last.signature).ok().and_then(|b| <[u8; 64]>::try_from(b).ok());
            match sig {
                Some(s) => Ok(Some(Signature(s))),
                None => Ok(None), // the same message: signing it again gives the same bytes
            }
        }
        std::cmp::Ordering::Equal => Err(format!(
            "this key already signed a different message at {} (validator_state.json); signing this one would be a double sign",
            describe(new)
        )),
        std::cmp::Ordering::Less => Err(format!(
            "{} is below the last signed {} (validator_state.json); signing it could conflict with what this key signed before",
            describe(new),
            describe(last.at())
        )),
    }
}

/// Writes `state` to `path` atomically and durably ([`crate::keys::write_private`]).
pub fn write_state(path: &Path, state: &SignState) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(state).expect("the signing state serialises");
    crate::keys::write_private(path, &text)
}

/// Reads `validator_state.json`; `Ok(None)` when it does not exist.
pub fn read_state(path: &Path) -> CliResult<Option<SignState>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = crate::config::read_file("signing state", path)?;
    crate::config::parse_json("signing state", path, &text)
        .map(Some)
        .map_err(|e| {
            CliError::input(format!(
                "{}; it records what this validator signed last, so the node will not start without it: \
                 restore it from a backup, or see `tendr start --help` (--rebuild-signing-state)",
                e.message
            ))
        })
}

/// Why the node should not sign now (e.g. its store cannot write), if anything.
pub type Blocker = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// The guard's state, shared between the signer (in the engine) and the status.
pub struct Guard {
    path: PathBuf,
    state: Mutex<SignState>,
    blocker: Blocker,
    /// The last refusal since the last signature: what, why, and when a refusal was last
    /// logged as a warning.
    refusal: Mutex<Option<(SignTarget, String, std::time::Instant)>>,
}

/// While signatures keep being refused, a warning at most this often (the rest at debug).
const REFUSAL_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

impl Guard {
    /// A guard over the state file at `path`, currently holding `state`.
    pub fn new(path: PathBuf, state: SignState, blocker: Blocker) -> Arc<Guard> {
        Arc::new(Guard {
            path,
            state: Mutex::new(state),
            blocker,
            refusal: Mutex::new(None),
        })
    }

    /// The last signed state, as on disk.
    pub fn state(&self) -> SignState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The last refusal to sign, for `tendr status`.
    pub fn last_refusal(&self) -> Option<String> {
        let r = self.refusal.lock().unwrap_or_else(|p| p.into_inner());
        r.as_ref()
            .map(|(at, why, _)| format!("refused to sign at {}: {why}", describe(at_tuple(*at))))
    }

    fn refuse(&self, at: SignTarget, why: String) -> SignRefused {
        let mut r = self.refusal.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let warned = match r.as_ref() {
            Some((_, _, t)) if now.duration_since(*t) < REFUSAL_WARN_EVERY => {
                tracing::debug!(height = at.height.0, round = at.round.0, step = ?at.step, "not signing: {why}");
                *t
            }
            _ => {
                tracing::warn!(height = at.height.0, round = at.round.0, step = ?at.step, "not signing: {why}");
                now
            }
        };
        *r = Some((at, why.clone(), warned));
        SignRefused(why)
    }

    fn signed(&self, at: SignTarget) {
        let mut r = self.refusal.lock().unwrap_or_else(|p| p.into_inner());
        if r.take().is_some() {
            tracing::info!(height = at.height.0, round = at.round.0, step = ?at.step, "signing again");
        }
    }

    /// Signs `msg` at `at` with `key` if the state allows it, recording it durably first.
    fn sign(&self, key: &PrivateKey, at: SignTarget, msg: &[u8]) -> Result<Signature, SignRefused> {
        if let Some(why) = (self.blocker)() {
            return Err(self.refuse(at, format!("the store cannot be trusted to record it: {why}")));
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match check(&state, at, msg) {
            Err(why) => return Err(self.refuse(at, why)),
            Ok(Some(sig)) => return Ok(sig),
            Ok(None) => {}
        }
        let signature = key.sign(msg);
        let next = SignState {
            address: key.address().to_string(),
            height: at.height.0,
            round: at.round.0,
            step: at.step as u8,
            sign_bytes: hex::encode(msg),
            signature: hex::encode(signature.0),
        };
        if let Err(e) = write_state(&self.path, &next) {
            return Err(self.refuse(at, format!("cannot write `{}`: {e}", self.path.display())));
        }
        *state = next;
        drop(state);
        self.signed(at);
        Ok(signature)
    }
}

/// The validator key behind the [`Guard`]: the engine's signer on a real node.
pub struct GuardedSigner {
    key: PrivateKey,
    guard: Arc<Guard>,
}

impl GuardedSigner {
    /// `key`, signing only what `guard` allows.
    pub fn new(key: PrivateKey, guard: Arc<Guard>) -> Self {
        GuardedSigner { key, guard }
    }
}

impl Signer for GuardedSigner {
    fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }
    fn address(&self) -> Address {
        self.key.address()
    }
    fn sign(&self, at: SignTarget, msg: &[u8]) -> Result<Signature, SignRefused> {
        self.guard.sign(&self.key, at, msg)
    }
}

/// The newest message our key signed according to the store: its own entries in the
/// consensus log of the height after the last decided one, else "everything up to the last
/// decided height" (the engine never signs at a decided height again). `None`: an empty store.
pub fn state_from_store(store: &Store, chain_id: &str, me: Address) -> CliResult<Option<SignState>> {
    let fail = |e: tendr_core::traits::StorageError| CliError::failure(e.to_string());
    let last = store.last_height().map_err(fail)?;
    let mut best: Option<SignState> = (last.0 > 0).then(|| SignState {
        address: me.to_string(),
        height: last.0,
        round: u32::MAX,
        step: SignStep::Precommit as u8,
        ..SignState::default()
    });
    for e in store.wal(Height(last.0 + 1)).map_err(fail)? {
        let (at, bytes, sig) = match &e {
            WalEntry::Vote(v) if v.validator == me => (
                (v.height.0, v.round.0, SignStep::of_vote(v.vote_type) as u8),
                vote_sign_bytes(chain_id, v.vote_type, v.height, v.round, v.block_id),
                v.signature,
            ),
            WalEntry::Proposal(p) => (
                (p.height.0, p.round.0, SignStep::Proposal as u8),
                proposal_sign_bytes(chain_id, p.height, p.round, p.pol_round, p.block.id()),
                p.signature,
            ),
            _ => continue,
        };
        if best.as_ref().is_none_or(|b| b.at() < at) {
            best = Some(SignState {
                address: me.to_string(),
                height: at.0,
                round: at.1,
                step: at.2,
                sign_bytes: hex::encode(&bytes),
                signature: hex::encode(sig.0),
            });
        }
    }
    Ok(best)
}

/// Opens the signing state beside `key_path` for a node about to start with `store`:
/// creates it for a key that has signed nothing in an empty store, refuses a missing file
/// next to a non-empty chain (unless `rebuild`), and raises a file that is behind the store.
pub fn open_guard(
    key_path: &Path,
    key: &PrivateKey,
    chain_id: &str,
    store: &Store,
    rebuild: bool,
    blocker: Blocker,
) -> CliResult<Arc<Guard>> {
    let path = key_path.with_file_name(STATE_FILE);
    let from_store = state_from_store(store, chain_id, key.address())?;
    let me = key.address().to_string();
    let on_disk = read_state(&path)?.filter(|s| {
        let theirs = s.address.is_empty() || s.address == me;
        if !theirs {
            tracing::warn!(
                "{} is the state of another key ({}), not of {me} (a replaced key?); ignoring it",
                path.display(),
                s.address
            );
        }
        theirs
    });
    let state = match (on_disk, from_store) {
        (Some(s), Some(f)) if f.at() > s.at() => {
            tracing::warn!(
                "{} is behind the store (it says {}, the store {}); raising it",
                path.display(),
                describe(s.at()),
                describe(f.at())
            );
            f
        }
        (Some(s), f) => {
            let stored = f.map_or(0, |f| f.height);
            if s.height > stored + 1 {
                // An emptied, wiped or older data folder: say so instead of re-syncing silently.
                tracing::warn!(
                    "this validator signed up to {} ({}), but the store holds the chain only up to height {stored}: \
                     the data folder was emptied, wiped or replaced by an older one. The node re-syncs from its \
                     peers and signs nothing until it is past what it signed before",
                    describe(s.at()),
                    path.display()
                );
            }
            return Ok(Guard::new(path, s, blocker));
        }
        (None, None) => SignState {
            address: me,
            ..SignState::default()
        },
        (None, Some(f)) if rebuild => {
            tracing::warn!("{} rebuilt from the store: {}", path.display(), describe(f.at()));
            f
        }
        (None, Some(f)) => {
            return Err(CliError::input(format!(
                "signing state `{}` is missing, but this node's store holds a chain (up to {}): the file records \
                 the last vote this validator key signed, and without it the node could sign a second, conflicting \
                 vote (a double sign, which can get the validator slashed). Restore the file from a backup. If it \
                 was never there (a tendr before 0.1 wrote none) or you are sure this key has signed nothing beyond \
                 what this store holds (the key is not in use on any other machine or with another copy of the \
                 data folder), rebuild it from the store: tendr start --rebuild-signing-state",
                path.display(),
                describe(f.at())
            )));
        }
    };
    write_state(&path, &state)
        .map_err(|e| CliError::failure(format!("signing state `{}`: cannot write it: {e}", path.display())))?;
    Ok(Guard::new(path, state, blocker))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tendr_core::types::{Round, VoteType};

    fn at(h: u64, r: u32, step: SignStep) -> SignTarget {
        SignTarget {
            height: Height(h),
            round: Round(r),
            step,
        }
    }

    fn vote_bytes(h: u64, r: u32, t: VoteType, id: u8) -> Vec<u8> {
        vote_sign_bytes(
            "c",
            t,
            Height(h),
            Round(r),
            (id > 0).then_some(tendr_core::Hash([id; 32])),
        )
        .to_vec()
    }

    /// The rules, as CometBFT's: forward only; at the same height/round/step only the very
    /// same message (its signature again).
    #[test]
    fn signs_forward_only_and_the_same_message_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let key = PrivateKey::from_seed(b"g");
        let guard = Guard::new(path.clone(), SignState::default(), Box::new(|| None));
        let s = GuardedSigner::new(key.clone(), guard.clone());
        let a = vote_bytes(5, 0, VoteType::Prevote, 1);
        let sig = s.sign(at(5, 0, SignStep::Prevote), &a).unwrap();
        assert_eq!(sig, key.sign(&a));
        let on_disk = read_state(&path).unwrap().unwrap();
        assert_eq!((on_disk.height, on_disk.round, on_disk.step), (5, 0, 2));
        assert_eq!(on_disk.sign_bytes, hex::encode(&a));
        // The same vote again: the same signature.
        assert_eq!(s.sign(at(5, 0, SignStep::Prevote), &a).unwrap(), sig);
        // Another value at the same step: refused.
        let b = vote_bytes(5, 0, VoteType::Prevote, 2);
        let e = s.sign(at(5, 0, SignStep::Prevote), &b).unwrap_err();
        assert!(e.0.contains("double sign"), "{e}");
        // Lower: refused; the file is unchanged.
        let e = s
            .sign(at(4, 9, SignStep::Precommit), &vote_bytes(4, 9, VoteType::Precommit, 1))
            .unwrap_err();
        assert!(e.0.contains("below the last signed height 5 round 0 prevote"), "{e}");
        assert_eq!(read_state(&path).unwrap().unwrap(), on_disk);
        assert!(guard.last_refusal().unwrap().contains("height 4 round 9 precommit"));
        // Forward: signed and recorded.
        let c = vote_bytes(5, 0, VoteType::Precommit, 0);
        s.sign(at(5, 0, SignStep::Precommit), &c).unwrap();
        assert_eq!(read_state(&path).unwrap().unwrap().step, 3);
    }

    /// A node that cannot write stops signing: a blocked guard, or a state file that cannot
    /// be written, refuses (and nothing is recorded as signed).
    #[test]
    fn cannot_record_means_cannot_sign() {
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::from_seed(b"g");
        let blocked = Guard::new(
            dir.path().join(STATE_FILE),
            SignState::default(),
            Box::new(|| Some("disk full".into())),
        );
        let e = GuardedSigner::new(key.clone(), blocked)
            .sign(at(1, 0, SignStep::Prevote), b"x")
            .unwrap_err();
        assert!(e.0.contains("disk full"), "{e}");
        let unwritable = Guard::new(
            dir.path().join("no/such/folder").join(STATE_FILE),
            SignState::default(),
            Box::new(|| None),
        );
        let e = GuardedSigner::new(key, unwritable.clone())
            .sign(at(1, 0, SignStep::Prevote), b"x")
            .unwrap_err();
        assert!(e.0.contains("cannot write"), "{e}");
        assert_eq!(unwritable.state(), SignState::default());
    }

    /// At start: an empty store creates the file; a missing file next to a chain is refused
    /// with the way out; `--rebuild-signing-state` takes the store's log; a file behind the
    /// store is raised; a wiped store does not lower the file.
    #[test]
    fn start_checks() {
        use tendr_core::types::Vote;
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("validator_key.json");
        let state_path = dir.path().join(STATE_FILE);
        let key = PrivateKey::from_seed(b"g");
        let mut store = Store::open(&dir.path().join("data/tendr.redb")).unwrap();
        let none = || -> Blocker { Box::new(|| None) };
        let g = open_guard(&key_path, &key, "c", &store, false, none()).unwrap();
        assert_eq!((g.state().height, g.state().step), (0, 0));
        assert_eq!(g.state().address, key.address().to_string());
        assert!(state_path.exists());
        // The store gets a decided block and our prevote at height 2.
        let (b, c) = crate::store::faults::block(1, 1, 10);
        store.save_decided(&b, &c).unwrap();
        let bytes = vote_sign_bytes("c", VoteType::Prevote, Height(2), Round(1), None);
        let v = Vote {
            vote_type: VoteType::Prevote,
            height: Height(2),
            round: Round(1),
            block_id: None,
            validator: key.address(),
            signature: key.sign(&bytes),
        };
        store.append_wal(WalEntry::Vote(v)).unwrap();
        // The file (at 0) is behind: raised to the store's prevote.
        let g = open_guard(&key_path, &key, "c", &store, false, none()).unwrap();
        assert_eq!((g.state().height, g.state().round, g.state().step), (2, 1, 2));
        assert_eq!(g.state().sign_bytes, hex::encode(&bytes));
        // Missing next to a chain: refused, with the way out.
        std::fs::remove_file(&state_path).unwrap();
        let e = open_guard(&key_path, &key, "c", &store, false, none()).err().unwrap();
        assert!(
            e.message.contains("is missing") && e.message.contains("--rebuild-signing-state"),
            "{}",
            e.message
        );
        assert!(!state_path.exists());
        let g = open_guard(&key_path, &key, "c", &store, true, none()).unwrap();
        assert_eq!((g.state().height, g.state().step), (2, 2));
        // A wiped store does not lower it.
        drop(store);
        std::fs::remove_dir_all(dir.path().join("data")).unwrap();
        let store = Store::open(&dir.path().join("data/tendr.redb")).unwrap();
        let g = open_guard(&key_path, &key, "c", &store, false, none()).unwrap();
        assert_eq!((g.state().height, g.state().round, g.state().step), (2, 1, 2));
        // The state of another key (the key was replaced, `init --force`) does not bind this
        // one: with an empty store it starts afresh.
        let other = PrivateKey::from_seed(b"other");
        let g = open_guard(&key_path, &other, "c", &store, false, none()).unwrap();
        assert_eq!(
            (g.state().height, g.state().address.clone()),
            (0, other.address().to_string())
        );
        let g = open_guard(&key_path, &key, "c", &store, false, none()).unwrap();
        assert_eq!(g.state().height, 0, "the file now holds the other key's state");
        // A damaged file is refused, not replaced.
        std::fs::write(&state_path, "{\"height\": \"x\"}").unwrap();
        let e = open_guard(&key_path, &key, "c", &store, false, none()).err().unwrap();
        assert!(e.message.contains("restore it from a backup"), "{}", e.message);
    }
}
