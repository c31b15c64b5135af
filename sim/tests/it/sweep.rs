//! The CI safety sweep: a fixed set of seeds across 4, 7 and 10 validators, with up to f
//! Byzantine nodes of mixed behaviours, random partitions, crashes and clock faults. Every
//! invariant must hold. (`tendr sim explore --seeds N` runs the long version.)

use tendr_sim::config::VerifyMode;
use tendr_sim::explore::{explore, ExploreOpts};

fn sweep(validators: u32, seeds: u64, start_seed: u64) {
    sweep_in(validators, seeds, start_seed, None);
}

fn sweep_in(validators: u32, seeds: u64, start_seed: u64, verify: Option<VerifyMode>) -> ExploreOpts {
    let opts = ExploreOpts {
        seeds,
        start_seed,
        jobs: 2,
        validators: Some(validators),
        verify,
        ..Default::default()
    };
    let reports = explore(&opts, &|_, _| {});
    assert_eq!(reports.len() as u64, seeds);
    let failing: Vec<String> = reports
        .iter()
        .filter(|r| !r.ok())
        .map(|r| format!("seed {} {:?}: {}", r.seed, r.broken(), opts.replay_command(r.seed)))
        .collect();
    assert!(failing.is_empty(), "invariants broken:\n{}", failing.join("\n"));
    let byzantine_runs = reports.iter().filter(|r| !r.byzantine.is_empty()).count();
    assert!(byzantine_runs > 0, "the sweep should include Byzantine runs");
    assert!(reports.iter().all(|r| r.heights >= 8), "every run decides its heights");
    opts
}

/// The large-sweep mode: trusted signatures (null signer, no verification), every other
/// check as in the full sweep; its replay commands carry the mode.
#[test]
fn sweep_7_validators_trusted() {
    let opts = sweep_in(7, 30, 4000, Some(VerifyMode::Trusted));
    assert!(opts.replay_command(4000).contains("--verify trusted"));
}

#[test]
fn sweep_4_validators() {
    sweep(4, 40, 1000);
}

#[test]
fn sweep_7_validators() {
    sweep(7, 25, 2000);
}

#[test]
fn sweep_10_validators() {
    sweep(10, 15, 3000);
}
