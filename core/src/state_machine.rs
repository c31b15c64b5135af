//! Algorithm 1 of "The latest gossip on BFT consensus" (Buchman, Kwon, Milosevic 2018) as a
//! pure transition function over the state of one height.
//!
//! The engine turns messages and timeouts into the [`Event`]s below (each one is the guard of
//! an `upon` rule of the paper, already evaluated), calls [`apply`], and carries out the
//! returned [`Action`]s. Every arm of the `match` cites the line of Algorithm 1 it implements.
//! "For the first time" guards (lines 34, 36, 47) are the engine's job: it raises those events
//! at most once per round.

use crate::types::{BlockId, Height, Round};

/// The paper's `step_p`, plus `Commit` once the height is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Step {
    Propose,
    Prevote,
    Precommit,
    Commit,
}

/// State of one height: `round_p`, `step_p`, `lockedValue_p/lockedRound_p`,
/// `validValue_p/validRound_p` and `decision_p`. Values are block ids; the engine keeps blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub height: Height,
    pub round: Round,
    pub step: Step,
    /// `(lockedRound, lockedValue)`; `None` is the paper's `-1, nil`.
    pub locked: Option<(Round, BlockId)>,
    /// `(validRound, validValue)`; `None` is the paper's `-1, nil`.
    pub valid: Option<(Round, BlockId)>,
    pub decision: Option<(Round, BlockId)>,
    /// A deliberately broken rule, to prove the simulator's checks can fail (test feature).
    #[cfg(feature = "planted-bugs")]
    pub planted: Option<crate::PlantedBug>,
}

impl State {
    pub fn new(height: Height) -> Self {
        State {
            height,
            round: Round(0),
            step: Step::Propose,
            locked: None,
            valid: None,
            decision: None,
            #[cfg(feature = "planted-bugs")]
            planted: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum TimeoutKind {
    Propose,
    Prevote,
    Precommit,
    /// Pacing between heights (`target_block_time`); not a paper timeout.
    Commit,
    /// Periodic re-broadcast of our own messages of the round (gossip over lossy links).
    Rebroadcast,
    /// State sync's retries (the node's, not the engine's).
    StateSync,
}

/// The guards of the `upon` rules, evaluated by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// L11 `StartRound(round)`; `proposer` says whether we are `proposer(h_p, round)`.
    StartRound { round: Round, proposer: bool },
    /// L18 the result of `getValue()` (a new block built for this round).
    ProposeValue { round: Round, id: BlockId },
    /// L22 `⟨PROPOSAL, h, round, v, -1⟩` from the proposer, while in step propose.
    Proposal { round: Round, id: BlockId, valid: bool },
    /// L28 `⟨PROPOSAL, h, round, v, vr⟩` and +2/3 `⟨PREVOTE, h, vr, id(v)⟩`, `vr < round`.
    ProposalAndPolkaPrevious {
        round: Round,
        id: BlockId,
        valid: bool,
        vr: Round,
    },
    /// L34 +2/3 `⟨PREVOTE, h, round, *⟩` for the first time.
    PolkaAny { round: Round },
    /// L36 `⟨PROPOSAL, h, round, v, *⟩`, `valid(v)`, +2/3 `⟨PREVOTE, h, round, id(v)⟩`, first time.
    ProposalAndPolkaCurrent { round: Round, id: BlockId },
    /// L44 +2/3 `⟨PREVOTE, h, round, nil⟩`.
    PolkaNil { round: Round },
    /// L47 +2/3 `⟨PRECOMMIT, h, round, *⟩` for the first time.
    PrecommitAny { round: Round },
    /// L49 `⟨PROPOSAL, h, r, v, *⟩`, `valid(v)`, +2/3 `⟨PRECOMMIT, h, r, id(v)⟩`, any round r.
    ProposalAndCommit { round: Round, id: BlockId },
    /// L55 f+1 messages `⟨*, h, round, *, *⟩` with `round > round_p`.
    RoundSkip { round: Round },
    /// L57 `OnTimeoutPropose(h, round)`.
    TimeoutPropose { round: Round },
    /// L61 `OnTimeoutPrevote(h, round)`.
    TimeoutPrevote { round: Round },
    /// L65 `OnTimeoutPrecommit(h, round)`.
    TimeoutPrecommit { round: Round },
}

/// What the state machine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Broadcast `⟨PROPOSAL, h, round, id, pol_round⟩` (L19).
    Propose {
        round: Round,
        id: BlockId,
        pol_round: Option<Round>,
    },
    /// Call `getValue()`: build a new block for this round (L18).
    GetValue { round: Round },
    /// Broadcast `⟨PREVOTE, h, round, id or nil⟩`.
    Prevote { round: Round, id: Option<BlockId> },
    /// Broadcast `⟨PRECOMMIT, h, round, id or nil⟩`.
    Precommit { round: Round, id: Option<BlockId> },
    /// Schedule `OnTimeout*(h, round)`.
    ScheduleTimeout { kind: TimeoutKind, round: Round },
    /// `decision_p[h] = v` (L51).
    Decide { round: Round, id: BlockId },
    /// Call `StartRound(round)` (L65, L55); the engine answers with [`Event::StartRound`].
    NewRound { round: Round },
}

/// Whether the guard of a timeout's rule (L57, L61, L65) holds: `apply` of that timeout event
/// does something exactly when this is true (a test checks every state). A driver may skip a
/// timeout for which it is false.
pub fn timeout_applies(s: &State, kind: TimeoutKind, round: Round) -> bool {
    s.step != Step::Commit
        && round == s.round
        && match kind {
            TimeoutKind::Propose => s.step == Step::Propose,
            TimeoutKind::Prevote => s.step == Step::Prevote,
            TimeoutKind::Precommit => true,
            TimeoutKind::Commit | TimeoutKind::Rebroadcast | TimeoutKind::StateSync => false,
        }
}

/// Applies one event. Events that do not match the current round and step are no-ops (stale
/// timeouts, late messages), which is exactly how the paper's guards read.
pub fn apply(s: &mut State, ev: Event) -> Vec<Action> {
    use Event::*;
    use Step::*;
    if s.step == Commit {
        return vec![]; // decided: nothing more happens at this height
    }
    match (s.step, ev) {
        // L11-21 StartRound: the proposer proposes validValue if it has one, else getValue();
        // everyone else schedules timeoutPropose.
        (_, StartRound { round, proposer }) if round >= s.round => {
            s.round = round;
            s.step = Propose;
            match (proposer, s.valid) {
                (true, Some((vr, v))) => vec![Action::Propose {
                    round,
                    id: v,
                    pol_round: Some(vr),
                }], // L15-16
                (true, None) => vec![Action::GetValue { round }], // L18
                (false, _) => vec![Action::ScheduleTimeout {
                    kind: TimeoutKind::Propose,
                    round,
                }], // L21
            }
        }
        // L18-19 getValue() returned: broadcast the proposal with validRound -1.
        (Propose, ProposeValue { round, id }) if round == s.round => {
            vec![Action::Propose {
                round,
                id,
                pol_round: None,
            }]
        }
        // L22-27 proposal with vr = -1: prevote it if valid and we are not locked on another.
        (Propose, Proposal { round, id, valid }) if round == s.round => {
            let ok = valid && s.locked.is_none_or(|(_, lv)| lv == id); // L23
            #[cfg(feature = "planted-bugs")]
            let ok = ok || (valid && s.planted == Some(crate::PlantedBug::PrevoteIgnoresLock));
            s.step = Prevote; // L27
            vec![Action::Prevote {
                round,
                id: ok.then_some(id),
            }] // L24 / L26
        }
        // L28-33 proposal with vr >= 0 backed by +2/3 prevotes at vr: prevote it if valid and
        // our lock is not newer than vr (or is on v).
        (Propose, ProposalAndPolkaPrevious { round, id, valid, vr }) if round == s.round && vr < round => {
            let ok = valid && s.locked.is_none_or(|(lr, lv)| lr <= vr || lv == id); // L29
            s.step = Prevote; // L33
            vec![Action::Prevote {
                round,
                id: ok.then_some(id),
            }] // L30 / L32
        }
        // L34-35 +2/3 prevotes of any kind: schedule timeoutPrevote.
        (Prevote, PolkaAny { round }) if round == s.round => {
            vec![Action::ScheduleTimeout {
                kind: TimeoutKind::Prevote,
                round,
            }]
        }
        // L36-43 +2/3 prevotes for a valid proposal: lock and precommit (if still in prevote),
        // and in any case remember it as validValue.
        (Prevote | Precommit, ProposalAndPolkaCurrent { round, id }) if round == s.round => {
            let mut out = vec![];
            if s.step == Prevote {
                s.locked = Some((round, id)); // L38-39
                #[cfg(feature = "planted-bugs")]
                if s.planted == Some(crate::PlantedBug::IgnoreLock) {
                    s.locked = None;
                }
                out.push(Action::Precommit { round, id: Some(id) }); // L40
                s.step = Precommit; // L41
            }
            s.valid = Some((round, id)); // L42-43
            #[cfg(feature = "planted-bugs")]
            if s.planted == Some(crate::PlantedBug::SkipValidValue) {
                s.valid = None;
            }
            out
        }
        // L44-46 +2/3 nil prevotes: precommit nil.
        (Prevote, PolkaNil { round }) if round == s.round => {
            s.step = Precommit;
            #[cfg(feature = "planted-bugs")]
            if s.planted == Some(crate::PlantedBug::UnlockOnNilPolka) {
                s.locked = None;
            }
            vec![Action::Precommit { round, id: None }]
        }
        // L47-48 +2/3 precommits of any kind: schedule timeoutPrecommit.
        (_, PrecommitAny { round }) if round == s.round => {
            vec![Action::ScheduleTimeout {
                kind: TimeoutKind::Precommit,
                round,
            }]
        }
        // L49-54 +2/3 precommits for a valid proposal, in any round: decide.
        (_, ProposalAndCommit { round, id }) if s.decision.is_none() => {
            s.decision = Some((round, id)); // L51
            s.step = Commit;
            vec![Action::Decide { round, id }]
        }
        // L55-56 f+1 messages of a higher round: skip to it.
        (_, RoundSkip { round }) if round > s.round => vec![Action::NewRound { round }],
        // L57-60 timeoutPropose: prevote nil.
        (Propose, TimeoutPropose { round }) if round == s.round => {
            s.step = Prevote;
            vec![Action::Prevote { round, id: None }]
        }
        // L61-64 timeoutPrevote: precommit nil.
        (Prevote, TimeoutPrevote { round }) if round == s.round => {
            s.step = Precommit;
            vec![Action::Precommit { round, id: None }]
        }
        // L65-67 timeoutPrecommit: next round.
        (_, TimeoutPrecommit { round }) if round == s.round => vec![Action::NewRound { round: round.next() }],
        // Anything else: the guard does not hold in this state.
        _ => vec![],
    }
}

#[cfg(test)]
mod tests {
    //! One table of steps per rule: (state, event) -> (actions, state).
    use super::*;
    use crate::types::Hash;

    const V: BlockId = Hash([1; 32]);
    const W: BlockId = Hash([2; 32]);

    fn st(round: u32, step: Step) -> State {
        State {
            round: Round(round),
            step,
            ..State::new(Height(1))
        }
    }
    fn r(n: u32) -> Round {
        Round(n)
    }

    #[test]
    fn l11_start_round_proposer_without_valid_value_gets_value() {
        let mut s = st(0, Step::Propose);
        assert_eq!(
            apply(
                &mut s,
                Event::StartRound {
                    round: r(0),
                    proposer: true
                }
            ),
            vec![Action::GetValue { round: r(0) }]
        );
    }

    #[test]
    fn l15_start_round_proposer_reproposes_valid_value() {
        let mut s = State {
            valid: Some((r(1), V)),
            ..st(1, Step::Precommit)
        };
        assert_eq!(
            apply(
                &mut s,
                Event::StartRound {
                    round: r(2),
                    proposer: true
                }
            ),
            vec![Action::Propose {
                round: r(2),
                id: V,
                pol_round: Some(r(1))
            }]
        );
        assert_eq!((s.round, s.step), (r(2), Step::Propose));
    }

    #[test]
    fn l21_start_round_non_proposer_schedules_timeout_propose() {
        let mut s = st(0, Step::Propose);
        assert_eq!(
            apply(
                &mut s,
                Event::StartRound {
                    round: r(3),
                    proposer: false
                }
            ),
            vec![Action::ScheduleTimeout {
                kind: TimeoutKind::Propose,
                round: r(3)
            }]
        );
        assert_eq!(s.round, r(3));
    }

    #[test]
    fn l18_propose_value_broadcasts_proposal_with_nil_valid_round() {
        let mut s = st(0, Step::Propose);
        assert_eq!(
            apply(&mut s, Event::ProposeValue { round: r(0), id: V }),
            vec![Action::Propose {
                round: r(0),
                id: V,
                pol_round: None
            }]
        );
    }

    #[test]
    fn l22_proposal_prevotes_valid_unlocked_value() {
        let mut s = st(0, Step::Propose);
        assert_eq!(
            apply(
                &mut s,
                Event::Proposal {
                    round: r(0),
                    id: V,
                    valid: true
                }
            ),
            vec![Action::Prevote {
                round: r(0),
                id: Some(V)
            }]
        );
        assert_eq!(s.step, Step::Prevote);
    }

    #[test]
    fn l22_proposal_prevotes_locked_value() {
        let mut s = State {
            locked: Some((r(0), V)),
            ..st(1, Step::Propose)
        };
        let a = apply(
            &mut s,
            Event::Proposal {
                round: r(1),
                id: V,
                valid: true,
            },
        );
        assert_eq!(
            a,
            vec![Action::Prevote {
                round: r(1),
                id: Some(V)
            }]
        );
    }

    #[test]
    fn l26_proposal_prevotes_nil_when_locked_on_other_or_invalid() {
        let mut s = State {
            locked: Some((r(0), W)),
            ..st(1, Step::Propose)
        };
        assert_eq!(
            apply(
                &mut s,
                Event::Proposal {
                    round: r(1),
                    id: V,
                    valid: true
                }
            ),
            vec![Action::Prevote { round: r(1), id: None }]
        );
        let mut s = st(0, Step::Propose);
        assert_eq!(
            apply(
                &mut s,
                Event::Proposal {
                    round: r(0),
                    id: V,
                    valid: false
                }
            ),
            vec![Action::Prevote { round: r(0), id: None }]
        );
    }

    #[test]
    fn l28_proposal_with_polka_prevotes_when_lock_not_newer() {
        let mut s = State {
            locked: Some((r(1), W)),
            ..st(3, Step::Propose)
        };
        let a = apply(
            &mut s,
            Event::ProposalAndPolkaPrevious {
                round: r(3),
                id: V,
                valid: true,
                vr: r(2),
            },
        );
        assert_eq!(
            a,
            vec![Action::Prevote {
                round: r(3),
                id: Some(V)
            }]
        );
        assert_eq!(s.step, Step::Prevote);
    }

    #[test]
    fn l32_proposal_with_polka_prevotes_nil_when_lock_newer() {
        let mut s = State {
            locked: Some((r(2), W)),
            ..st(3, Step::Propose)
        };
        let a = apply(
            &mut s,
            Event::ProposalAndPolkaPrevious {
                round: r(3),
                id: V,
                valid: true,
                vr: r(1),
            },
        );
        assert_eq!(a, vec![Action::Prevote { round: r(3), id: None }]);
        let mut s = st(3, Step::Propose);
        let a = apply(
            &mut s,
            Event::ProposalAndPolkaPrevious {
                round: r(3),
                id: V,
                valid: false,
                vr: r(1),
            },
        );
        assert_eq!(a, vec![Action::Prevote { round: r(3), id: None }]);
    }

    /// L28 needs `vr < round`: a proposal that claims a polka of its own round or a later
    /// one is not a proof of lock, and the state machine leaves it alone even when the engine
    /// raised it (the engine also filters it, so only this test notices a guard without it).
    #[test]
    fn l28_a_proposal_whose_valid_round_is_not_earlier_than_its_round_is_ignored() {
        for vr in [r(3), r(4)] {
            let mut s = st(3, Step::Propose);
            let before = s.clone();
            let a = apply(
                &mut s,
                Event::ProposalAndPolkaPrevious {
                    round: r(3),
                    id: V,
                    valid: true,
                    vr,
                },
            );
            assert_eq!(a, vec![], "vr {vr:?} in round 3");
            assert_eq!(s, before);
        }
    }

    #[test]
    fn l34_polka_any_schedules_timeout_prevote() {
        let mut s = st(0, Step::Prevote);
        assert_eq!(
            apply(&mut s, Event::PolkaAny { round: r(0) }),
            vec![Action::ScheduleTimeout {
                kind: TimeoutKind::Prevote,
                round: r(0)
            }]
        );
        let mut s = st(0, Step::Propose);
        assert_eq!(
            apply(&mut s, Event::PolkaAny { round: r(0) }),
            vec![],
            "only in step prevote"
        );
    }

    #[test]
    fn l36_polka_current_locks_and_precommits() {
        let mut s = st(0, Step::Prevote);
        assert_eq!(
            apply(&mut s, Event::ProposalAndPolkaCurrent { round: r(0), id: V }),
            vec![Action::Precommit {
                round: r(0),
                id: Some(V)
            }]
        );
        assert_eq!(s.locked, Some((r(0), V)));
        assert_eq!(s.valid, Some((r(0), V)));
        assert_eq!(s.step, Step::Precommit);
    }

    #[test]
    fn l42_polka_current_in_precommit_only_updates_valid_value() {
        let mut s = st(0, Step::Precommit);
        assert_eq!(
            apply(&mut s, Event::ProposalAndPolkaCurrent { round: r(0), id: V }),
            vec![]
        );
        assert_eq!(s.locked, None);
        assert_eq!(s.valid, Some((r(0), V)));
    }

    #[test]
    fn l44_polka_nil_precommits_nil() {
        let mut s = st(0, Step::Prevote);
        assert_eq!(
            apply(&mut s, Event::PolkaNil { round: r(0) }),
            vec![Action::Precommit { round: r(0), id: None }]
        );
        assert_eq!(s.step, Step::Precommit);
    }

    #[test]
    fn l47_precommit_any_schedules_timeout_precommit() {
        let mut s = st(0, Step::Prevote);
        assert_eq!(
            apply(&mut s, Event::PrecommitAny { round: r(0) }),
            vec![Action::ScheduleTimeout {
                kind: TimeoutKind::Precommit,
                round: r(0)
            }]
        );
    }

    #[test]
    fn l49_commit_decides_in_any_round() {
        let mut s = st(5, Step::Prevote);
        assert_eq!(
            apply(&mut s, Event::ProposalAndCommit { round: r(2), id: V }),
            vec![Action::Decide { round: r(2), id: V }]
        );
        assert_eq!(s.decision, Some((r(2), V)));
        assert_eq!(
            apply(&mut s, Event::ProposalAndCommit { round: r(3), id: W }),
            vec![],
            "decides once"
        );
    }

    #[test]
    fn l55_round_skip_on_higher_round() {
        let mut s = st(1, Step::Prevote);
        assert_eq!(
            apply(&mut s, Event::RoundSkip { round: r(4) }),
            vec![Action::NewRound { round: r(4) }]
        );
        assert_eq!(apply(&mut s, Event::RoundSkip { round: r(1) }), vec![]);
    }

    #[test]
    fn l57_timeout_propose_prevotes_nil() {
        let mut s = st(0, Step::Propose);
        assert_eq!(
            apply(&mut s, Event::TimeoutPropose { round: r(0) }),
            vec![Action::Prevote { round: r(0), id: None }]
        );
        let mut s = st(1, Step::Propose);
        assert_eq!(
            apply(&mut s, Event::TimeoutPropose { round: r(0) }),
            vec![],
            "stale timeout is a no-op"
        );
    }

    #[test]
    fn l61_timeout_prevote_precommits_nil() {
        let mut s = st(0, Step::Prevote);
        assert_eq!(
            apply(&mut s, Event::TimeoutPrevote { round: r(0) }),
            vec![Action::Precommit { round: r(0), id: None }]
        );
        let mut s = st(0, Step::Precommit);
        assert_eq!(apply(&mut s, Event::TimeoutPrevote { round: r(0) }), vec![]);
    }

    #[test]
    fn timeout_applies_exactly_when_apply_acts() {
        for step in [Step::Propose, Step::Prevote, Step::Precommit, Step::Commit] {
            for (kind, ev) in [
                (TimeoutKind::Propose, Event::TimeoutPropose { round: r(1) }),
                (TimeoutKind::Prevote, Event::TimeoutPrevote { round: r(1) }),
                (TimeoutKind::Precommit, Event::TimeoutPrecommit { round: r(1) }),
            ] {
                for round in 0..3 {
                    let mut s = st(round, step);
                    let applies = timeout_applies(&s, kind, r(1));
                    let acted = !apply(&mut s, ev.clone()).is_empty();
                    assert_eq!(applies, acted, "{kind:?} of round 1 at round {round}, {step:?}");
                }
            }
        }
    }

    /// Every `upon` rule whose guard names the current round (`round == round_p`; L11's
    /// `StartRound` only moves forward) ignores an event of another round and leaves the state
    /// as it was. The engine raises these events for the current round only, so without this
    /// table nothing would notice a guard that lost its round test (cargo-mutants found seven).
    #[test]
    fn events_of_another_round_are_no_ops() {
        let events = |r: Round| {
            vec![
                (
                    Step::Propose,
                    Event::StartRound {
                        round: r,
                        proposer: true,
                    },
                ),
                (Step::Propose, Event::ProposeValue { round: r, id: V }),
                (
                    Step::Propose,
                    Event::Proposal {
                        round: r,
                        id: V,
                        valid: true,
                    },
                ),
                (
                    Step::Propose,
                    Event::ProposalAndPolkaPrevious {
                        round: r,
                        id: V,
                        valid: true,
                        vr: Round(0),
                    },
                ),
                (Step::Prevote, Event::PolkaAny { round: r }),
                (Step::Prevote, Event::ProposalAndPolkaCurrent { round: r, id: V }),
                (Step::Prevote, Event::PolkaNil { round: r }),
                (Step::Prevote, Event::PrecommitAny { round: r }),
                (Step::Propose, Event::TimeoutPropose { round: r }),
                (Step::Prevote, Event::TimeoutPrevote { round: r }),
                (Step::Precommit, Event::TimeoutPrecommit { round: r }),
            ]
        };
        for (step, ev) in events(r(1)) {
            let mut s = st(2, step);
            let before = s.clone();
            assert_eq!(apply(&mut s, ev.clone()), vec![], "{ev:?} at round 2");
            assert_eq!(s, before, "{ev:?} at round 2 changed the state");
        }
        for (step, ev) in events(r(3)).into_iter().skip(1) {
            let mut s = st(2, step);
            let before = s.clone();
            assert_eq!(apply(&mut s, ev.clone()), vec![], "{ev:?} at round 2");
            assert_eq!(s, before, "{ev:?} at round 2 changed the state");
        }
    }

    #[test]
    fn l65_timeout_precommit_starts_next_round() {
        let mut s = st(2, Step::Precommit);
        assert_eq!(
            apply(&mut s, Event::TimeoutPrecommit { round: r(2) }),
            vec![Action::NewRound { round: r(3) }]
        );
    }
}
