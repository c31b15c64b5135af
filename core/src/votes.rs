//! The vote keeper: tallies of prevotes and precommits by voting power, per round, for one
//! height.
//!
//! A validator's vote counts once towards "any" and once towards the value it names. A second
//! identical vote is a duplicate and ignored. A vote for a different value is equivocation:
//! the two signed votes become [`Evidence::DuplicateVote`], and — as the paper counts
//! messages per value — the new value's tally also counts it (up to
//! [`MAX_VALUES_PER_VALIDATOR`] values per validator, so memory stays bounded, and always for
//! a value the node holds a proposal of: see [`VoteKeeper::add_vote`]). Counting it is
//! what lets honest nodes that saw different halves of an equivocation still reach the same
//! +2/3 once the votes are gossiped; it cannot help a fork, since quorum intersection already
//! assumes Byzantine validators vote both ways. The keeper assumes the caller verified
//! membership and signatures (the engine does).

use crate::types::{BlockId, Evidence, Round, ValidatorIndex, Vote, VoteType, VotingPower};
use crate::validator::ValidatorSet;
use std::collections::BTreeMap;

/// What adding a vote did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddVote {
    /// Counted.
    Added,
    /// The same vote was already counted.
    Duplicate,
    /// The validator already voted differently: not counted, evidence produced.
    Conflict(Box<Evidence>),
}

/// Distinct values one validator's votes are counted for, per (round, type).
pub const MAX_VALUES_PER_VALIDATOR: usize = 3;

/// One validator's votes in one tally: its first, then the conflicting ones counted (held
/// apart so that the usual single vote needs no allocation of its own).
#[derive(Debug, Clone)]
struct ValidatorVotes {
    first: Vote,
    conflicting: Vec<Vote>,
}

impl ValidatorVotes {
    fn iter(&self) -> impl Iterator<Item = &Vote> {
        std::iter::once(&self.first).chain(&self.conflicting)
    }
}

const NONE: u32 = u32::MAX;

/// Tally of one (round, type).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Each validator's votes, in order of arrival; `slot` finds them by validator index
    /// (a dense table of `u32`: a set has at most `MAX_VALIDATORS` members).
    votes: Vec<ValidatorVotes>,
    slot: Vec<u32>,
    by_value: BTreeMap<Option<BlockId>, u64>,
    total: u64,
}

impl Tally {
    /// Power that voted for `value` (`None` is nil).
    pub fn power_for(&self, value: Option<BlockId>) -> u64 {
        self.by_value.get(&value).copied().unwrap_or(0)
    }
    /// Power that voted at all.
    pub fn power_any(&self) -> u64 {
        self.total
    }
    /// The value, if any, that has +2/3 of the power.
    pub fn quorum_value(&self, vs: &ValidatorSet) -> Option<Option<BlockId>> {
        self.by_value.iter().find(|(_, &p)| vs.is_quorum(p)).map(|(v, _)| *v)
    }
    fn has(&self, i: usize) -> bool {
        self.slot.get(i).is_some_and(|&k| k != NONE)
    }
    /// The votes, by validator index.
    pub fn votes(&self) -> impl Iterator<Item = &Vote> {
        self.slot
            .iter()
            .filter(|&&k| k != NONE)
            .flat_map(|&k| self.votes[k as usize].iter())
    }
    pub fn votes_for(&self, value: Option<BlockId>) -> impl Iterator<Item = &Vote> {
        self.votes().filter(move |v| v.block_id == value)
    }
}

#[derive(Debug, Clone, Default)]
struct RoundVotes {
    prevotes: Tally,
    precommits: Tally,
    /// Power of the validators heard from in this round (any vote, counted once), for the
    /// round skip of line 55.
    heard_power: u64,
}

/// How the keeper counts; `ByPower` is the protocol. The other exists only as a planted bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Counting {
    #[default]
    ByPower,
    #[cfg(feature = "planted-bugs")]
    ByNumber,
    /// By power, but a vote received twice counts twice.
    #[cfg(feature = "planted-bugs")]
    WithDuplicates,
}

/// Votes of one height.
#[derive(Debug, Clone)]
pub struct VoteKeeper {
    rounds: BTreeMap<Round, RoundVotes>,
    counting: Counting,
}

impl VoteKeeper {
    pub fn new(counting: Counting) -> Self {
        VoteKeeper {
            rounds: BTreeMap::new(),
            counting,
        }
    }

    fn weight(&self, power: VotingPower) -> u64 {
        match self.counting {
            Counting::ByPower => power.0,
            #[cfg(feature = "planted-bugs")]
            Counting::ByNumber => 1,
            #[cfg(feature = "planted-bugs")]
            Counting::WithDuplicates => power.0,
        }
    }

    /// Adds a verified vote of validator `index` (whose power is `power`).
    pub fn add(&mut self, vote: Vote, index: ValidatorIndex, power: VotingPower) -> AddVote {
        self.add_vote(vote, index, power, false)
    }

    /// [`VoteKeeper::add`]; a `wanted` vote (for a value we hold a proposal of) is counted
    /// even when its validator already has [`MAX_VALUES_PER_VALIDATOR`] values. Without
    /// that, a Byzantine validator that floods one node with equivocating votes fills its
    /// quota there, and its vote in the polka the other nodes locked on never counts at that
    /// node: the node can never see the proof of lock (L28) and rounds fail forever (found by
    /// `tendr sim explore`, seed 12231). Memory stays bounded: a node holds one proposal per
    /// round, for a bounded number of rounds.
    pub fn add_vote(&mut self, vote: Vote, index: ValidatorIndex, power: VotingPower, wanted: bool) -> AddVote {
        let w = self.weight(power);
        let rv = self.rounds.entry(vote.round).or_default();
        let i = index.0 as usize;
        let heard_before = rv.prevotes.has(i) || rv.precommits.has(i);
        let tally = match vote.vote_type {
            VoteType::Prevote => &mut rv.prevotes,
            VoteType::Precommit => &mut rv.precommits,
        };
        if tally.slot.len() <= i {
            tally.slot.resize(i + 1, NONE);
        }
        if tally.slot[i] != NONE {
            let existing = &mut tally.votes[tally.slot[i] as usize];
            if existing.iter().any(|v| v.block_id == vote.block_id) {
                #[cfg(feature = "planted-bugs")]
                if self.counting == Counting::WithDuplicates {
                    *tally.by_value.entry(vote.block_id).or_insert(0) += w;
                    tally.total += w;
                }
                return AddVote::Duplicate;
            }
            let ev = Evidence::DuplicateVote {
                a: existing.first.clone(),
                b: vote.clone(),
            };
            if wanted || 1 + existing.conflicting.len() < MAX_VALUES_PER_VALIDATOR {
                *tally.by_value.entry(vote.block_id).or_insert(0) += w;
                existing.conflicting.push(vote);
            }
            return AddVote::Conflict(Box::new(ev));
        }
        *tally.by_value.entry(vote.block_id).or_insert(0) += w;
        tally.total += w;
        tally.slot[i] = tally.votes.len() as u32;
        tally.votes.push(ValidatorVotes {
            first: vote,
            conflicting: Vec::new(),
        });
        if !heard_before {
            rv.heard_power += w;
        }
        AddVote::Added
    }

    pub fn tally(&self, round: Round, vote_type: VoteType) -> Option<&Tally> {
        self.rounds.get(&round).map(|rv| match vote_type {
            VoteType::Prevote => &rv.prevotes,
            VoteType::Precommit => &rv.precommits,
        })
    }

    pub fn power_for(&self, round: Round, vote_type: VoteType, value: Option<BlockId>) -> u64 {
        self.tally(round, vote_type).map(|t| t.power_for(value)).unwrap_or(0)
    }
    pub fn power_any(&self, round: Round, vote_type: VoteType) -> u64 {
        self.tally(round, vote_type).map(|t| t.power_any()).unwrap_or(0)
    }
    /// Power of the distinct validators that sent any vote for `round` (line 55).
    pub fn heard_power(&self, round: Round) -> u64 {
        self.rounds.get(&round).map(|rv| rv.heard_power).unwrap_or(0)
    }
    /// Rounds with at least one vote, ascending.
    pub fn rounds(&self) -> impl Iterator<Item = Round> + '_ {
        self.rounds.keys().copied()
    }
}

/// Checks evidence against a validator set: both votes from one member, same height, round and
/// type, different values, both signatures valid under `chain_id` (checked by `verifier`, the
/// node's own, so a cache or the simulator's trusted mode applies here too).
pub fn verify_evidence(
    chain_id: &str,
    vs: &ValidatorSet,
    ev: &Evidence,
    verifier: &mut dyn crate::traits::SignatureVerifier,
) -> Result<(), String> {
    match ev {
        Evidence::DuplicateVote { a, b } => {
            if a.validator != b.validator {
                return Err("votes are from different validators".into());
            }
            if (a.height, a.round, a.vote_type) != (b.height, b.round, b.vote_type) {
                return Err("votes are for different height, round or type".into());
            }
            if a.block_id == b.block_id {
                return Err("votes are for the same value".into());
            }
            let idx = vs.index_of(&a.validator).ok_or("validator not in the set")?;
            for v in [a, b] {
                let bytes = crate::crypto::vote_sign_bytes(chain_id, v.vote_type, v.height, v.round, v.block_id);
                verifier
                    .verify(&vs.get(idx).pub_key, vs.key(idx), &bytes, &v.signature)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{vote_sign_bytes, PrivateKey};
    use crate::types::{Address, Hash, Height};
    use proptest::prelude::*;

    fn keys(n: u32) -> Vec<PrivateKey> {
        (0..n).map(|i| PrivateKey::from_seed(&i.to_be_bytes())).collect()
    }

    fn vote(k: &PrivateKey, t: VoteType, r: u32, v: Option<u8>) -> Vote {
        let id = v.map(|b| Hash([b; 32]));
        let sig = k.sign(&vote_sign_bytes("c", t, Height(1), Round(r), id));
        Vote {
            vote_type: t,
            height: Height(1),
            round: Round(r),
            block_id: id,
            validator: k.address(),
            signature: sig,
        }
    }

    #[test]
    fn a_flooding_validator_cannot_hide_its_vote_for_a_wanted_value() {
        let ks = keys(1);
        let mut vk = VoteKeeper::new(Counting::ByPower);
        let i = ValidatorIndex(0);
        for b in 0..MAX_VALUES_PER_VALIDATOR as u8 {
            vk.add(vote(&ks[0], VoteType::Prevote, 0, Some(b)), i, VotingPower(5));
        }
        let tally = |vk: &VoteKeeper, b: u8| vk.power_for(Round(0), VoteType::Prevote, Some(Hash([b; 32])));
        // Over the quota an arbitrary value is not counted (evidence is still produced) ...
        let extra = vote(&ks[0], VoteType::Prevote, 0, Some(100));
        assert!(matches!(vk.add(extra, i, VotingPower(5)), AddVote::Conflict(_)));
        assert_eq!(tally(&vk, 100), 0);
        // ... but a vote for a value the node holds a proposal of is.
        let wanted = vote(&ks[0], VoteType::Prevote, 0, Some(101));
        assert!(matches!(
            vk.add_vote(wanted.clone(), i, VotingPower(5), true),
            AddVote::Conflict(_)
        ));
        assert_eq!(tally(&vk, 101), 5);
        assert_eq!(vk.add_vote(wanted, i, VotingPower(5), true), AddVote::Duplicate);
        assert_eq!(tally(&vk, 101), 5, "counted once");
        assert_eq!(
            vk.power_any(Round(0), VoteType::Prevote),
            5,
            "one validator's power, once"
        );
    }

    #[test]
    fn duplicate_vote_is_ignored() {
        let ks = keys(1);
        let vs = ValidatorSet::new(vec![(ks[0].public_key(), VotingPower(1))]).unwrap();
        let mut vk = VoteKeeper::new(Counting::ByPower);
        let v = vote(&ks[0], VoteType::Prevote, 0, Some(1));
        let i = vs.index_of(&v.validator).unwrap();
        assert_eq!(vk.add(v.clone(), i, VotingPower(1)), AddVote::Added);
        assert_eq!(vk.add(v, i, VotingPower(1)), AddVote::Duplicate);
        assert_eq!(vk.power_any(Round(0), VoteType::Prevote), 1);
    }

    #[test]
    fn conflicting_vote_gives_verifiable_evidence() {
        let ks = keys(2);
        let vs = ValidatorSet::new(ks.iter().map(|k| (k.public_key(), VotingPower(1))).collect()).unwrap();
        let mut vk = VoteKeeper::new(Counting::ByPower);
        let a = vote(&ks[0], VoteType::Precommit, 2, Some(1));
        let b = vote(&ks[0], VoteType::Precommit, 2, None);
        let i = vs.index_of(&a.validator).unwrap();
        vk.add(a, i, VotingPower(1));
        let AddVote::Conflict(ev) = vk.add(b, i, VotingPower(1)) else {
            panic!("expected conflict")
        };
        assert_eq!(ev.culprit(), ks[0].address());
        let mut verifier = crate::traits::CachingVerifier::new();
        assert!(verify_evidence("c", &vs, &ev, &mut verifier).is_ok());
        assert!(verify_evidence("other-chain", &vs, &ev, &mut verifier).is_err());
        assert_eq!(
            vk.power_any(Round(2), VoteType::Precommit),
            1,
            "second vote not counted"
        );
    }

    #[test]
    fn the_quorum_value_is_the_value_with_more_than_two_thirds_of_the_power() {
        let ks = keys(4);
        let vs = ValidatorSet::new(ks.iter().map(|k| (k.public_key(), VotingPower(1))).collect()).unwrap();
        let add = |vk: &mut VoteKeeper, k: &PrivateKey, v: Option<u8>| {
            let vote = vote(k, VoteType::Prevote, 0, v);
            let i = vs.index_of(&vote.validator).unwrap();
            vk.add(vote, i, vs.get(i).power);
        };
        let quorum = |vk: &VoteKeeper| vk.tally(Round(0), VoteType::Prevote).unwrap().quorum_value(&vs);
        let mut vk = VoteKeeper::new(Counting::ByPower);
        add(&mut vk, &ks[0], Some(7));
        add(&mut vk, &ks[1], Some(7));
        add(&mut vk, &ks[2], None);
        assert_eq!(quorum(&vk), None, "2 of 4 for a value and 1 for nil is no quorum");
        add(&mut vk, &ks[3], Some(7));
        assert_eq!(quorum(&vk), Some(Some(Hash([7; 32]))));

        let mut nil = VoteKeeper::new(Counting::ByPower);
        for k in &ks[..3] {
            add(&mut nil, k, None);
        }
        assert_eq!(quorum(&nil), Some(None), "a quorum for nil is not one for a value");
    }

    #[test]
    fn votes_lists_every_counted_vote_by_validator_index_and_votes_for_only_those_for_the_value() {
        let ks = keys(3);
        let mut vk = VoteKeeper::new(Counting::ByPower);
        // Added in reverse index order, so that the listing's order is the index's, not
        // arrival's; the first to arrive also equivocates (its second value is counted).
        for (i, v) in [(2, Some(1)), (2, None), (1, Some(1)), (0, Some(2))] {
            vk.add(
                vote(&ks[i], VoteType::Precommit, 0, v),
                ValidatorIndex(i as u16),
                VotingPower(1),
            );
        }
        let tally = vk.tally(Round(0), VoteType::Precommit).unwrap();
        let listed: Vec<(Address, Option<BlockId>)> = tally.votes().map(|v| (v.validator, v.block_id)).collect();
        let one = Some(Hash([1; 32]));
        let two = Some(Hash([2; 32]));
        let who = |i: usize| ks[i].address();
        assert_eq!(
            listed,
            vec![(who(0), two), (who(1), one), (who(2), one), (who(2), None)]
        );
        let for_one: Vec<Address> = tally.votes_for(one).map(|v| v.validator).collect();
        assert_eq!(for_one, vec![who(1), who(2)]);
        let for_nil: Vec<Address> = tally.votes_for(None).map(|v| v.validator).collect();
        assert_eq!(for_nil, vec![who(2)]);
        assert_eq!(tally.votes_for(Some(Hash([3; 32]))).count(), 0);
    }

    #[test]
    fn heard_power_counts_each_validator_of_a_round_once_whatever_it_sent() {
        let ks = keys(3);
        let power = [1, 2, 4];
        let add = |vk: &mut VoteKeeper, i: usize, t: VoteType, r: u32, v: Option<u8>| {
            vk.add(vote(&ks[i], t, r, v), ValidatorIndex(i as u16), VotingPower(power[i]));
        };
        let mut vk = VoteKeeper::new(Counting::ByPower);
        assert_eq!(vk.heard_power(Round(0)), 0, "no vote, nobody heard");
        add(&mut vk, 1, VoteType::Prevote, 0, Some(1));
        assert_eq!(vk.heard_power(Round(0)), 2);
        add(&mut vk, 1, VoteType::Precommit, 0, Some(1));
        assert_eq!(vk.heard_power(Round(0)), 2, "a prevote and a precommit: heard once");
        // Validator 0's prevote slot exists (validator 1's vote made it) but is empty.
        add(&mut vk, 0, VoteType::Precommit, 0, None);
        assert_eq!(vk.heard_power(Round(0)), 3, "a precommit alone is heard");
        add(&mut vk, 0, VoteType::Prevote, 0, None);
        add(&mut vk, 0, VoteType::Prevote, 0, Some(2));
        assert_eq!(
            vk.heard_power(Round(0)),
            3,
            "neither a later prevote nor a conflicting one adds"
        );
        add(&mut vk, 2, VoteType::Prevote, 0, Some(1));
        assert_eq!(vk.heard_power(Round(0)), 7);
        add(&mut vk, 2, VoteType::Prevote, 1, Some(1));
        assert_eq!(vk.heard_power(Round(1)), 4, "rounds are counted apart");
        assert_eq!(vk.heard_power(Round(2)), 0);
    }

    #[test]
    fn rounds_lists_the_rounds_with_votes_in_ascending_order() {
        let ks = keys(1);
        let mut vk = VoteKeeper::new(Counting::ByPower);
        assert_eq!(vk.rounds().count(), 0);
        for r in [3, 1, 3, 5] {
            vk.add(
                vote(&ks[0], VoteType::Prevote, r, None),
                ValidatorIndex(0),
                VotingPower(1),
            );
        }
        assert_eq!(vk.rounds().collect::<Vec<_>>(), vec![Round(1), Round(3), Round(5)]);
    }

    proptest! {
        /// "Any" tallies equal the power of distinct validators; a value's tally equals the power
        /// of validators that voted for it (within their first MAX_VALUES_PER_VALIDATOR values);
        /// evidence appears exactly when a validator signs two different values for one
        /// (round, type).
        #[test]
        fn tallies_and_evidence(
            powers in proptest::collection::vec(1u64..100, 1..8),
            script in proptest::collection::vec((0usize..8, 0u32..3, any::<bool>(), proptest::option::of(0u8..3)), 0..60),
        ) {
            let ks = keys(powers.len() as u32);
            let vs = ValidatorSet::new(ks.iter().zip(&powers).map(|(k, &p)| (k.public_key(), VotingPower(p))).collect()).unwrap();
            let mut keeper = VoteKeeper::new(Counting::ByPower);
            let mut first: BTreeMap<(usize, u32, bool), Vec<Option<u8>>> = BTreeMap::new();
            for (who, r, pre, val) in script {
                let who = who % ks.len();
                let t = if pre { VoteType::Precommit } else { VoteType::Prevote };
                let v = vote(&ks[who], t, r, val);
                let idx = vs.index_of(&v.validator).unwrap();
                let res = keeper.add(v, idx, vs.get(idx).power);
                match first.get_mut(&(who, r, pre)) {
                    None => { prop_assert_eq!(res, AddVote::Added); first.insert((who, r, pre), vec![val]); }
                    Some(prev) if prev.contains(&val) => prop_assert_eq!(res, AddVote::Duplicate),
                    Some(prev) => {
                        prop_assert!(matches!(res, AddVote::Conflict(_)));
                        if prev.len() < MAX_VALUES_PER_VALIDATOR { prev.push(val); }
                    }
                }
            }
            for r in 0..3u32 {
                for pre in [false, true] {
                    let t = if pre { VoteType::Precommit } else { VoteType::Prevote };
                    let want: u64 = first.iter().filter(|((_, rr, pp), _)| *rr == r && *pp == pre)
                        .map(|((w, _, _), _)| vs.power_of(&ks[*w].address()).0).sum();
                    prop_assert_eq!(keeper.power_any(Round(r), t), want);
                    for val in [None, Some(0u8), Some(1), Some(2)] {
                        let want_v: u64 = first.iter().filter(|((_, rr, pp), v)| *rr == r && *pp == pre && v.contains(&val))
                            .map(|((w, _, _), _)| vs.power_of(&ks[*w].address()).0).sum();
                        prop_assert_eq!(keeper.power_for(Round(r), t, val.map(|b| Hash([b; 32]))), want_v);
                    }
                }
            }
        }
    }
}
