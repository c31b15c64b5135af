//! The consensus types: heights, rounds, blocks, proposals, votes, commits, evidence.
//!
//! Every integer that is persisted or sent has a fixed width (no `usize`).

use crate::crypto::{sha256, Signature};
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! newtype {
    ($(#[$m:meta])* $name:ident($inner:ty)) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub $inner);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

newtype!(
    /// A consensus instance; the first block has height 1.
    Height(u64)
);
newtype!(
    /// A round within a height; rounds start at 0. The paper's `-1` is `Option::None`.
    Round(u32)
);
newtype!(
    /// Voting power of a validator. Totals are capped by `limits::MAX_TOTAL_VOTING_POWER`.
    VotingPower(u64)
);
newtype!(
    /// Position of a validator in its (address-sorted) set.
    ValidatorIndex(u16)
);
newtype!(
    /// Milliseconds: virtual in the simulator, since the Unix epoch in the real node.
    TimeMs(u64)
);

impl Height {
    pub fn next(self) -> Height {
        Height(self.0 + 1)
    }
}

impl Round {
    pub fn next(self) -> Round {
        Round(self.0.saturating_add(1))
    }
}

/// A SHA-256 digest. Encoded as a byte string (length-checked on decode, see `crypto`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Hash(pub [u8; 32]);

/// Byte order (as `[u8; N]` compares), computed on big-endian integers: no `memcmp` call in
/// the binary searches and tree lookups on the vote path.
macro_rules! ord_by_words {
    ($ty:ident, $hi:ty, $lo:ty, $split:expr) => {
        impl Ord for $ty {
            fn cmp(&self, other: &Self) -> std::cmp::Ordering {
                let words = |b: &[u8]| {
                    let (hi, lo) = b.split_at($split);
                    (
                        <$hi>::from_be_bytes(hi.try_into().expect("split")),
                        <$lo>::from_be_bytes(lo.try_into().expect("split")),
                    )
                };
                words(&self.0).cmp(&words(&other.0))
            }
        }
        impl PartialOrd for $ty {
            fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
                Some(self.cmp(other))
            }
        }
    };
}
ord_by_words!(Hash, u128, u128, 16);
ord_by_words!(Address, u128, u32, 16);

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self)
    }
}
impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(&self.0[..6]))
    }
}
impl Hash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// The identifier of a block: the hash of its canonical header encoding.
pub type BlockId = Hash;

/// `0x` + hex of the first 20 bytes of SHA-256 of the compressed public key. Encoded as a
/// byte string (length-checked on decode, see `crypto`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Address(pub [u8; 20]);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}
impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(&self.0[..4]))
    }
}

impl std::str::FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hex_part = s.strip_prefix("0x").unwrap_or(s);
        let bytes = hex::decode(hex_part)
            .map_err(|e| format!("address `{s}`: not hex ({e}); expected 0x followed by 40 hex digits"))?;
        let arr: [u8; 20] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "address `{s}`: {} bytes, expected 20 (0x followed by 40 hex digits)",
                b.len()
            )
        })?;
        Ok(Address(arr))
    }
}

/// Identity of a network peer (the address of its node key). The simulator uses the same type.
pub type PeerId = Address;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum VoteType {
    Prevote,
    Precommit,
}

/// The block header. `last_commit_hash` binds the previous height's commit carried in the block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub chain_id: String,
    pub height: Height,
    pub time: TimeMs,
    pub prev_block_id: Option<BlockId>,
    pub proposer: Address,
    pub txs_hash: Hash,
    pub app_hash: Hash,
    pub validators_hash: Hash,
    pub last_commit_hash: Hash,
}

/// A block: the value consensus decides on. Its contents ([`BlockData`], read through
/// `Deref`) are immutable and shared, so a clone is a reference count: the engine, its log,
/// the store, the application and the network all hold the same block, and its id is hashed
/// once for all of them. It encodes exactly as its contents.
#[derive(Clone)]
pub struct Block(std::sync::Arc<SharedBlock>);

#[derive(Clone)]
struct SharedBlock {
    data: BlockData,
    /// `id(v)`, computed on first use. Cleared by [`Block::make_mut`].
    id: std::sync::OnceLock<BlockId>,
}

/// What a [`Block`] holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockData {
    pub header: Header,
    #[serde(with = "tx_list")]
    pub txs: Vec<Vec<u8>>,
    /// The commit that decided the previous height (`None` only at the initial height).
    pub last_commit: Option<Commit>,
}

impl std::ops::Deref for Block {
    type Target = BlockData;
    fn deref(&self) -> &BlockData {
        &self.0.data
    }
}

impl From<BlockData> for Block {
    fn from(data: BlockData) -> Self {
        Block(std::sync::Arc::new(SharedBlock {
            data,
            id: std::sync::OnceLock::new(),
        }))
    }
}

impl PartialEq for Block {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0) || self.0.data == other.0.data
    }
}
impl Eq for Block {}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.data.fmt(f)
    }
}

impl Serialize for Block {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.data.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BlockData::deserialize(d).map(Block::from)
    }
}

impl BlockData {
    /// The hash of the canonical header encoding (uncached; [`Block::id`] keeps it).
    pub fn id(&self) -> BlockId {
        sha256(&crate::codec::encode(&self.header))
    }
}

impl Block {
    pub fn new(header: Header, txs: Vec<Vec<u8>>, last_commit: Option<Commit>) -> Self {
        BlockData {
            header,
            txs,
            last_commit,
        }
        .into()
    }
    /// A block to change (tests, Byzantine wrappers): copies the contents if they are shared,
    /// and forgets the id, which the change may alter.
    pub fn make_mut(&mut self) -> &mut BlockData {
        let shared = std::sync::Arc::make_mut(&mut self.0);
        shared.id = std::sync::OnceLock::new();
        &mut shared.data
    }
    /// `id(v)` of the paper: the hash of the canonical header encoding (hashed once per block).
    pub fn id(&self) -> BlockId {
        *self.0.id.get_or_init(|| self.0.data.id())
    }
    pub fn height(&self) -> Height {
        self.header.height
    }
}

/// Hash of a block's transaction list (over each transaction's hash, in order).
pub fn txs_hash(txs: &[Vec<u8>]) -> Hash {
    let mut all = Vec::with_capacity(txs.len() * 32 + 8);
    all.extend_from_slice(&(txs.len() as u64).to_be_bytes());
    for tx in txs {
        all.extend_from_slice(&sha256(tx).0);
    }
    sha256(&all)
}

/// Hash of an optional commit, as put in `Header::last_commit_hash`.
pub fn commit_hash(c: &Option<Commit>) -> Hash {
    sha256(&crate::codec::encode(c))
}

/// `⟨PROPOSAL, h, round, v, validRound⟩` of the paper, signed by the proposer of (h, round).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub height: Height,
    pub round: Round,
    /// The paper's `validRound` carried in the proposal (the POL round); `None` is `-1`.
    pub pol_round: Option<Round>,
    pub block: Block,
    pub signature: Signature,
}

/// `⟨PREVOTE|PRECOMMIT, h, round, id(v) or nil⟩` of the paper, signed by `validator`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vote {
    pub vote_type: VoteType,
    pub height: Height,
    pub round: Round,
    pub block_id: Option<BlockId>,
    pub validator: Address,
    pub signature: Signature,
}

/// One precommit inside a commit certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitSig {
    pub validator: Address,
    pub signature: Signature,
}

/// The certificate that decides a height: precommits for `block_id` at `round` from validators
/// holding more than two thirds of the voting power.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub height: Height,
    pub round: Round,
    pub block_id: BlockId,
    pub signatures: Vec<CommitSig>,
}

impl Commit {
    /// The precommit a `CommitSig` stands for.
    pub fn vote(&self, sig: &CommitSig) -> Vote {
        Vote {
            vote_type: VoteType::Precommit,
            height: self.height,
            round: self.round,
            block_id: Some(self.block_id),
            validator: sig.validator,
            signature: sig.signature,
        }
    }
}

/// Proof of misbehaviour, checkable by anyone holding the validator set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Evidence {
    /// Two votes from one validator for the same height, round and type, for different values.
    DuplicateVote { a: Vote, b: Vote },
}

impl Evidence {
    pub fn culprit(&self) -> Address {
        match self {
            Evidence::DuplicateVote { a, .. } => a.validator,
        }
    }
    pub fn height(&self) -> Height {
        match self {
            Evidence::DuplicateVote { a, .. } => a.height,
        }
    }
}

/// Transactions encode as byte strings (the same bytes postcard writes for a `Vec<u8>`, one
/// copy instead of one call per byte).
mod tx_list {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(txs: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(txs.iter().map(|t| serde_bytes::Bytes::new(t)))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v: Vec<serde_bytes::ByteBuf> = Deserialize::deserialize(d)?;
        Ok(v.into_iter().map(serde_bytes::ByteBuf::into_vec).collect())
    }
}

/// Everything the consensus protocol sends between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    // The large variants are boxed: a vote, the most frequent message, then moves as a
    // small value through the node and the engine.
    Proposal(Box<Proposal>),
    Vote(Vote),
    /// A transaction for the mempool.
    Tx(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Ask a peer for the decided block (and its commit) at a height.
    RequestDecided(Height),
    /// A decided block with the commit that decided it (catch-up).
    Decided {
        block: Block,
        commit: Commit,
    },
    /// Evidence of misbehaviour, gossiped so every node can record it.
    Evidence(Box<Evidence>),
    /// State sync: which snapshot do you keep? Answered with [`Message::SnapshotOffer`].
    RequestSnapshot,
    /// The newest snapshot a peer keeps: its height (the height it is ready to decide), the
    /// SHA-256 of its encoding, and that encoding's size in chunks of [`SNAPSHOT_CHUNK_BYTES`].
    SnapshotOffer {
        height: Height,
        hash: Hash,
        size: u64,
    },
    /// State sync: one chunk of the offered snapshot of `height`.
    RequestChunk {
        height: Height,
        index: u32,
    },
    SnapshotChunk {
        height: Height,
        index: u32,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
}

/// Bytes per snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

impl Message {
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Proposal(_) => "proposal",
            Message::Vote(v) => match v.vote_type {
                VoteType::Prevote => "prevote",
                VoteType::Precommit => "precommit",
            },
            Message::Tx(_) => "tx",
            Message::RequestDecided(_) => "request_decided",
            Message::Decided { .. } => "decided",
            Message::Evidence(_) => "evidence",
            Message::RequestSnapshot => "request_snapshot",
            Message::SnapshotOffer { .. } => "snapshot_offer",
            Message::RequestChunk { .. } => "request_chunk",
            Message::SnapshotChunk { .. } => "snapshot_chunk",
        }
    }
    /// Height the message is about, when it is about one.
    pub fn height(&self) -> Option<Height> {
        match self {
            Message::Proposal(p) => Some(p.height),
            Message::Vote(v) => Some(v.height),
            Message::Decided { block, .. } => Some(block.height()),
            Message::RequestDecided(h) => Some(*h),
            Message::Evidence(e) => Some(e.height()),
            Message::Tx(_)
            | Message::RequestSnapshot
            | Message::SnapshotOffer { .. }
            | Message::RequestChunk { .. }
            | Message::SnapshotChunk { .. } => None,
        }
    }
}
