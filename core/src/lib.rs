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

/// Deliberately broken rules, compiled only with the test feature `planted-bugs`. Each one must
/// be caught by an invariant of the simulator; that is how we know the checks can fail.
#[cfg(feature = "planted-bugs")]
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
}

#[cfg(feature = "planted-bugs")]
impl PlantedBug {
    /// Every planted bug with its name (`--planted NAME`).
    pub const ALL: [(PlantedBug, &'static str); 9] = [
        (PlantedBug::IgnoreLock, "ignore-lock"),
        (PlantedBug::DecideOnPrevotes, "decide-on-prevotes"),
        (PlantedBug::CountByNumber, "count-by-number"),
        (PlantedBug::ForgetLastVote, "forget-last-vote"),
        (PlantedBug::PrevoteIgnoresLock, "prevote-ignores-lock"),
        (PlantedBug::SkipValidValue, "skip-valid-value"),
        (PlantedBug::FixedTimeouts, "fixed-timeouts"),
        (PlantedBug::RoundSkipOnOne, "round-skip-on-one"),
        (PlantedBug::AcceptNonProposer, "accept-non-proposer"),
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
