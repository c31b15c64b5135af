//! The ledger under seeded simulation, through tendr's public API only.

use tendr_core::crypto::vote_sign_bytes;
use tendr_core::{Message, Vote, VoteType};
use tendr_ledger::sim::{SupplyConserved, Transfers};
use tendr_ledger::Ledger;
use tendr_sim::config::{Fault, FaultKind};
use tendr_sim::{Adversary, AdversaryCtx, Invariant, Payload, Sends, SimConfig, Simulation, Sweep};

fn ledger_run(cfg: SimConfig) -> Simulation<Ledger> {
    Simulation::new(cfg, Ledger::new)
        .workload(Transfers::new(100))
        .invariant(SupplyConserved)
}

/// Seeds to sweep: a short CI run by default, `TENDR_LEDGER_SEEDS=1000` for the long one.
fn seeds(default: u64) -> u64 {
    std::env::var("TENDR_LEDGER_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn transfers_commit_under_a_partition_and_a_crash() {
    let mut cfg = SimConfig::new(4);
    cfg.seed = 3;
    cfg.heights = 30;
    cfg.faults = vec![
        Fault {
            at_ms: 2_000,
            kind: FaultKind::Partition {
                groups: vec![vec![0, 1, 2], vec![3]],
            },
        },
        Fault {
            at_ms: 3_000,
            kind: FaultKind::Crash { node: 1 },
        },
        Fault {
            at_ms: 4_000,
            kind: FaultKind::Restart { node: 1 },
        },
        Fault {
            at_ms: 6_000,
            kind: FaultKind::Heal,
        },
    ];
    let moved = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let a = ledger_run(cfg.clone())
        .invariant(CountTransfers(moved.clone()))
        .run()
        .unwrap();
    assert!(a.ok(), "{:?}", a.violations);
    assert!(a.heights >= 30);
    assert!(a.liveness_checked);
    assert!(moved.get() > 100, "transfers were applied: {} nonces used", moved.get());
    // Deterministic: the same seed gives the same trace.
    let b = ledger_run(cfg).run().unwrap();
    assert_eq!(a.trace_hash, b.trace_hash);
}

/// Observes (never fails): the most nonces used on any honest node.
struct CountTransfers(std::rc::Rc<std::cell::Cell<u64>>);

impl tendr_sim::AppInvariant<Ledger> for CountTransfers {
    fn name(&self) -> String {
        "count".into()
    }
    fn check(&mut self, _: usize, _: u64, app: &Ledger) -> Result<(), String> {
        let used: u64 = app.accounts().map(|(_, a)| a.nonce).sum();
        self.0.set(self.0.get().max(used));
        Ok(())
    }
}

#[test]
fn a_sweep_with_byzantine_validators_partitions_and_crashes_holds() {
    // Each seed draws 4, 7 or 10 validators, up to f of them Byzantine with any built-in
    // behaviour, a lossy network and a fault timeline.
    let n = seeds(40);
    let r = Sweep::new(0..n, |seed| ledger_run(SimConfig::from_seed(seed, None)))
        .progress(n > 100)
        .run();
    r.assert_ok();
    assert_eq!(r.runs, n);
}

/// A user's own Byzantine behaviour: every prevote it sends goes out twice, once for its
/// block and once for nil (a double vote), to everyone.
struct DoublePrevoter;

impl Adversary for DoublePrevoter {
    fn name(&self) -> String {
        "double-prevoter".into()
    }
    fn transform(&mut self, ctx: &mut AdversaryCtx<'_>, msg: Message, dests: Vec<usize>) -> Sends {
        let mut out = vec![(Payload::msg(msg.clone()), dests.clone())];
        if let Message::Vote(v) = &msg {
            if v.vote_type == VoteType::Prevote && v.validator == ctx.key.address() && v.block_id.is_some() {
                let bytes = vote_sign_bytes(ctx.chain_id, v.vote_type, v.height, v.round, None);
                let nil = Vote {
                    block_id: None,
                    signature: ctx.key.sign(&bytes),
                    ..v.clone()
                };
                out.push((Payload::msg(Message::Vote(nil)), dests));
            }
        }
        out
    }
}

#[test]
fn a_custom_adversary_is_convicted_and_changes_nothing() {
    let mut cfg = SimConfig::new(4);
    cfg.seed = 11;
    cfg.heights = 10;
    let r = ledger_run(cfg).adversary(3, DoublePrevoter).run().unwrap();
    assert!(r.ok(), "{:?}", r.violations);
    assert_eq!(r.byzantine, vec![(3, "double-prevoter".to_string())]);
    assert_eq!(r.convicted.len(), 1, "its double votes are evidence against it");
}

#[test]
fn a_custom_node_in_a_config_needs_its_adversary() {
    let mut cfg = SimConfig::new(4);
    cfg.byzantine.push(tendr_sim::config::Byzantine {
        node: 2,
        behaviour: tendr_sim::Behaviour::Custom,
    });
    let err = ledger_run(cfg).run().unwrap_err();
    assert!(err.contains("no adversary was given"), "{err}");
}

/// An invariant that any transfer breaks: for tests of failure reports.
struct NoTransfers;
impl tendr_sim::AppInvariant<Ledger> for NoTransfers {
    fn name(&self) -> String {
        "no-transfers".into()
    }
    fn check(&mut self, _: usize, _: u64, app: &Ledger) -> Result<(), String> {
        match app.accounts().find(|(_, a)| a.nonce > 0) {
            Some((addr, _)) => Err(format!("{addr} sent money")),
            None => Ok(()),
        }
    }
}

/// A broken invariant is reported with the invariant's name.
#[test]
fn an_application_invariant_can_fail() {
    let mut cfg = SimConfig::new(4);
    cfg.heights = 10;
    let r = ledger_run(cfg).invariant(NoTransfers).run().unwrap();
    assert_eq!(r.violations[0].invariant, Invariant::Application);
    assert!(
        r.violations[0].detail.starts_with("no-transfers"),
        "{}",
        r.violations[0].detail
    );
}

/// A sweep over your own application shrinks its first failure (fewer faults, Byzantine
/// nodes, heights, less noise) and writes the small config where `TENDR_SIM_CONFIG` replays it.
#[test]
fn a_user_apps_failure_is_shrunk() {
    let build = |seed| ledger_run(SimConfig::from_seed(seed, None)).invariant(NoTransfers);
    let r = Sweep::new(0..4, build).stop_on_failure(true).shrink(40).run();
    let first = &r.failures[0];
    let original = SimConfig::from_seed(first.seed, None);
    let (small, path) = first.shrunk.as_ref().expect("the first failure is shrunk");
    assert!(
        small.faults.len() + small.byzantine.len() < original.faults.len() + original.byzantine.len()
            || small.heights < original.heights,
        "nothing removed: {small:?}"
    );
    let written = tendr_sim::cli::load_config(path.as_ref().unwrap()).unwrap();
    assert_eq!(&written, small);
    let again = build(small.seed).configure(|c| *c = written).run().unwrap();
    assert_eq!(again.violations[0].invariant, Invariant::Application);
    let _ = std::fs::remove_file(path.as_ref().unwrap());
}

/// Each planted non-determinism is found by the simulator as diverging app hashes, within 200
/// seeds, with the height, the two nodes and the replay.
#[cfg(feature = "planted-bugs")]
#[test]
fn planted_non_determinism_is_found() {
    use tendr_ledger::planted;
    for (bug, name) in [
        (planted::HASHMAP_ORDER, "hash-map order"),
        (planted::WALL_CLOCK, "wall clock"),
        (planted::THREAD_TIMING, "thread timing"),
    ] {
        planted::set(bug);
        let r = Sweep::new(0..200, |seed| ledger_run(SimConfig::from_seed(seed, None)))
            .stop_on_failure(true)
            .run();
        planted::set(0);
        let first = r
            .failures
            .iter()
            .find(|f| f.invariant == Invariant::AppHashAgreement)
            .unwrap_or_else(|| panic!("{name}: not found in 200 seeds ({} failures)", r.failures.len()));
        assert!(first.detail.contains("diverged at height"), "{}", first.detail);
        assert!(first.replay.contains(&format!("TENDR_SIM_SEED={}", first.seed)));
        eprintln!(
            "{name}: found after {} seeds, the first failing seed {}: {}",
            r.runs, first.seed, first.detail
        );
    }
}
