//! Weighted round-robin proposer selection, priority-based as in CometBFT.
//!
//! Each step every validator's priority grows by its power; the highest priority (ties: lowest
//! address) proposes and pays the total power back. Over any window each validator proposes in
//! proportion to its power. [`ProposerSchedule`] holds the priorities at the start of a height:
//! the proposer of round `r` is the one chosen by step `r + 1`, so the result depends only on
//! (validator set, height, round). Moving to the next height advances one step.

use crate::types::{Address, Round};
use crate::validator::ValidatorSet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposerSchedule {
    /// Priorities aligned with `ValidatorSet::validators()` at the start of the height.
    priorities: Vec<i64>,
}

impl ProposerSchedule {
    /// Priorities for a fresh set (genesis).
    pub fn new(vs: &ValidatorSet) -> Self {
        ProposerSchedule {
            priorities: vec![0; vs.len()],
        }
    }

    /// The priorities, aligned with the set's validators (for snapshots).
    pub fn priorities(&self) -> &[i64] {
        &self.priorities
    }

    /// A schedule restored from a snapshot; `None` when it does not fit the set.
    pub fn from_priorities(vs: &ValidatorSet, priorities: Vec<i64>) -> Option<Self> {
        let bound = 4 * vs.total_power().0 as i128;
        (priorities.len() == vs.len() && priorities.iter().all(|p| (*p as i128).abs() <= bound))
            .then_some(ProposerSchedule { priorities })
    }

    /// The proposer of `round` at this height.
    pub fn proposer(&self, vs: &ValidatorSet, round: Round) -> Address {
        let mut p = self.priorities.clone();
        let mut chosen = 0;
        for _ in 0..=round.0 {
            chosen = step(vs, &mut p);
        }
        vs.validators()[chosen].address
    }

    /// Priorities for the next height with the same set.
    pub fn advance(&mut self, vs: &ValidatorSet) {
        step(vs, &mut self.priorities);
    }

    /// Priorities for the next height when the set changes from `old` to `new`: members keep
    /// their priority, newcomers start at -1.125 x total power (they wait their turn), and the
    /// result is re-centred around zero.
    pub fn advance_to(&mut self, old: &ValidatorSet, new: &ValidatorSet) {
        step(old, &mut self.priorities);
        let total = new.total_power().0 as i64;
        let penalty = -(total + total / 8);
        let mut next: Vec<i64> = new
            .validators()
            .iter()
            .map(|v| match old.index_of(&v.address) {
                Some(i) => self.priorities[i.0 as usize],
                None => penalty,
            })
            .collect();
        center_and_bound(new, &mut next);
        self.priorities = next;
    }
}

/// One step of the weighted round robin; returns the index of the chosen validator.
fn step(vs: &ValidatorSet, p: &mut [i64]) -> usize {
    let total = vs.total_power().0 as i64;
    let mut best = 0;
    for (i, v) in vs.validators().iter().enumerate() {
        p[i] += v.power.0 as i64;
        if p[i] > p[best] {
            best = i;
        }
    }
    p[best] -= total;
    best
}

/// Keeps priorities centred on zero and within 2 x total power, so they never overflow.
fn center_and_bound(vs: &ValidatorSet, p: &mut [i64]) {
    if p.is_empty() {
        return;
    }
    let n = p.len() as i128;
    let avg = (p.iter().map(|&x| x as i128).sum::<i128>() / n) as i64;
    for x in p.iter_mut() {
        *x -= avg;
    }
    let bound = 2 * vs.total_power().0 as i64;
    let (min, max) = (*p.iter().min().unwrap(), *p.iter().max().unwrap());
    let spread = max - min;
    if spread > bound && bound > 0 {
        let ratio = (spread + bound - 1) / bound;
        for x in p.iter_mut() {
            *x /= ratio;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;
    use crate::types::VotingPower;
    use proptest::prelude::*;

    fn set(powers: &[u64]) -> ValidatorSet {
        ValidatorSet::new(
            powers
                .iter()
                .enumerate()
                .map(|(i, &p)| {
                    (
                        PrivateKey::from_seed(&(i as u32).to_be_bytes()).public_key(),
                        VotingPower(p),
                    )
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn equal_power_rotates_through_everyone() {
        let vs = set(&[1, 1, 1, 1]);
        let mut s = ProposerSchedule::new(&vs);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..4 {
            seen.insert(s.proposer(&vs, Round(0)));
            s.advance(&vs);
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn deterministic_for_set_height_round() {
        let vs = set(&[3, 1, 2]);
        let a = ProposerSchedule::new(&vs);
        let b = ProposerSchedule::new(&vs);
        for r in 0..10 {
            assert_eq!(a.proposer(&vs, Round(r)), b.proposer(&vs, Round(r)));
        }
    }

    #[test]
    fn newcomer_waits_and_then_proposes() {
        let old = set(&[1, 1, 1]);
        let new = set(&[1, 1, 1, 1]);
        let mut s = ProposerSchedule::new(&old);
        s.advance_to(&old, &new);
        let newcomer = new
            .validators()
            .iter()
            .find(|v| old.index_of(&v.address).is_none())
            .unwrap()
            .address;
        let mut count = 0;
        for _ in 0..40 {
            if s.proposer(&new, Round(0)) == newcomer {
                count += 1;
            }
            s.advance(&new);
        }
        assert!((9..=11).contains(&count), "newcomer proposed {count} of 40");
    }

    /// The priorities of `vs`'s members by address, for tests that name them by who they are.
    fn by_address(vs: &ValidatorSet, s: &ProposerSchedule) -> Vec<(Address, i64)> {
        vs.validators()
            .iter()
            .map(|v| v.address)
            .zip(s.priorities().iter().copied())
            .collect()
    }

    #[test]
    fn ties_go_to_the_lowest_address_which_pays_the_total_power_back() {
        let vs = set(&[1, 1, 1, 1]);
        let mut s = ProposerSchedule::new(&vs);
        assert_eq!(s.priorities(), &[0, 0, 0, 0]);
        let lowest = vs.validators()[0].address;
        assert_eq!(s.proposer(&vs, Round(0)), lowest);
        s.advance(&vs);
        assert_eq!(s.priorities(), &[-3, 1, 1, 1], "everyone gains 1, the proposer pays 4");
        assert_eq!(s.proposer(&vs, Round(0)), vs.validators()[1].address);
    }

    #[test]
    fn priorities_restored_from_a_snapshot_must_fit_the_set() {
        let vs = set(&[1, 1, 1, 1]);
        // Each priority within 4 x total power (16) of zero, one per member.
        let restored = ProposerSchedule::from_priorities(&vs, vec![16, -16, 0, 0]).unwrap();
        assert_eq!(restored.priorities(), &[16, -16, 0, 0]);
        assert_eq!(restored.proposer(&vs, Round(0)), vs.validators()[0].address);
        assert_eq!(ProposerSchedule::from_priorities(&vs, vec![17, -16, 0, 0]), None);
        assert_eq!(ProposerSchedule::from_priorities(&vs, vec![0, -17, 0, 0]), None);
        assert_eq!(
            ProposerSchedule::from_priorities(&vs, vec![0, 0, 0]),
            None,
            "one too few"
        );
        assert_eq!(ProposerSchedule::from_priorities(&vs, vec![0; 5]), None, "one too many");
    }

    #[test]
    fn a_newcomer_starts_at_minus_one_and_an_eighth_of_the_total_power_and_the_set_is_recentred() {
        let old = set(&[8, 8, 8]);
        let new = set(&[8, 8, 8, 8]);
        let mut s = ProposerSchedule::new(&old);
        s.advance_to(&old, &new);
        // The step at the end of the height: everyone +8, the lowest address (the proposer)
        // -24: [-16, 8, 8]. The newcomer: -(32 + 32 / 8) = -36. Their mean, -9, is taken off.
        let proposer = old.validators()[0].address;
        let want: Vec<(Address, i64)> = new
            .validators()
            .iter()
            .map(|v| {
                let p = match old.index_of(&v.address) {
                    None => -36,
                    Some(_) if v.address == proposer => -16,
                    Some(_) => 8,
                };
                (v.address, p + 9)
            })
            .collect();
        assert_eq!(by_address(&new, &s), want);
    }

    #[test]
    fn priorities_spread_wider_than_twice_the_new_total_power_are_scaled_down() {
        let old = set(&[10, 10, 10]);
        // The old proposer and one other stay, with power 1 each: bound 2 x 2 = 4.
        let kept: Vec<_> = old.validators()[..2]
            .iter()
            .map(|v| (v.pub_key, VotingPower(1)))
            .collect();
        let new = ValidatorSet::new(kept).unwrap();
        let mut s = ProposerSchedule::new(&old);
        s.advance_to(&old, &new);
        // [-20, 10] centred is [-15, 15]: spread 30 > 4, divided by ceil(30 / 4) = 8.
        assert_eq!(s.priorities(), &[-1, 1]);
        // The same with power 4 each before: [-8, 4] centred is [-6, 6], divided by
        // ceil(12 / 4) = 3 (a spread that is a multiple of the bound).
        let old = set(&[4, 4, 4]);
        let mut s = ProposerSchedule::new(&old);
        s.advance_to(&old, &new);
        assert_eq!(s.priorities(), &[-2, 2]);
    }

    #[test]
    fn a_set_of_newcomers_only_starts_level() {
        let old = set(&[1]);
        let new = ValidatorSet::new(
            [7u32, 8]
                .iter()
                .map(|i| (PrivateKey::from_seed(&i.to_be_bytes()).public_key(), VotingPower(1)))
                .collect(),
        )
        .unwrap();
        let mut s = ProposerSchedule::new(&old);
        s.advance_to(&old, &new);
        assert_eq!(s.priorities(), &[0, 0]);
    }

    proptest! {
        /// Over `k * total` rounds each validator proposes `k * power` times, within one.
        #[test]
        fn proposes_in_proportion_to_power(powers in proptest::collection::vec(1u64..20, 1..12), k in 1u64..8) {
            let vs = set(&powers);
            let total = vs.total_power().0;
            let s = ProposerSchedule::new(&vs);
            let mut counts = std::collections::BTreeMap::new();
            let mut p = s.priorities.clone();
            for _ in 0..(k * total) {
                let i = step(&vs, &mut p);
                *counts.entry(i).or_insert(0u64) += 1;
            }
            for (i, v) in vs.validators().iter().enumerate() {
                let got = *counts.get(&i).unwrap_or(&0) as i64;
                let want = (k * v.power.0) as i64;
                prop_assert!((got - want).abs() <= 1, "validator {} power {} proposed {} want {}", i, v.power.0, got, want);
            }
        }
    }
}
