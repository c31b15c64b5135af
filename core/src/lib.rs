//! `tendr-core`: the Tendermint consensus algorithm and everything it needs to be correct.
//!
//! What it does: types and their canonical encoding, k256 signatures over domain-separated sign
//! bytes, validator sets and weighted round-robin proposer selection, the vote keeper, the pure
//! state machine of Algorithm 1 of "The latest gossip on BFT consensus" (Buchman, Kwon,
//! Milosevic 2018), the [`engine::Engine`] that verifies and orders messages around it, and the
//! trait layer ([`traits`]) with the one driver [`traits::Node`] used by both worlds.
//!
//! What it does not do: no async runtime, no sockets, no files, no clock reads, no randomness,
//! no threads. Time arrives as an argument; every output is a command for the caller to carry
//! out, in order.
#![forbid(unsafe_code)]

pub mod chain;
pub mod codec;
pub mod crypto;
pub mod engine;
pub mod governance;
pub mod limits;
pub mod mempool;
pub mod proposer;
pub mod state_machine;
pub mod statesync;
pub mod sync;
pub mod traits;
pub mod types;
pub mod validator;
pub mod votes;

pub use crypto::{PrivateKey, PublicKey, Signature, Signer};
pub use engine::{Engine, EngineConfig, Input, Output, TimeoutConfig};
pub use types::*;
pub use validator::{Validator, ValidatorSet, ValidatorUpdate};

/// Deliberately broken rules. The enum always exists (so the hooks are typed, not strings), but
/// a rule is broken only in a build with the test feature `planted-bugs`: without it
/// `EngineConfig` has no field to name one and every hook is a constant `false` (no cost in a
/// real node). Each one must be caught by the simulator; that is how we know its checks can
/// fail (`cargo test -p tendr-sim --features planted-bugs --test it planted`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PlantedBug {
    /// Line 38-39 forgotten: never lock.
    IgnoreLock,
    /// Line 49 on +2/3 prevotes instead of precommits.
    DecideOnPrevotes,
    /// Count votes by number of validators instead of voting power.
    CountByNumber,
    /// On restart, forget the votes persisted in the consensus log.
    ForgetLastVote,
    /// Line 23 without its lock test: prevote a fresh proposal while locked on another value.
    PrevoteIgnoresLock,
    /// Lines 42-43 forgotten: validValue/validRound never updated, so a later proposer
    /// proposes a fresh value instead of the one that had a polka.
    SkipValidValue,
    /// Timeouts that do not grow with the round (the deltas ignored).
    FixedTimeouts,
    /// Line 55's f+1 counted as one: any single message of a higher round skips to it.
    RoundSkipOnOne,
    /// A proposal accepted from any validator, not only the round's proposer.
    AcceptNonProposer,
    /// Line 55's f+1 off by one: `power >= total / 3` (f, integer division) instead of more
    /// than a third.
    RoundSkipOffByOne,
    /// Line 55 counts a validator once per vote type: its prevote and precommit of a higher
    /// round weigh twice.
    RoundSkipCountsTwice,
    /// Lines 44-46 with an extra `lockedValue = nil`: a lock released on a nil polka.
    UnlockOnNilPolka,
    /// The vote keeper counts a vote it already holds again (no duplicate check).
    CountDuplicates,
    /// A restart restores the lock from the consensus log but not validValue/validRound, so
    /// the restarted proposer proposes a fresh value (L14-L18).
    RestartForgetsValidValue,
    /// Two votes of one validator for different values are not reported as evidence.
    SkipEvidence,
}

#[cfg(feature = "planted-bugs")]
impl PlantedBug {
    /// Every planted bug with its name (`--planted NAME`).
    pub const ALL: [(PlantedBug, &'static str); 15] = [
        (PlantedBug::IgnoreLock, "ignore-lock"),
        (PlantedBug::DecideOnPrevotes, "decide-on-prevotes"),
        (PlantedBug::CountByNumber, "count-by-number"),
        (PlantedBug::ForgetLastVote, "forget-last-vote"),
        (PlantedBug::PrevoteIgnoresLock, "prevote-ignores-lock"),
        (PlantedBug::SkipValidValue, "skip-valid-value"),
        (PlantedBug::FixedTimeouts, "fixed-timeouts"),
        (PlantedBug::RoundSkipOnOne, "round-skip-on-one"),
        (PlantedBug::AcceptNonProposer, "accept-non-proposer"),
        (PlantedBug::RoundSkipOffByOne, "round-skip-off-by-one"),
        (PlantedBug::RoundSkipCountsTwice, "round-skip-counts-twice"),
        (PlantedBug::UnlockOnNilPolka, "unlock-on-nil-polka"),
        (PlantedBug::CountDuplicates, "count-duplicates"),
        (PlantedBug::RestartForgetsValidValue, "restart-forgets-valid-value"),
        (PlantedBug::SkipEvidence, "skip-evidence"),
    ];
}

#[cfg(feature = "planted-bugs")]
impl std::str::FromStr for PlantedBug {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PlantedBug::ALL
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(b, _)| *b)
            .ok_or_else(|| {
                let names: Vec<&str> = PlantedBug::ALL.iter().map(|(_, n)| *n).collect();
                format!("unknown planted bug `{s}` ({})", names.join(", "))
            })
    }
}
