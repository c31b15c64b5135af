//! The checks can fail: each planted core bug is caught by the right invariant within 1,000
//! seeds, and the printed replay command reproduces it.

use tendr_sim::config::VerifyMode;
use tendr_sim::explore::{first_failure, ExploreOpts};
use tendr_sim::{run, Invariant};

/// Searches seeds 0..999 in trusted mode (no signatures: the large-sweep mode, fast enough for
/// CI) for one that catches `bug` by one of `expected`.
fn catches(bug: &str, expected: &[Invariant]) {
    catches_from(bug, 0, Some(VerifyMode::Trusted), expected);
}

/// Searches 1,000 seeds from `start_seed` (in `verify` mode, full by default) for one that
/// catches `bug` by one of `expected`.
fn catches_from(bug: &str, start_seed: u64, verify: Option<VerifyMode>, expected: &[Invariant]) {
    let opts = ExploreOpts {
        seeds: 1000,
        start_seed,
        jobs: 2,
        planted: Some(bug.into()),
        verify,
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

/// Never locking breaks agreement; `lock-kept` may see it first, when a lock restored from the
/// consensus log after a restart is dropped.
#[test]
fn ignoring_the_lock_breaks_agreement() {
    catches("ignore-lock", &[Invariant::Agreement, Invariant::LockKept]);
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

/// Timeouts that do not grow with the round: the `slow-links` scenario, whose links are
/// slower than the first timeouts, never decides a height with them.
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
/// validators locked on it prevote nil for every fresh value: the height never ends. The state
/// check `lock-kept` sees it first (a lock with no validValue).
#[test]
fn forgetting_the_valid_value_stalls_liveness() {
    catches("skip-valid-value", &[Invariant::LockKept, Invariant::Liveness]);
}

/// A lock released on a nil polka (L44-46 with `lockedValue = nil`) breaks agreement only when
/// a later proposer brings another value to the unlocked majority (beyond 1,000 seeds); the
/// state check `lock-kept` sees the lock move back at the first nil polka after a lock.
#[test]
fn unlocking_on_a_nil_polka_moves_the_lock_back() {
    catches("unlock-on-nil-polka", &[Invariant::LockKept, Invariant::Agreement]);
}

/// A restart that restores the lock but not validValue stalls a height only when the restarted
/// proposer's re-proposal is the one the others need (beyond 1,000 seeds); `lock-kept` sees a
/// restarted node locked with no validValue at once.
#[test]
fn a_restart_that_forgets_the_valid_value_is_caught() {
    catches(
        "restart-forgets-valid-value",
        &[Invariant::LockKept, Invariant::Liveness],
    );
}

/// Seeds draw links slower than the first timeouts once in twelve runs: fixed timeouts never
/// catch up with them.
#[test]
fn fixed_timeouts_stall_random_slow_links() {
    catches("fixed-timeouts", &[Invariant::Liveness]);
}

/// A lone higher-round vote (the `round-jump` adversary) moves a node that counts L55's f+1
/// as one message: `round-justified` sees it enter a round nobody led it to.
#[test]
fn skipping_rounds_on_one_message_is_unjustified() {
    catches("round-skip-on-one", &[Invariant::RoundJustified]);
}

#[test]
fn skipping_rounds_on_f_messages_is_unjustified() {
    catches("round-skip-off-by-one", &[Invariant::RoundJustified]);
}

#[test]
fn counting_a_validator_twice_for_a_round_skip_is_unjustified() {
    catches("round-skip-counts-twice", &[Invariant::RoundJustified]);
}

/// The `out-of-turn` adversary proposes in rounds it does not lead; a node that takes a
/// proposal from anyone prevotes it. Only a signature check can refuse such a proposal, so
/// this runs with signatures (cached), not trusted.
#[test]
fn accepting_a_non_proposers_proposal_is_caught() {
    catches_from(
        "accept-non-proposer",
        0,
        Some(VerifyMode::Cached),
        &[Invariant::ProposalFromProposer],
    );
}

/// Duplicated deliveries counted again make a false +2/3: a commit without +2/3 signatures.
#[test]
fn counting_duplicate_votes_breaks_commit_integrity() {
    catches("count-duplicates", &[Invariant::CommitIntegrity, Invariant::Agreement]);
}

/// An amnesiac validator re-votes differently after it forgets; the nodes that take both votes
/// must report the equivocation.
#[test]
fn not_recording_evidence_is_caught() {
    catches("skip-evidence", &[Invariant::EvidenceReported]);
}
