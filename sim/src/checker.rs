//! Invariants, checked while the run goes. The checker only observes — what nodes persist,
//! what goes on the wire, what they decide — and nothing flows back into the run.

use serde::Serialize;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tendr_core::chain::verify_commit;
use tendr_core::engine::WalEntry;
use tendr_core::state_machine::State;
use tendr_core::traits::SignatureVerifier;
use tendr_core::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Invariant {
    /// No two honest nodes decide different blocks at one height.
    Agreement,
    /// Every decided block was proposed and is valid for the application.
    Validity,
    /// Every commit carries valid precommits of more than 2/3 of the power.
    CommitIntegrity,
    /// No honest validator signs two different votes for one height, round and type.
    HonestDoubleSign,
    /// An honest node persists each message it signs before sending it.
    PersistBeforeSend,
    /// When agreement breaks, evidence convicts validators with more than 1/3 of the power.
    Accountability,
    /// After the last fault, every honest running node decides within the bound.
    Liveness,
    /// Every honest node's application has the same hash after executing the same height
    /// (the application is deterministic).
    AppHashAgreement,
    /// An invariant of the application's own (`AppInvariant`).
    Application,
    /// No honest node refuses an honest node's message in a way that blames the sender (the
    /// rule a real node strikes and bans peers by: [`NodeError::blames_sender`]). A breach
    /// means honest validators would cut each other off on a real network.
    ///
    /// [`NodeError::blames_sender`]: tendr_core::traits::NodeError::blames_sender
    HonestNotBlamed,
    /// An honest validator prevotes a value in round r only when the proposer of (height, r)
    /// proposed it (L22 and L28: `from proposer(h_p, round_p)`).
    ProposalFromProposer,
    /// An honest validator enters round r > 0 of a height only after +2/3 precommits of round
    /// r-1 went on the wire (L47, L65) or messages of round r from others holding more than
    /// 1/3 of the power (L55, the f+1). Checked at its first vote of the round.
    RoundJustified,
    /// An honest node that accepted two votes of one validator for one height, round and
    /// type with different values, both while at that height, reports the evidence.
    EvidenceReported,
    /// An honest node's lock only moves forward within a height: lockedRound never decreases
    /// and lockedValue changes only with it (L36-41 are the only rules that write them; L11-13
    /// reset them at a new height). And validRound is never below lockedRound: L36-43 set both
    /// at once and validRound only grows, so a restart must restore both from the consensus
    /// log. Checked on the engine's state after every step (a white-box invariant).
    LockKept,
}

impl Invariant {
    pub const ALL: [Invariant; 14] = [
        Invariant::Agreement,
        Invariant::Validity,
        Invariant::CommitIntegrity,
        Invariant::HonestDoubleSign,
        Invariant::PersistBeforeSend,
        Invariant::Accountability,
        Invariant::Liveness,
        Invariant::AppHashAgreement,
        Invariant::Application,
        Invariant::HonestNotBlamed,
        Invariant::ProposalFromProposer,
        Invariant::RoundJustified,
        Invariant::EvidenceReported,
        Invariant::LockKept,
    ];
    pub fn name(&self) -> &'static str {
        match self {
            Invariant::Agreement => "agreement",
            Invariant::Validity => "validity",
            Invariant::CommitIntegrity => "commit-integrity",
            Invariant::HonestDoubleSign => "no-honest-double-sign",
            Invariant::PersistBeforeSend => "persist-before-send",
            Invariant::Accountability => "accountability",
            Invariant::Liveness => "liveness",
            Invariant::AppHashAgreement => "app-hash-agreement",
            Invariant::Application => "application",
            Invariant::HonestNotBlamed => "honest-not-blamed",
            Invariant::ProposalFromProposer => "proposal-from-proposer",
            Invariant::RoundJustified => "round-justified",
            Invariant::EvidenceReported => "evidence-reported",
            Invariant::LockKept => "lock-kept",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub invariant: Invariant,
    pub at_ms: u64,
    pub detail: String,
}

const MAX_VIOLATIONS: usize = 64;

type VoteKey = (u64, u32, VoteType, Address);

#[derive(Default)]
struct RoundSigners {
    any: BTreeSet<Address>,
    precommits: BTreeSet<Address>,
}

/// The first honest decision of a height, as checked: a later node deciding the same block
/// (compared field by field, no hashing) with the same commit needs no second check.
struct Decided {
    id: BlockId,
    block: Block,
    /// The commit, when it was verified against the validator set and held.
    verified: Option<Commit>,
}

pub struct Checker {
    chain_id: String,
    /// The application's own `valid(v)`, on a fresh application.
    validate: Box<dyn Fn(&Block) -> bool>,
    /// The first honest app hash after each height, and the node that had it.
    app_hashes: BTreeMap<u64, (usize, Hash)>,
    /// Power of each address at genesis, and whether it is honest.
    power: BTreeMap<Address, u64>,
    honest: BTreeMap<Address, bool>,
    keys: BTreeMap<Address, PublicKey>,
    total_power: u64,
    decided: BTreeMap<u64, Decided>,
    proposed: BTreeMap<u64, BTreeSet<BlockId>>,
    /// Who sent a proposal of each (height, round, value) onto the wire. Only its own: an
    /// honest engine sends no one else's proposal, and an adversary signs with its own key
    /// (a replay re-sends what it sent itself).
    proposers: BTreeSet<(u64, u32, BlockId, Address)>,
    /// Who signed votes of each (height, round) on the wire: any vote, and precommits.
    round_signers: BTreeMap<(u64, u32), RoundSigners>,
    /// Looked up and pruned, never iterated: a hash map with a fixed-key hasher (Fx: every
    /// vote on the wire passes here), so nothing depends on an order.
    votes: HashMap<VoteKey, Vote, rustc_hash::FxBuildHasher>,
    /// Culprits convicted by verifiable evidence, from the wire or from the nodes.
    pub evidence: BTreeMap<Address, Evidence>,
    persisted: Vec<BTreeSet<(u64, u32, u8)>>,
    /// Per node: the incarnation, height and lock last seen (for [`Invariant::LockKept`]; a
    /// restart may legitimately lose a lock whose precommit was never persisted and sent).
    locks: Vec<Option<LockSeen>>,
    /// Checks signatures in commits and evidence: the run's own verification mode.
    verifier: Box<dyn SignatureVerifier>,
    pub violations: Vec<Violation>,
    pub fork_heights: BTreeSet<u64>,
    /// The validator set (power by address, and total) of each fork height, when known:
    /// accountability is measured against the set that decided the height, not genesis.
    fork_sets: BTreeMap<u64, (BTreeMap<Address, u64>, u64)>,
    pub rounds_sum: u64,
    pub decisions: u64,
    prune_below: u64,
}

/// A node's incarnation, height and lock (`(lockedRound, lockedValue)`) when last seen.
type LockSeen = (u64, u64, Option<(Round, BlockId)>);

fn kind_of(m: &Message) -> Option<(u64, u32, u8)> {
    match m {
        Message::Proposal(p) => Some((p.height.0, p.round.0, 0)),
        Message::Vote(v) => Some((
            v.height.0,
            v.round.0,
            if v.vote_type == VoteType::Prevote { 1 } else { 2 },
        )),
        _ => None,
    }
}

impl Checker {
    /// `members`: (public key, genesis power, honest) of every key in the run; `verifier` checks
    /// the signatures of commits and evidence (in trusted mode it trusts them, as the nodes do).
    pub fn new(
        chain_id: &str,
        members: &[(PublicKey, u64, bool)],
        slots: usize,
        verifier: Box<dyn SignatureVerifier>,
        validate: Box<dyn Fn(&Block) -> bool>,
    ) -> Self {
        Checker {
            chain_id: chain_id.to_string(),
            validate,
            app_hashes: BTreeMap::new(),
            power: members.iter().map(|(k, p, _)| (k.address(), *p)).collect(),
            honest: members.iter().map(|(k, _, h)| (k.address(), *h)).collect(),
            keys: members.iter().map(|(k, _, _)| (k.address(), *k)).collect(),
            total_power: members.iter().map(|(_, p, _)| p).sum(),
            decided: BTreeMap::new(),
            proposed: BTreeMap::new(),
            proposers: BTreeSet::new(),
            round_signers: BTreeMap::new(),
            votes: HashMap::default(),
            evidence: BTreeMap::new(),
            persisted: vec![BTreeSet::new(); slots],
            locks: vec![None; slots],
            verifier,
            violations: vec![],
            fork_heights: BTreeSet::new(),
            fork_sets: BTreeMap::new(),
            rounds_sum: 0,
            decisions: 0,
            prune_below: 0,
        }
    }

    pub fn violate(&mut self, invariant: Invariant, at_ms: u64, detail: String) {
        if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(Violation {
                invariant,
                at_ms,
                detail,
            });
        }
    }

    /// An honest node's consensus state after a step, in its `incarnation` (see
    /// [`Invariant::LockKept`]).
    pub fn on_state(&mut self, slot: usize, incarnation: u64, state: &State, now: u64) {
        let (h, locked) = (state.height.0, state.locked);
        let round = |x: Option<(Round, BlockId)>| x.map_or(-1, |(r, _)| i64::from(r.0));
        if round(state.valid) < round(locked) {
            self.violate(
                Invariant::LockKept,
                now,
                format!(
                    "node {slot} at height {h}: validRound {} below lockedRound {}",
                    round(state.valid),
                    round(locked)
                ),
            );
        }
        if let Some((inc, last_h, last)) = self.locks[slot] {
            let moved_back = round(locked) < round(last) || (round(locked) == round(last) && locked != last);
            if inc == incarnation && last_h == h && moved_back {
                self.violate(
                    Invariant::LockKept,
                    now,
                    format!(
                        "node {slot} at height {h}: lock {:?} became {:?} (lockedRound {} then {})",
                        last.map(|l| l.1),
                        locked.map(|l| l.1),
                        round(last),
                        round(locked)
                    ),
                );
            }
        }
        self.locks[slot] = Some((incarnation, h, locked));
    }

    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn on_persist(&mut self, slot: usize, entry: &WalEntry) {
        let key = match entry {
            WalEntry::Proposal(p) => (p.height.0, p.round.0, 0),
            WalEntry::Vote(v) => (
                v.height.0,
                v.round.0,
                if v.vote_type == VoteType::Prevote { 1 } else { 2 },
            ),
            WalEntry::Lock { .. } => return, // not a message: nothing is sent that depends on it
        };
        self.persisted[slot].insert(key);
    }

    /// A message an honest node's own engine sent (before any Byzantine wrapper touched it).
    pub fn on_own_send(&mut self, slot: usize, me: Address, msg: &Message, now: u64) {
        let own = match msg {
            Message::Vote(v) => v.validator == me,
            Message::Proposal(_) => true,
            _ => false,
        };
        if let (true, Some(k)) = (own, kind_of(msg)) {
            if !self.persisted[slot].contains(&k) {
                self.violate(
                    Invariant::PersistBeforeSend,
                    now,
                    format!("node {slot} sent {} {k:?} before persisting it", msg.kind()),
                );
            }
        }
    }

    /// A proposal that `from` sends onto the wire.
    pub fn on_proposal_sent(&mut self, from: Address, p: &Proposal) {
        if p.height.0 >= self.prune_below {
            self.proposers.insert((p.height.0, p.round.0, p.block.id(), from));
        }
    }

    /// An honest node's own prevote `v`, sent while at `v.height`, where `proposer` is the
    /// proposer of `v.round`: a value it prevotes must come from that proposer.
    pub fn on_honest_prevote(&mut self, slot: usize, v: &Vote, proposer: Address, now: u64) {
        let Some(id) = v.block_id else { return };
        if v.vote_type != VoteType::Prevote || v.height.0 < self.prune_below {
            return;
        }
        if !self.proposers.contains(&(v.height.0, v.round.0, id, proposer)) {
            self.violate(
                Invariant::ProposalFromProposer,
                now,
                format!(
                    "node {slot} prevoted {id} at height {} round {}, which the round's proposer {proposer} never proposed",
                    v.height, v.round
                ),
            );
        }
    }

    /// Honest `me` sent its first vote of round `round` > 0 at `height` (whose validator set is
    /// `vs`): it entered that round, which L65 or L55 must justify by what went on the wire.
    pub fn on_round_entered(&mut self, slot: usize, me: Address, height: u64, round: u32, vs: &ValidatorSet, now: u64) {
        if round == 0 || height < self.prune_below {
            return;
        }
        let power = |set: Option<&BTreeSet<Address>>, skip: Option<Address>| -> u64 {
            set.into_iter()
                .flatten()
                .filter(|a| Some(**a) != skip)
                .filter_map(|a| vs.index_of(a).map(|i| vs.get(i).power.0))
                .sum()
        };
        let before = self.round_signers.get(&(height, round - 1)).map(|s| &s.precommits);
        let this = self.round_signers.get(&(height, round)).map(|s| &s.any);
        let l65 = vs.is_quorum(power(before, None));
        let l55 = vs.is_one_third(power(this, Some(me)));
        if !l65 && !l55 {
            self.violate(
                Invariant::RoundJustified,
                now,
                format!(
                    "node {slot} entered round {round} of height {height} with precommits of round {} from {} and messages of round {round} from others with {} of {} power",
                    round - 1,
                    power(before, None),
                    power(this, Some(me)),
                    vs.total_power().0
                ),
            );
        }
    }

    /// Every message as it goes on the wire (after any Byzantine wrapper).
    pub fn on_wire(&mut self, msg: &Message, now: u64) {
        match msg {
            Message::Proposal(p) => {
                self.proposed.entry(p.height.0).or_default().insert(p.block.id());
            }
            Message::Vote(v) => self.on_vote(v, now),
            Message::Evidence(e) => self.on_evidence(e),
            _ => {}
        }
    }

    fn on_vote(&mut self, v: &Vote, now: u64) {
        if v.height.0 < self.prune_below {
            return;
        }
        let signers = self.round_signers.entry((v.height.0, v.round.0)).or_default();
        signers.any.insert(v.validator);
        if v.vote_type == VoteType::Precommit {
            signers.precommits.insert(v.validator);
        }
        let key = (v.height.0, v.round.0, v.vote_type, v.validator);
        let prev = match self.votes.entry(key) {
            Entry::Vacant(e) => {
                e.insert(v.clone());
                return;
            }
            Entry::Occupied(e) => e.into_mut(),
        };
        if prev.block_id == v.block_id {
            return;
        }
        let ev = Evidence::DuplicateVote {
            a: prev.clone(),
            b: v.clone(),
        };
        if !self.signed_by_validator(&ev) {
            return; // a forgery (someone else's signature), not a double sign
        }
        if self.honest.get(&v.validator).copied().unwrap_or(false) {
            self.violate(
                Invariant::HonestDoubleSign,
                now,
                format!(
                    "honest {} signed two {:?} at height {} round {}",
                    v.validator, v.vote_type, v.height, v.round
                ),
            );
        }
        self.on_evidence(&ev);
    }

    fn signed_by_validator(&mut self, ev: &Evidence) -> bool {
        let Evidence::DuplicateVote { a, b } = ev;
        let Some(pk) = self.keys.get(&a.validator).copied() else {
            return false;
        };
        let Ok(vk) = pk.verifying_key() else { return false };
        [a, b].iter().all(|v| {
            let bytes = tendr_core::crypto::vote_sign_bytes(&self.chain_id, v.vote_type, v.height, v.round, v.block_id);
            self.verifier.verify(&pk, &vk, &bytes, &v.signature).is_ok()
        })
    }

    /// Records evidence after checking it is valid (signatures included).
    pub fn on_evidence(&mut self, ev: &Evidence) {
        let Evidence::DuplicateVote { a, b } = ev;
        let ok = self.signed_by_validator(ev)
            && a.validator == b.validator
            && (a.height, a.round, a.vote_type) == (b.height, b.round, b.vote_type)
            && a.block_id != b.block_id;
        if ok && !self.evidence.contains_key(&a.validator) {
            self.evidence.insert(a.validator, ev.clone());
        }
    }

    /// An honest node decided. `validators`: the set of that height, when known.
    pub fn on_decided(
        &mut self,
        slot: usize,
        block: Block,
        commit: &Commit,
        validators: Option<&ValidatorSet>,
        now: u64,
    ) {
        let h = block.height().0;
        if h < self.prune_below {
            // Every honest node decided this height long ago (and it was checked then).
            return;
        }
        if let Some(first) = self.decided.get(&h) {
            if first.block == block {
                // The block checked already (agreement, validity); only a different commit
                // needs checking.
                if first.verified.as_ref() != Some(commit) {
                    let id = first.id;
                    self.check_commit(slot, h, id, &block, commit, validators, now);
                }
                return;
            }
        }
        let id = block.id();
        match self.decided.get(&h) {
            None => {
                self.rounds_sum += commit.round.0 as u64;
                self.decisions += 1;
            }
            Some(prev) => {
                // A different block (equal blocks returned above): a fork when the ids differ.
                let prev = prev.id;
                if prev != id {
                    self.fork_heights.insert(h);
                    if let Some(vs) = validators {
                        let power = vs.validators().iter().map(|v| (v.address, v.power.0)).collect();
                        self.fork_sets.entry(h).or_insert((power, vs.total_power().0));
                    }
                    self.violate(
                        Invariant::Agreement,
                        now,
                        format!("node {slot} decided {id} at height {h}, another honest node decided {prev}"),
                    );
                    self.check_accountability(now);
                }
            }
        }
        if !self.proposed.get(&h).is_some_and(|s| s.contains(&id)) {
            self.violate(
                Invariant::Validity,
                now,
                format!("node {slot} decided {id} at height {h}, which nobody proposed"),
            );
        }
        if !(self.validate)(&block) {
            self.violate(
                Invariant::Validity,
                now,
                format!("node {slot} decided an invalid block at height {h}"),
            );
        }
        let verified = self.check_commit(slot, h, id, &block, commit, validators, now);
        self.decided.entry(h).or_insert_with(|| Decided {
            id,
            block,
            verified: verified.then(|| commit.clone()),
        });
    }

    /// An honest node's application hash after executing height `h`: every honest node must
    /// have the same, or the application is not deterministic.
    pub fn on_app_hash(&mut self, slot: usize, h: u64, hash: Hash, now: u64) {
        if h < self.prune_below {
            return;
        }
        let (first, expected) = *self.app_hashes.entry(h).or_insert((slot, hash));
        if expected != hash
            && !self
                .violations
                .iter()
                .any(|v| v.invariant == Invariant::AppHashAgreement)
        {
            self.violate(
                Invariant::AppHashAgreement,
                now,
                format!(
                    "the application diverged at height {h}: node {first} has app hash {expected}, node {slot} has \
                     {hash} after executing the same block (non-deterministic execution: hash-map order, clock, \
                     threads, randomness?)"
                ),
            );
        }
    }

    /// Commit integrity of one decision. True when the commit was verified and holds.
    #[allow(clippy::too_many_arguments)]
    fn check_commit(
        &mut self,
        slot: usize,
        h: u64,
        id: BlockId,
        block: &Block,
        commit: &Commit,
        validators: Option<&ValidatorSet>,
        now: u64,
    ) -> bool {
        if commit.block_id != id || commit.height != block.height() {
            self.violate(
                Invariant::CommitIntegrity,
                now,
                format!("node {slot}: commit at height {h} is for another block"),
            );
            return false;
        }
        let Some(vs) = validators else { return false };
        if let Err(e) = verify_commit(&self.chain_id, vs, commit, self.verifier.as_mut()) {
            self.violate(
                Invariant::CommitIntegrity,
                now,
                format!("node {slot}: commit at height {h}: {e}"),
            );
            return false;
        }
        true
    }

    /// Convicted power must exceed 1/3 whenever agreement broke, measured against the
    /// validator set of each forked height (genesis power where that set is not known).
    fn check_accountability(&mut self, now: u64) {
        let mut short = None;
        for h in &self.fork_heights {
            let (power, total) = match self.fork_sets.get(h) {
                Some((p, t)) => (p, *t),
                None => (&self.power, self.total_power),
            };
            let convicted: u64 = self.evidence.keys().map(|a| power.get(a).copied().unwrap_or(0)).sum();
            if 3 * convicted <= total {
                short = Some((*h, convicted, total));
                break;
            }
        }
        if let Some((h, convicted, total)) = short {
            let names: Vec<String> = self.evidence.keys().map(|a| a.to_string()).collect();
            self.violate(
                Invariant::Accountability,
                now,
                format!(
                    "agreement broke at height {h} but evidence convicts only {convicted} of that height's {total} power ({})",
                    names.join(", ")
                ),
            );
        }
    }

    /// Re-checks accountability at the end (evidence may arrive after the fork).
    pub fn finish_accountability(&mut self, now: u64) {
        self.violations.retain(|v| v.invariant != Invariant::Accountability);
        if !self.fork_heights.is_empty() {
            self.check_accountability(now);
        }
    }

    /// Culprits with their power.
    pub fn convicted(&self) -> Vec<(Address, u64)> {
        self.evidence
            .keys()
            .map(|a| (*a, self.power.get(a).copied().unwrap_or(0)))
            .collect()
    }

    /// Forget votes, decisions and proposals of heights every honest node (running or
    /// crashed) is long past, so memory stays flat as heights grow.
    pub fn prune(&mut self, min_honest_height: u64) {
        let below = min_honest_height.saturating_sub(10);
        if below > self.prune_below + 50 {
            self.prune_below = below;
            self.votes.retain(|k, _| k.0 >= below);
            self.decided = self.decided.split_off(&below);
            self.app_hashes = self.app_hashes.split_off(&below);
            self.proposed = self.proposed.split_off(&below);
            self.proposers = self.proposers.split_off(&(below, 0, Hash([0; 32]), Address([0; 20])));
            self.round_signers = self.round_signers.split_off(&(below, 0));
            for p in &mut self.persisted {
                *p = p.split_off(&(below, 0, 0));
            }
        }
    }
}
