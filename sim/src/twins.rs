//! Exhaustive Twins (Bano, Sonnino, Chursin, Perelman, Malkhi: "Twins: BFT Systems Made
//! Robust", OPODIS 2021): every scenario of a small bound, not a sample.
//!
//! A scenario: 4 validators of equal power, one of them Byzantine as a *twin* (two honest
//! engines sharing its key: five slots), and for each of `rounds` rounds one partition of the
//! five slots into at most two groups, after which the network heals. As in the paper's
//! generator, the partitions of the rounds are drawn with replacement and in order (the
//! Cartesian product). The paper also chooses each round's leader; Tendermint's proposer
//! schedule is fixed (round-robin with equal powers), so the leader choice here is which
//! validator is twinned, i.e. in which rounds a twin leads and in which an honest node does.
//! Round `i` lasts the sum of its timeouts (`timeoutPropose + timeoutPrevote +
//! timeoutPrecommit` of round `i`), so partition `i` holds through about one round.
//!
//! Size: 16 partitions per round (1 whole + 15 splits of five slots in two), 4 twin choices:
//! `4 * 16^rounds` scenarios. Every scenario must keep every invariant (one Byzantine of four
//! is within the assumption), and decide after the heal.

use crate::config::{Byzantine, Fault, FaultKind, Latency, SimConfig, VerifyMode};
use crate::world::{run, Report};
use crate::Behaviour;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tendr_core::state_machine::TimeoutKind;
use tendr_core::Round;

/// Validators in a Twins scenario, and slots (with the twin's second copy).
pub const VALIDATORS: u32 = 4;
const SLOTS: u32 = VALIDATORS + 1;

/// The partitions of the five slots into at most two groups: the whole network, then the 15
/// splits (each named by the group holding slot 0; the other group is the rest).
pub fn partitions() -> Vec<Vec<Vec<u32>>> {
    let mut out = vec![vec![(0..SLOTS).collect()]];
    // Slot 0 is always in the first group; the other four slots choose a side (not all in
    // the first group, which is the whole network).
    for mask in 0u32..(1 << (SLOTS - 1)) - 1 {
        let first: Vec<u32> = std::iter::once(0)
            .chain((1..SLOTS).filter(|s| mask & (1 << (s - 1)) != 0))
            .collect();
        let second: Vec<u32> = (1..SLOTS).filter(|s| !first.contains(s)).collect();
        out.push(vec![first, second]);
    }
    out
}

/// How many scenarios `rounds` rounds give.
pub fn count(rounds: u32) -> u64 {
    u64::from(VALIDATORS) * (partitions().len() as u64).pow(rounds)
}

/// Scenario number `index` (`0..count(rounds)`) as a run: the twin, then one partition per
/// round (the index read in base 16, round 0 the least significant digit).
pub fn scenario(rounds: u32, index: u64) -> SimConfig {
    let parts = partitions();
    let p = parts.len() as u64;
    let twin = (index % u64::from(VALIDATORS)) as u32;
    let mut rest = index / u64::from(VALIDATORS);
    let mut c = SimConfig::new(VALIDATORS);
    c.seed = index;
    c.heights = 2;
    c.set_verify(VerifyMode::Trusted);
    c.network.latency = Latency::Fixed { ms: 10 };
    c.byzantine = vec![Byzantine {
        node: twin,
        behaviour: Behaviour::Twin,
    }];
    let mut at_ms = 0;
    for round in 0..rounds {
        let groups = parts[(rest % p) as usize].clone();
        rest /= p;
        c.faults.push(Fault {
            at_ms,
            kind: FaultKind::SlotPartition { groups },
        });
        at_ms += [TimeoutKind::Propose, TimeoutKind::Prevote, TimeoutKind::Precommit]
            .into_iter()
            .map(|k| c.timeouts.duration_ms(k, Round(round)))
            .sum::<u64>();
    }
    c.faults.push(Fault {
        at_ms,
        kind: FaultKind::Heal,
    });
    c.liveness_bound_ms = c.liveness_bound_ms.max(c.rotation_bound_ms());
    c.max_time_ms = at_ms + c.liveness_bound_ms + 10_000;
    c
}

/// What an enumeration found.
#[derive(Debug)]
pub struct TwinsResult {
    pub scenarios: u64,
    /// Reports of the scenarios that broke an invariant, by index.
    pub failing: Vec<(u64, Report)>,
    /// Heights decided over all scenarios.
    pub heights: u64,
}

/// Runs every scenario of `rounds` rounds on `jobs` threads (one scenario per thread at a
/// time), with `planted` (a planted bug's name, test builds only) in the honest nodes;
/// `progress(done)` after each.
pub fn enumerate(rounds: u32, jobs: usize, planted: Option<&str>, progress: &(dyn Fn(u64) + Sync)) -> TwinsResult {
    let total = count(rounds);
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let heights = AtomicU64::new(0);
    let failing = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    break;
                }
                let mut c = scenario(rounds, i);
                c.planted = planted.map(str::to_string);
                let r = run(c).expect("twins scenarios are valid");
                heights.fetch_add(r.heights, Ordering::SeqCst);
                if !r.ok() {
                    failing.lock().expect("no panics while holding").push((i, r));
                }
                progress(done.fetch_add(1, Ordering::SeqCst) + 1);
            });
        }
    });
    let mut failing = failing.into_inner().expect("threads joined");
    failing.sort_by_key(|(i, _)| *i);
    TwinsResult {
        scenarios: total,
        failing,
        heights: heights.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_partitions_of_five_slots_each_covering_every_slot_once() {
        let parts = partitions();
        assert_eq!(parts.len(), 16);
        let distinct: std::collections::BTreeSet<_> = parts.iter().collect();
        assert_eq!(distinct.len(), 16);
        for p in &parts {
            let mut slots: Vec<u32> = p.iter().flatten().copied().collect();
            slots.sort_unstable();
            assert_eq!(slots, vec![0, 1, 2, 3, 4]);
            assert!(p.iter().all(|g| !g.is_empty()));
        }
    }

    /// The smallest bound runs in CI: every scenario of one round keeps every invariant.
    #[test]
    fn one_round_of_twins_keeps_every_invariant() {
        let r = enumerate(1, 2, None, &|_| {});
        assert_eq!(r.scenarios, 64);
        let failing: Vec<String> = r
            .failing
            .iter()
            .map(|(i, rep)| format!("{i}: {:?}", rep.violations))
            .collect();
        assert!(failing.is_empty(), "{failing:?}");
        assert!(r.heights >= 2 * r.scenarios, "every scenario decides after the heal");
    }

    #[test]
    fn every_index_is_a_distinct_valid_scenario() {
        assert_eq!(count(2), 4 * 256);
        let all: std::collections::BTreeSet<String> = (0..count(2))
            .map(|i| {
                let c = scenario(2, i);
                c.validate().unwrap();
                format!("{:?}{:?}", c.byzantine, c.faults)
            })
            .collect();
        assert_eq!(all.len() as u64, count(2));
    }
}
