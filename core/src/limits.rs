//! Every cap in one place. Each loop and queue in the core is bounded by one of these.

/// Largest validator set accepted (genesis or after updates).
pub const MAX_VALIDATORS: usize = 1_000;
/// Total voting power cap, so that `3 * power` never overflows even in `u64`.
pub const MAX_TOTAL_VOTING_POWER: u64 = u64::MAX / 8;
/// Largest encoded message accepted from the network, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;
/// Largest encoded block (transactions included), in bytes.
pub const MAX_BLOCK_BYTES: usize = 4 * 1024 * 1024;
/// Most transactions in one block.
pub const MAX_BLOCK_TXS: usize = 20_000;
/// Largest single transaction, in bytes.
pub const MAX_TX_BYTES: usize = 64 * 1024;
/// Messages for future heights kept until their height starts.
pub const MAX_FUTURE_MESSAGES: usize = 4_096;
/// Proposals of a later height whose signer cannot be checked yet (a re-proposal of a valid
/// value names its first proposer in the block, not the signer), kept until their height starts.
pub const MAX_PARKED_PROPOSALS: usize = 16;
/// How many heights ahead a buffered message may be.
pub const MAX_FUTURE_HEIGHTS: u64 = 2;
/// How many rounds ahead of our own round a message may be and still be kept.
pub const MAX_ROUNDS_AHEAD: u32 = 64;
/// Signature verification cache entries.
pub const VERIFY_CACHE_ENTRIES: usize = 65_536;
/// Mempool caps.
pub const MEMPOOL_MAX_TXS: usize = 100_000;
pub const MEMPOOL_MAX_BYTES: usize = 64 * 1024 * 1024;
/// A committed transaction is refused as a duplicate for this many decided blocks (counting the
/// one that included it): long enough that a peer a few heights behind cannot gossip it back
/// into a new block, short enough that the same payload may be sent again soon after.
pub const RECENT_COMMITTED_BLOCKS: u64 = 10;
/// At most this many committed hashes are remembered, whatever the window.
pub const RECENT_COMMITTED_MAX_TXS: usize = 200_000;
/// Length of a chain id.
pub const MAX_CHAIN_ID_BYTES: usize = 64;
/// Recent "peer is behind, I sent it a decided block" entries kept to avoid resending.
pub const MAX_RECENT_SERVES: usize = 256;
