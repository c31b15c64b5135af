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
}

#[cfg(feature = "planted-bugs")]
impl std::str::FromStr for PlantedBug {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ignore-lock" => PlantedBug::IgnoreLock,
            "decide-on-prevotes" => PlantedBug::DecideOnPrevotes,
            "count-by-number" => PlantedBug::CountByNumber,
            "forget-last-vote" => PlantedBug::ForgetLastVote,
            _ => {
                return Err(format!(
                    "unknown planted bug `{s}` (ignore-lock, decide-on-prevotes, count-by-number, forget-last-vote)"
                ))
            }
        })
    }
}
