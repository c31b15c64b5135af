//! A Byzantine validator on the real network, for tests only: built with the `byzantine`
//! feature (`cargo build --features byzantine`), never in the default binary, and chosen at
//! start with `TENDR_BYZANTINE=<behaviour>,...` (see [`Behaviour`]).
//!
//! It is a small wrapper around an honest node, as the simulator's adversaries are: the
//! engine underneath stays honest (it persists, counts votes, follows the chain), and
//! [`Byzantine`] wraps its store. Every message the engine signs is appended to the consensus
//! log just before the engine sends it; at that moment the wrapper sends, over the same QUIC
//! transport, what a Byzantine validator would add: a second proposal, a conflicting vote,
//! a copy with a broken signature, an old message again, or (from a task of its own) a flood.
//! The honest message still goes out afterwards.
//!
//! What it does not do: lie about its identity (the transport proves the node key) or corrupt
//! the frames themselves (`tendr-net`'s `attacks` test sends raw garbage and oversized frames).

use crate::error::{CliError, CliResult};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tendr_core::crypto::proposal_sign_bytes;
use tendr_core::engine::WalEntry;
use tendr_core::traits::{Network, Snapshot, Storage, StorageError};
use tendr_core::types::{Block, Commit, Hash, Height, Message, Proposal, Round, TimeMs, Vote, VoteType};
use tendr_core::{PrivateKey, Signature};
use tendr_net::NetHandle;
use tendr_sim::adversary::{corrupt, resign};

/// The environment variable naming the behaviours (comma-separated).
pub const ENV: &str = "TENDR_BYZANTINE";
/// Old messages kept for replay.
const HISTORY: usize = 256;
/// The flood: this many forged votes every [`FLOOD_EVERY`] (50,000 a second at most; the
/// transport's per-peer queues drop what does not fit).
const FLOOD_BURST: u64 = 500;
const FLOOD_EVERY: Duration = Duration::from_millis(10);

/// One way to misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// A second, different proposal for each of its own, and a conflicting vote (another
    /// value, or nil) for each of its prevotes and precommits: double votes.
    Equivocate,
    /// A copy of each of its proposals and votes with a broken signature.
    BadSignatures,
    /// Each of its messages is followed by one of its older ones again.
    Replay,
    /// Forged votes (broken signatures, random values) for the current height, 50,000 a second.
    Flood,
    /// Every decided block it serves to a peer that catches up (block sync or state sync)
    /// carries one transaction more, behind the unchanged header and commit.
    ForgeBlocks,
}

impl Behaviour {
    const ALL: [(&'static str, Behaviour); 5] = [
        ("equivocate", Behaviour::Equivocate),
        ("bad-signatures", Behaviour::BadSignatures),
        ("replay", Behaviour::Replay),
        ("flood", Behaviour::Flood),
        ("forge-blocks", Behaviour::ForgeBlocks),
    ];

    /// Parses `TENDR_BYZANTINE`'s value; the error names the bad word and the good ones.
    pub fn parse_list(text: &str) -> Result<Vec<Behaviour>, String> {
        let mut out = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let b = Self::ALL
                .iter()
                .find(|(n, _)| *n == word)
                .map(|(_, b)| *b)
                .ok_or_else(|| {
                    let names: Vec<&str> = Self::ALL.iter().map(|(n, _)| *n).collect();
                    format!("{ENV}: `{word}` is not a behaviour; use some of {}", names.join(", "))
                })?;
            if !out.contains(&b) {
                out.push(b);
            }
        }
        Ok(out)
    }
}

/// The behaviours `TENDR_BYZANTINE` asks for (none when it is unset).
pub fn from_env() -> CliResult<Vec<Behaviour>> {
    match std::env::var(ENV) {
        Ok(v) => Behaviour::parse_list(&v).map_err(CliError::input),
        Err(_) => Ok(Vec::new()),
    }
}

/// A store wrapper that makes its node Byzantine (see the module's doc). With no behaviours
/// it only passes through.
pub struct Byzantine<S> {
    inner: S,
    net: NetHandle,
    key: Option<PrivateKey>,
    chain_id: String,
    behaviours: Vec<Behaviour>,
    history: VecDeque<Message>,
    /// A small seeded stream (splitmix64) for replay choices and conflicting values.
    rng: u64,
    /// The height the node is deciding (from what it signs and stores), for the flood task.
    height: Arc<AtomicU64>,
}

impl<S: Storage> Byzantine<S> {
    /// Wraps `inner`; starts the flood task (on the current tokio runtime) if asked.
    pub fn new(inner: S, net: NetHandle, key: Option<PrivateKey>, chain_id: &str, behaviours: Vec<Behaviour>) -> Self {
        let height = Arc::new(AtomicU64::new(0));
        if let (Some(k), true) = (&key, behaviours.contains(&Behaviour::Flood)) {
            tokio::spawn(flood(net.clone(), k.address(), height.clone()));
        }
        if !behaviours.is_empty() {
            tracing::warn!(
                ?behaviours,
                "BYZANTINE TEST BUILD: this validator misbehaves on purpose ({ENV}); never run it on a real network"
            );
        }
        Byzantine {
            inner,
            net,
            key,
            chain_id: chain_id.to_string(),
            behaviours,
            history: VecDeque::new(),
            rng: 0x9e37_79b9_7f4a_7c15,
            height,
        }
    }

    fn next(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        splitmix(self.rng)
    }

    /// What goes out before the honest `msg`, which the engine signed and is about to send.
    fn misbehave(&mut self, key: &PrivateKey, msg: Message) {
        if let Some(h) = msg.height() {
            self.height.fetch_max(h.0, Ordering::Relaxed);
        }
        for b in self.behaviours.clone() {
            let extra = match b {
                Behaviour::Equivocate => Some(self.conflicting(key, &msg)),
                Behaviour::BadSignatures => Some(corrupt(msg.clone())),
                Behaviour::Replay if !self.history.is_empty() => {
                    let i = self.next() % self.history.len() as u64;
                    Some(self.history[i as usize].clone())
                }
                Behaviour::Replay | Behaviour::Flood | Behaviour::ForgeBlocks => None,
            };
            if let Some(m) = extra {
                self.net.broadcast(&m);
            }
        }
        if self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(msg);
    }

    /// The same step signed for something else: a proposal of a block one millisecond
    /// younger, a vote for nil instead of a block, or for a random block instead of nil.
    fn conflicting(&mut self, key: &PrivateKey, msg: &Message) -> Message {
        match msg {
            Message::Proposal(p) => {
                let mut block: Block = p.block.clone();
                block.make_mut().header.time = TimeMs(block.header.time.0 + 1);
                let bytes = proposal_sign_bytes(&self.chain_id, p.height, p.round, p.pol_round, block.id());
                Message::Proposal(Box::new(Proposal {
                    block,
                    signature: key.sign(&bytes),
                    ..Proposal::clone(p)
                }))
            }
            Message::Vote(v) => {
                let value = match v.block_id {
                    Some(_) => None,
                    None => Some(self.random_hash()),
                };
                Message::Vote(resign(key, &self.chain_id, v, value))
            }
            m => m.clone(),
        }
    }

    fn random_hash(&mut self) -> Hash {
        let mut h = [0u8; 32];
        for c in h.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        Hash(h)
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Forged prevotes in our name for the height we are deciding: each costs the receiver a
/// signature check and fails it. Runs until the process ends.
async fn flood(net: NetHandle, us: tendr_core::types::Address, height: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(FLOOD_EVERY);
    let mut n = 0u64;
    loop {
        tick.tick().await;
        let h = Height(height.load(Ordering::Relaxed).max(1));
        let mut net = net.clone();
        for _ in 0..FLOOD_BURST {
            n += 1;
            let mut id = [0u8; 32];
            id[..8].copy_from_slice(&splitmix(n).to_le_bytes());
            let mut sig = [0u8; 64];
            sig[..8].copy_from_slice(&splitmix(n ^ 1).to_le_bytes());
            net.broadcast(&Message::Vote(Vote {
                vote_type: VoteType::Prevote,
                height: h,
                round: Round(0),
                block_id: Some(Hash(id)),
                validator: us,
                signature: Signature(sig),
            }));
        }
    }
}

impl<S: Storage> Storage for Byzantine<S> {
    fn append_wal(&mut self, entry: WalEntry) -> Result<(), StorageError> {
        let signed = match &entry {
            WalEntry::Proposal(p) => Some(Message::Proposal(p.clone())),
            WalEntry::Vote(v) => Some(Message::Vote(v.clone())),
            WalEntry::Lock { .. } => None,
        };
        self.inner.append_wal(entry)?;
        if let (Some(m), Some(k)) = (signed, self.key.clone()) {
            if !self.behaviours.is_empty() {
                self.misbehave(&k, m);
            }
        }
        Ok(())
    }
    fn wal(&self, height: Height) -> Result<Vec<WalEntry>, StorageError> {
        self.inner.wal(height)
    }
    fn save_decided(&mut self, block: &Block, commit: &Commit) -> Result<(), StorageError> {
        self.height.fetch_max(block.height().0 + 1, Ordering::Relaxed);
        self.inner.save_decided(block, commit)
    }
    fn decided(&self, height: Height) -> Result<Option<(Block, Commit)>, StorageError> {
        let found = self.inner.decided(height)?;
        if !self.behaviours.contains(&Behaviour::ForgeBlocks) {
            return Ok(found);
        }
        Ok(found.map(|(mut block, commit)| {
            block.make_mut().txs.push(b"forged=by-a-byzantine-server".to_vec());
            (block, commit)
        }))
    }
    fn last_height(&self) -> Result<Height, StorageError> {
        self.inner.last_height()
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        self.inner.sync()
    }
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        self.inner.save_snapshot(snapshot)
    }
    fn snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        self.inner.snapshot()
    }
    fn prune_decided(&mut self, below: Height) -> Result<(), StorageError> {
        self.inner.prune_decided(below)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaviours_parse_and_unknown_ones_are_named() {
        assert_eq!(
            Behaviour::parse_list("equivocate, replay,equivocate").unwrap(),
            vec![Behaviour::Equivocate, Behaviour::Replay]
        );
        assert_eq!(Behaviour::parse_list("").unwrap(), vec![]);
        let e = Behaviour::parse_list("flood,lie").unwrap_err();
        assert!(e.contains("`lie`") && e.contains("bad-signatures"), "{e}");
    }
}
