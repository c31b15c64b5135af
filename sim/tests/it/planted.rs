//! The checks can fail: each planted core bug is caught by the right invariant within 1,000
//! seeds, and the printed replay command reproduces it.

use tendr_sim::explore::{first_failure, ExploreOpts};
use tendr_sim::{run, Invariant};

fn catches(bug: &str, expected: &[Invariant]) {
    let opts = ExploreOpts {
        seeds: 1000,
        start_seed: 0,
        jobs: 2,
        planted: Some(bug.into()),
        ..Default::default()
    };
    let r = first_failure(&opts).unwrap_or_else(|| panic!("planted bug {bug} not caught in 1000 seeds"));
    let cmd = opts.replay_command(r.seed);
    println!("{bug}: seed {} breaks {:?}; replay: {cmd}", r.seed, r.broken());
    assert!(
        expected.iter().any(|i| r.broken().contains(i)),
        "{bug} broke {:?}, expected one of {expected:?}",
        r.broken()
    );
    assert!(cmd.contains(&format!("--seed {}", r.seed)) && cmd.contains(bug));
    let again = run(opts.config(r.seed)).unwrap();
    assert_eq!(again.trace_hash, r.trace_hash, "the replay is the same run");
}

#[test]
fn ignoring_the_lock_breaks_agreement() {
    catches("ignore-lock", &[Invariant::Agreement]);
}

#[test]
fn deciding_on_prevotes_breaks_commit_integrity() {
    catches(
        "decide-on-prevotes",
        &[Invariant::CommitIntegrity, Invariant::Agreement],
    );
}

#[test]
fn counting_by_number_breaks_commit_integrity() {
    catches("count-by-number", &[Invariant::CommitIntegrity, Invariant::Agreement]);
}

#[test]
fn forgetting_the_last_vote_double_signs() {
    catches("forget-last-vote", &[Invariant::HonestDoubleSign]);
}

#[test]
fn prevoting_a_fresh_value_over_the_lock_breaks_agreement() {
    catches("prevote-ignores-lock", &[Invariant::Agreement]);
}

/// Timeouts that do not grow with the round survive 1,000 random seeds (their links are
/// faster than the first timeouts); the `slow-links` scenario, whose links are slower, kills
/// them: with fixed timeouts no height is ever decided.
#[test]
fn fixed_timeouts_never_decide_over_slow_links() {
    let s = tendr_sim::scenario::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scenarios/slow-links.toml"
    )))
    .unwrap();
    let mut c = s.config.clone();
    assert!(run(c.clone()).unwrap().ok(), "growing timeouts decide");
    c.planted = Some("fixed-timeouts".into());
    let r = run(c).unwrap();
    assert!(r.broken().contains(&Invariant::Liveness), "{:?}", r.violations);
    assert_eq!(r.heights, 0);
}

/// Without L42-43 a later round's proposer never re-proposes the value that had a polka, and
/// validators locked on it prevote nil for every fresh value: the height never ends.
#[test]
fn forgetting_the_valid_value_stalls_liveness() {
    catches("skip-valid-value", &[Invariant::Liveness]);
}
