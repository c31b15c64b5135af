//! The engine: one validator's (or observer's) consensus, as a sans-IO state machine.
//!
//! How to drive it: build it with [`Engine::new`] from a [`ChainState`] and the consensus log
//! (`wal`) of the current height, send [`Input::Start`], then feed it every message, elapsed
//! timeout and application answer through [`Engine::handle`]. Carry out the returned
//! [`Output`]s **in order**: a `Persist` always comes before the `Broadcast` of the message it
//! records, and must be durable before that broadcast leaves the node. Three outputs ask the
//! application a question and expect the answer as an input: `BuildBlock` -> `BlockTxs`,
//! `ValidateBlock` -> `BlockValidity`, `Decide` -> `Executed`. [`crate::traits::Node`] does all
//! of this; use it unless you are testing the engine itself.
//!
//! The engine verifies signatures and membership, rejects bad input with an [`EngineError`]
//! (never a panic, never a state change), buffers a bounded number of future-height messages,
//! derives the paper's `upon` guards from the vote keeper and feeds them to
//! [`crate::state_machine::apply`], signs what the state machine asks for (never two
//! conflicting messages for one height, round and step, also after a restart), assembles the
//! commit certificate, and paces heights by `TimeoutConfig::commit_ms`.

use crate::chain::{verify_commit, BlockError, ChainState};
use crate::crypto::{proposal_sign_bytes, vote_sign_bytes, PrivateKey, SignStep, SignTarget, Signer};
use crate::limits::*;
use crate::state_machine::{apply, Action, Event, State, Step, TimeoutKind};
use crate::sync::{BlockSync, Buffered, SyncProgress};
use crate::traits::SignatureVerifier;
use crate::types::*;
use crate::validator::{ValidatorSet, ValidatorUpdate};
use crate::votes::{verify_evidence, AddVote, Counting, VoteKeeper};
use crate::PlantedBug;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Rounds before the current one whose own votes the periodic re-broadcast repeats.
const REBROADCAST_PAST_ROUNDS: u32 = 2;
/// Heights block sync requests at once by default: enough to cover a 100 ms round trip at
/// several hundred blocks per second.
pub const DEFAULT_SYNC_WINDOW: u64 = 64;

/// Timeout durations. Each paper timeout grows linearly with the round (`base + delta * round`)
/// so that after GST every round eventually lasts long enough.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutConfig {
    pub propose_ms: u64,
    pub propose_delta_ms: u64,
    pub prevote_ms: u64,
    pub prevote_delta_ms: u64,
    pub precommit_ms: u64,
    pub precommit_delta_ms: u64,
    /// Target block time: the next height starts this long after the time of the block just
    /// decided (or at once, if deciding took longer).
    pub commit_ms: u64,
    /// Period of re-broadcasting our own messages of the current round.
    pub rebroadcast_ms: u64,
    /// How long to wait before asking a peer again for a decided block we miss.
    pub sync_retry_ms: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            propose_ms: 3000,
            propose_delta_ms: 500,
            prevote_ms: 1000,
            prevote_delta_ms: 500,
            precommit_ms: 1000,
            precommit_delta_ms: 500,
            commit_ms: 1000,
            rebroadcast_ms: 2000,
            sync_retry_ms: 500,
        }
    }
}

impl TimeoutConfig {
    pub fn duration_ms(&self, kind: TimeoutKind, round: Round) -> u64 {
        let r = round.0 as u64;
        match kind {
            TimeoutKind::Propose => self.propose_ms + self.propose_delta_ms.saturating_mul(r),
            TimeoutKind::Prevote => self.prevote_ms + self.prevote_delta_ms.saturating_mul(r),
            TimeoutKind::Precommit => self.precommit_ms + self.precommit_delta_ms.saturating_mul(r),
            TimeoutKind::Commit => self.commit_ms,
            TimeoutKind::Rebroadcast => self.rebroadcast_ms,
            TimeoutKind::StateSync => self.sync_retry_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    pub chain_id: String,
    pub timeouts: TimeoutConfig,
    /// Block sync: how many heights a node that is behind requests at once (see [`crate::sync`]).
    pub sync_window: u64,
    /// A deliberately broken rule (test feature only).
    #[cfg(feature = "planted-bugs")]
    pub planted: Option<crate::PlantedBug>,
}

impl EngineConfig {
    pub fn new(chain_id: &str, timeouts: TimeoutConfig) -> Self {
        EngineConfig {
            chain_id: chain_id.to_string(),
            timeouts,
            sync_window: DEFAULT_SYNC_WINDOW,
            #[cfg(feature = "planted-bugs")]
            planted: None,
        }
    }
    /// Whether `bug` is planted; a constant `false` without the test feature.
    #[inline(always)]
    fn planted(&self, _bug: crate::PlantedBug) -> bool {
        #[cfg(feature = "planted-bugs")]
        return self.planted == Some(_bug);
        #[cfg(not(feature = "planted-bugs"))]
        false
    }
}

/// A timer the engine asked for; it comes back as [`Input::TimeoutElapsed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timeout {
    pub height: Height,
    pub round: Round,
    pub kind: TimeoutKind,
}

/// What the engine persists in the consensus log before it sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalEntry {
    /// A proposal we signed. (Large variants are boxed, so a vote entry stays small.)
    Proposal(Box<Proposal>),
    /// A vote we signed.
    Vote(Vote),
    /// What justifies a lock (L36-L38): the block we precommitted and the +2/3 prevotes for
    /// it, written before the precommit. After a restart the lock's value can still be
    /// proposed again as validValue with its POL (L14-L16, L28). Without them a restarted
    /// validator stays locked on a block that neither it nor anyone else can re-propose with
    /// its proof, and with f Byzantine validators voting nil the height stalls forever (found
    /// by `tendr sim explore`, seed 5081).
    Lock { block: Block, prevotes: Vec<Vote> },
}

impl WalEntry {
    pub fn height(&self) -> Height {
        match self {
            WalEntry::Proposal(p) => p.height,
            WalEntry::Vote(v) => v.height,
            WalEntry::Lock { block, .. } => block.height(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Begin (or, after recovery, resume) the current height.
    Start,
    /// A decoded message from a peer.
    Message {
        from: PeerId,
        msg: Message,
    },
    TimeoutElapsed(Timeout),
    /// Answer to [`Output::BuildBlock`]: the transactions for our proposal.
    BlockTxs {
        height: Height,
        round: Round,
        txs: Vec<Vec<u8>>,
    },
    /// Answer to [`Output::ValidateBlock`]: the application's `valid(v)`.
    BlockValidity {
        height: Height,
        block_id: BlockId,
        valid: bool,
    },
    /// Answer to [`Output::Decide`]: the block was stored and executed.
    Executed {
        height: Height,
        app_hash: Hash,
        validator_updates: Vec<ValidatorUpdate>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Make this durable before carrying out any later output.
    Persist(WalEntry),
    Broadcast(Message),
    Send {
        to: PeerId,
        msg: Message,
    },
    ScheduleTimeout {
        timeout: Timeout,
        at: TimeMs,
    },
    /// `getValue()`: ask the application for transactions; answer with [`Input::BlockTxs`].
    BuildBlock {
        height: Height,
        round: Round,
    },
    /// Ask the application whether a block is valid; answer with [`Input::BlockValidity`].
    ValidateBlock {
        block: Block,
        /// The block's id, computed once by the engine.
        id: BlockId,
    },
    /// The height is decided: store block and commit, execute, answer with [`Input::Executed`].
    Decide {
        block: Block,
        commit: Commit,
    },
    /// A peer is behind: send it our stored decided block of `height` with its commit.
    SendDecided {
        to: PeerId,
        height: Height,
    },
    /// Misbehaviour observed and verified.
    Evidence(Box<Evidence>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("message for chain `{got}`, this node runs `{expected}`: the peer uses another genesis")]
    WrongChain { expected: String, got: String },
    #[error("message for round {got} is more than {MAX_ROUNDS_AHEAD} rounds ahead of our round {current}")]
    RoundTooFar { got: Round, current: Round },
    #[error("vote from {0}, which is not a validator at this height")]
    UnknownValidator(Address),
    /// A vote or proposal of a later height from someone outside our validator set: that
    /// height may have another set, so it can be neither checked nor blamed yet.
    #[error(
        "message of height {height} from {validator}, not in the validator set of our height: cannot be checked yet"
    )]
    NotYetVerifiable { height: Height, validator: Address },
    #[error("{what}: signature does not verify ({detail})")]
    BadSignature { what: &'static str, detail: String },
    #[error("proposer of height {height} round {round} sent a second, different proposal")]
    ConflictingProposal { height: Height, round: Round },
    #[error("malformed {0}")]
    Malformed(String),
    #[error("decided block rejected: {0}")]
    BadDecided(String),
    #[error("invalid evidence: {0}")]
    BadEvidence(String),
    #[error("future-message buffer full ({MAX_FUTURE_MESSAGES}); message dropped")]
    BufferFull,
    /// A proposal of a later height not signed by the proposer its block names: a re-proposal
    /// (L16's validValue, whose block another validator built) is like that, so its signer can
    /// only be checked against that height's proposer schedule, when the height starts. Kept
    /// until then (at most [`MAX_PARKED_PROPOSALS`], the oldest dropped); nobody is blamed.
    #[error("proposal of height {height} round {round} parked until that height starts: its proposer cannot be checked before")]
    Parked { height: Height, round: Round },
}

impl EngineError {
    /// Whether the message proves its sender faulty (or broken), so that a driver may count it
    /// against the peer it came from. Not the sender's fault: an honest relay of a Byzantine
    /// proposer's second proposal ([`EngineError::ConflictingProposal`]), our own full buffer,
    /// and a later height's message we cannot check yet. Both worlds use this one rule: the
    /// real node strikes peers by it and the simulator asserts that no honest node is ever
    /// blamed by it.
    pub fn blames_sender(&self) -> bool {
        !matches!(
            self,
            EngineError::BufferFull
                | EngineError::ConflictingProposal { .. }
                | EngineError::NotYetVerifiable { .. }
                | EngineError::Parked { .. }
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Validity {
    Pending,
    Valid,
    Invalid,
}

#[derive(Debug, Clone)]
struct ProposalEntry {
    id: BlockId,
    pol_round: Option<Round>,
}

/// Per-height state, reset when a height is decided.
#[derive(Debug, Clone)]
struct HeightState {
    sm: State,
    keeper: VoteKeeper,
    proposals: BTreeMap<Round, ProposalEntry>,
    blocks: BTreeMap<BlockId, (Block, Validity)>,
    own_votes: BTreeMap<(Round, VoteType), Vote>,
    own_proposals: BTreeMap<Round, Proposal>,
    fired_polka_any: BTreeSet<Round>,
    fired_polka_value: BTreeSet<Round>,
    fired_precommit_any: BTreeSet<Round>,
    evidence_seen: BTreeSet<(Address, Round, VoteType)>,
    /// (peer, round) pairs we already sent our votes of that round to.
    helped: BTreeSet<(PeerId, Round)>,
    /// A commit received from a peer (catch-up), used instead of assembling our own.
    external_commit: Option<Commit>,
    started: bool,
    /// The decided block (its id and time) and commit, while the application executes it.
    executing: Option<(BlockId, TimeMs, Commit)>,
}

impl HeightState {
    fn new(height: Height, counting: Counting) -> Self {
        HeightState {
            sm: State::new(height),
            keeper: VoteKeeper::new(counting),
            proposals: BTreeMap::new(),
            blocks: BTreeMap::new(),
            own_votes: BTreeMap::new(),
            own_proposals: BTreeMap::new(),
            fired_polka_any: BTreeSet::new(),
            fired_polka_value: BTreeSet::new(),
            fired_precommit_any: BTreeSet::new(),
            evidence_seen: BTreeSet::new(),
            helped: BTreeSet::new(),
            external_commit: None,
            started: false,
            executing: None,
        }
    }
}

pub struct Engine {
    cfg: EngineConfig,
    key: Option<Box<dyn Signer>>,
    chain: ChainState,
    hs: HeightState,
    verifier: Box<dyn SignatureVerifier>,
    future: Vec<(PeerId, Message)>,
    /// Later-height proposals whose signer is checked when their height starts.
    parked: VecDeque<(PeerId, Box<Proposal>)>,
    recent_serves: VecDeque<(PeerId, Height)>,
    /// Catch-up: which peers are ahead, what we asked them for, blocks that came early.
    sync: BlockSync,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("height", &self.chain.height)
            .field("sm", &self.hs.sm)
            .finish()
    }
}

impl Engine {
    /// An engine at `chain.height`, resuming from `wal` (our own signed messages of that height,
    /// as persisted). `key` is `None` for an observer.
    pub fn new(
        cfg: EngineConfig,
        key: Option<PrivateKey>,
        chain: ChainState,
        wal: Vec<WalEntry>,
        verifier: Box<dyn SignatureVerifier>,
    ) -> Self {
        let key = key.map(|k| Box::new(k) as Box<dyn Signer>);
        Self::with_signer(cfg, key, chain, wal, verifier)
    }

    /// [`Engine::new`] with any [`Signer`] (the simulator's trusted mode uses a null signer).
    pub fn with_signer(
        cfg: EngineConfig,
        key: Option<Box<dyn Signer>>,
        chain: ChainState,
        wal: Vec<WalEntry>,
        verifier: Box<dyn SignatureVerifier>,
    ) -> Self {
        let mut e = Engine {
            hs: HeightState::new(chain.height, Counting::ByPower),
            key,
            chain,
            verifier,
            future: Vec::new(),
            parked: VecDeque::new(),
            recent_serves: VecDeque::new(),
            sync: BlockSync::new(cfg.sync_window, cfg.timeouts.sync_retry_ms),
            cfg,
        };
        e.reset_height();
        if !e.cfg.planted(PlantedBug::ForgetLastVote) {
            e.recover(wal);
        }
        e
    }

    // ---- getters ----
    pub fn height(&self) -> Height {
        self.chain.height
    }
    pub fn round(&self) -> Round {
        self.hs.sm.round
    }
    pub fn step(&self) -> Step {
        self.hs.sm.step
    }
    pub fn state(&self) -> &State {
        &self.hs.sm
    }
    pub fn chain(&self) -> &ChainState {
        &self.chain
    }
    pub fn validators(&self) -> &ValidatorSet {
        &self.chain.validators
    }
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }
    /// Our validator address, if we have a key.
    pub fn address(&self) -> Option<Address> {
        self.key.as_ref().map(|k| k.address())
    }
    /// Whether we vote at the current height.
    pub fn is_validator(&self) -> bool {
        self.address()
            .is_some_and(|a| self.chain.validators.index_of(&a).is_some())
    }
    /// Whether the current height has started (false while pacing between heights).
    pub fn is_started(&self) -> bool {
        self.hs.started
    }
    /// The highest height a peer showed us, if above ours (we are catching up).
    pub fn catching_up_to(&self) -> Option<Height> {
        Some(self.sync.target()).filter(|h| *h > self.chain.height)
    }
    /// Moves to a state-synced chain: `chain` from a checked snapshot and the blocks after it
    /// (proven by hashes to a trusted block, with their senders), decided in order from the
    /// next [`Input::Start`] on, each verified as block sync verifies.
    pub fn adopt_snapshot(&mut self, chain: ChainState, blocks: Vec<(PeerId, Block, Commit)>) {
        self.chain = chain;
        self.reset_height();
        self.future.clear();
        self.parked.clear();
        self.recent_serves.clear();
        self.sync = BlockSync::new(self.cfg.sync_window, self.cfg.timeouts.sync_retry_ms);
        for (from, block, commit) in blocks {
            self.sync.note_peer(from, block.height().next());
            self.sync.hold(Buffered {
                from,
                block,
                commit,
                verified: false,
            });
        }
    }

    /// The votes of the height being decided, every round (what `consensus_state` shows).
    pub fn votes(&self) -> &VoteKeeper {
        &self.hs.keeper
    }

    /// Block sync's bookkeeping (peers ahead, requests in flight, blocks buffered).
    pub fn sync_progress(&self) -> SyncProgress {
        self.sync.progress()
    }

    /// The one entry point. On error nothing changed.
    pub fn handle(&mut self, now: TimeMs, input: Input) -> Result<Vec<Output>, EngineError> {
        let mut out = Vec::new();
        self.handle_into(now, input, &mut out)?;
        Ok(out)
    }

    /// [`Engine::handle`], appending the outputs to `out` (a buffer the caller reuses). On
    /// error nothing changed and nothing was appended.
    pub fn handle_into(&mut self, now: TimeMs, input: Input, out: &mut Vec<Output>) -> Result<(), EngineError> {
        let start = out.len();
        let r = self.handle_input(now, input, out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn handle_input(&mut self, now: TimeMs, input: Input, out: &mut Vec<Output>) -> Result<(), EngineError> {
        match input {
            Input::Start => self.on_start(now, out),
            Input::Message { from, msg } => self.on_message(now, from, msg, out)?,
            Input::TimeoutElapsed(t) => self.on_timeout(now, t, out),
            Input::BlockTxs { height, round, txs } => self.on_block_txs(now, height, round, txs, out),
            Input::BlockValidity {
                height,
                block_id,
                valid,
            } => {
                if height == self.chain.height {
                    if let Some((_, v)) = self.hs.blocks.get_mut(&block_id) {
                        if *v == Validity::Pending {
                            *v = if valid { Validity::Valid } else { Validity::Invalid };
                        }
                    }
                }
            }
            Input::Executed {
                height,
                app_hash,
                validator_updates,
            } => self.on_executed(now, height, app_hash, &validator_updates, out),
        }
        self.evaluate(now, out);
        Ok(())
    }

    fn reset_height(&mut self) {
        #[cfg(feature = "planted-bugs")]
        let counting = match self.cfg.planted {
            Some(PlantedBug::CountByNumber) => Counting::ByNumber,
            Some(PlantedBug::CountDuplicates) => Counting::WithDuplicates,
            _ => Counting::ByPower,
        };
        #[cfg(not(feature = "planted-bugs"))]
        let counting = Counting::ByPower;
        self.hs = HeightState::new(self.chain.height, counting);
        #[cfg(feature = "planted-bugs")]
        {
            self.hs.sm.planted = self.cfg.planted;
        }
    }

    /// Restores our own signed messages of the current height: the round we reached, our lock
    /// (our highest precommit for a value), and the guard against signing anything conflicting.
    fn recover(&mut self, wal: Vec<WalEntry>) {
        let me = self.address();
        for entry in wal.into_iter().filter(|e| e.height() == self.chain.height) {
            match entry {
                WalEntry::Proposal(p) => {
                    let id = p.block.id();
                    self.hs.blocks.insert(id, (p.block.clone(), Validity::Valid));
                    self.hs.proposals.insert(
                        p.round,
                        ProposalEntry {
                            id,
                            pol_round: p.pol_round,
                        },
                    );
                    self.hs.sm.round = self.hs.sm.round.max(p.round);
                    self.hs.own_proposals.insert(p.round, *p);
                }
                WalEntry::Vote(v) if Some(v.validator) == me => {
                    if let (VoteType::Precommit, Some(id)) = (v.vote_type, v.block_id) {
                        if self.hs.sm.locked.is_none_or(|(lr, _)| lr < v.round) {
                            self.hs.sm.locked = Some((v.round, id));
                            if !self.cfg.planted(PlantedBug::RestartForgetsValidValue) {
                                self.hs.sm.valid = Some((v.round, id));
                            }
                        }
                    }
                    self.hs.sm.round = self.hs.sm.round.max(v.round);
                    if let Some(idx) = self.chain.validators.index_of(&v.validator) {
                        let power = self.chain.validators.get(idx).power;
                        self.hs.keeper.add(v.clone(), idx, power);
                    }
                    self.hs.own_votes.insert((v.round, v.vote_type), v);
                }
                WalEntry::Vote(_) => {}
                WalEntry::Lock { block, prevotes } => {
                    self.hs.blocks.insert(block.id(), (block, Validity::Valid));
                    for v in prevotes {
                        if let Some(idx) = self.chain.validators.index_of(&v.validator) {
                            let power = self.chain.validators.get(idx).power;
                            self.hs.keeper.add(v, idx, power);
                        }
                    }
                }
            }
        }
    }

    fn on_start(&mut self, now: TimeMs, out: &mut Vec<Output>) {
        self.apply_buffered(); // a block state sync or block sync already holds
        if self.hs.started || self.hs.executing.is_some() {
            return;
        }
        self.hs.started = true;
        let round = self.hs.sm.round;
        self.start_round(now, round, out);
        self.resume_step(round);
        let prevoted = self.hs.own_votes.contains_key(&(round, VoteType::Prevote));
        if self.hs.own_proposals.contains_key(&round) && !prevoted {
            // Our own proposal of this round came back from the log, but the prevotes of its
            // POL round may not have: L57 lets us move on when L28's guard cannot be met.
            self.schedule(now, TimeoutKind::Propose, round, out);
        }
    }

    /// After a restart, the step that our own signed votes of `round` (from the consensus log)
    /// show we had reached: `step_p = prevote` once we prevoted (L27, L33, L59), `precommit`
    /// once we precommitted (L40, L42, L45, L63). StartRound (L11) put us back in step propose;
    /// without this, a validator that prevoted before it crashed waits for the guard of its own
    /// proposal again, and when that is L28 (a POL round whose prevotes the crash took), it
    /// never gets past step propose and never precommits: with exactly 2f+1 honest validators
    /// running, the height stalls (found by a 20,000-seed sweep, seed 116048).
    fn resume_step(&mut self, round: Round) {
        let sm = &mut self.hs.sm;
        if sm.step == Step::Commit || sm.round != round {
            return;
        }
        let signed = |t| self.hs.own_votes.contains_key(&(round, t));
        let step = if signed(VoteType::Precommit) {
            Step::Precommit
        } else if signed(VoteType::Prevote) {
            Step::Prevote
        } else {
            return;
        };
        if step > sm.step {
            sm.step = step;
        }
    }

    fn is_proposer(&self, round: Round) -> bool {
        self.address().is_some_and(|a| self.chain.proposer(round) == a)
    }

    fn start_round(&mut self, now: TimeMs, round: Round, out: &mut Vec<Output>) {
        let proposer = self.is_proposer(round);
        let actions = apply(&mut self.hs.sm, Event::StartRound { round, proposer });
        self.schedule(now, TimeoutKind::Rebroadcast, round, out);
        for a in actions {
            self.act(now, a, out);
        }
    }

    fn schedule(&self, now: TimeMs, kind: TimeoutKind, round: Round, out: &mut Vec<Output>) {
        let round_for_timeout = if self.cfg.planted(PlantedBug::FixedTimeouts) {
            Round(0)
        } else {
            round
        };
        let at = TimeMs(
            now.0
                .saturating_add(self.cfg.timeouts.duration_ms(kind, round_for_timeout)),
        );
        out.push(Output::ScheduleTimeout {
            timeout: Timeout {
                height: self.chain.height,
                round,
                kind,
            },
            at,
        });
    }

    fn quorum(&self, power: u64) -> bool {
        if self.cfg.planted(PlantedBug::CountByNumber) {
            return 3 * power > 2 * self.chain.validators.len() as u64;
        }
        self.chain.validators.is_quorum(power)
    }
    fn one_third(&self, power: u64) -> bool {
        if self.cfg.planted(PlantedBug::RoundSkipOnOne) {
            return power > 0;
        }
        if self.cfg.planted(PlantedBug::RoundSkipOffByOne) {
            return power >= self.chain.validators.total_power().0 / 3;
        }
        if self.cfg.planted(PlantedBug::CountByNumber) {
            return 3 * power > self.chain.validators.len() as u64;
        }
        self.chain.validators.is_one_third(power)
    }

    // ---- the upon rules ----

    /// Applies every `upon` rule whose guard holds, until none does.
    fn evaluate(&mut self, now: TimeMs, out: &mut Vec<Output>) {
        for _ in 0..10_000 {
            let Some(ev) = self.next_event() else { return };
            let actions = apply(&mut self.hs.sm, ev);
            for a in actions {
                self.act(now, a, out);
            }
        }
        panic!("upon-rule evaluation did not settle: every event must change state or be marked fired");
    }

    fn next_event(&mut self) -> Option<Event> {
        if self.hs.sm.step == Step::Commit || self.hs.executing.is_some() {
            return None;
        }
        if let Some(ev) = self.decision_event() {
            return Some(ev); // L49
        }
        if !self.hs.started {
            return None;
        }
        let r = self.hs.sm.round;
        let step = self.hs.sm.step;
        let k = &self.hs.keeper;
        let proposal = self.hs.proposals.get(&r).and_then(|p| {
            let validity = self.hs.blocks.get(&p.id).map(|(_, v)| *v)?;
            (validity != Validity::Pending).then_some((p.id, p.pol_round, validity == Validity::Valid))
        });
        if step == Step::Propose {
            match proposal {
                Some((id, None, valid)) => return Some(Event::Proposal { round: r, id, valid }), // L22
                Some((id, Some(vr), valid)) if vr < r && self.quorum(k.power_for(vr, VoteType::Prevote, Some(id))) => {
                    return Some(Event::ProposalAndPolkaPrevious {
                        round: r,
                        id,
                        valid,
                        vr,
                    }); // L28
                }
                _ => {}
            }
        }
        if step == Step::Prevote
            && !self.hs.fired_polka_any.contains(&r)
            && self.quorum(k.power_any(r, VoteType::Prevote))
        {
            self.hs.fired_polka_any.insert(r);
            return Some(Event::PolkaAny { round: r }); // L34
        }
        if step >= Step::Prevote && !self.hs.fired_polka_value.contains(&r) {
            if let Some((id, _, true)) = proposal {
                if self.quorum(k.power_for(r, VoteType::Prevote, Some(id))) {
                    self.hs.fired_polka_value.insert(r);
                    return Some(Event::ProposalAndPolkaCurrent { round: r, id });
                    // L36
                }
            }
        }
        if step == Step::Prevote && self.quorum(k.power_for(r, VoteType::Prevote, None)) {
            return Some(Event::PolkaNil { round: r }); // L44
        }
        if !self.hs.fired_precommit_any.contains(&r) && self.quorum(k.power_any(r, VoteType::Precommit)) {
            self.hs.fired_precommit_any.insert(r);
            return Some(Event::PrecommitAny { round: r }); // L47
        }
        let skip = k
            .rounds()
            .filter(|rr| *rr > r)
            .filter(|rr| self.one_third(self.heard_power(*rr)))
            .max();
        skip.map(|round| Event::RoundSkip { round }) // L55
    }

    /// L55's count: the power of the distinct validators heard from in `round`.
    fn heard_power(&self, round: Round) -> u64 {
        let k = &self.hs.keeper;
        if self.cfg.planted(PlantedBug::RoundSkipCountsTwice) {
            return k.power_any(round, VoteType::Prevote) + k.power_any(round, VoteType::Precommit);
        }
        k.heard_power(round)
    }

    /// L49: +2/3 precommits for a block we hold and know to be valid, in any round.
    fn decision_event(&self) -> Option<Event> {
        let vote_type = if self.cfg.planted(PlantedBug::DecideOnPrevotes) {
            VoteType::Prevote
        } else {
            VoteType::Precommit
        };
        for round in self.hs.keeper.rounds() {
            let tally = self.hs.keeper.tally(round, vote_type)?;
            for (id, _) in self.hs.blocks.iter().filter(|(_, (_, v))| *v == Validity::Valid) {
                if self.quorum(tally.power_for(Some(*id))) {
                    return Some(Event::ProposalAndCommit { round, id: *id });
                }
            }
        }
        if let Some(c) = &self.hs.external_commit {
            if self.hs.blocks.contains_key(&c.block_id) {
                return Some(Event::ProposalAndCommit {
                    round: c.round,
                    id: c.block_id,
                });
            }
        }
        None
    }

    fn act(&mut self, now: TimeMs, action: Action, out: &mut Vec<Output>) {
        match action {
            Action::Propose { round, id, pol_round } => self.propose(round, id, pol_round, out),
            Action::GetValue { round } => {
                out.push(Output::BuildBlock {
                    height: self.chain.height,
                    round,
                });
            }
            Action::Prevote { round, id } => self.vote(VoteType::Prevote, round, id, out),
            Action::Precommit { round, id } => self.vote(VoteType::Precommit, round, id, out),
            Action::ScheduleTimeout { kind, round } => self.schedule(now, kind, round, out),
            Action::Decide { round, id } => self.decide(round, id, out),
            Action::NewRound { round } => self.start_round(now, round, out),
        }
    }

    // ---- signing: persist first, never two conflicting messages ----

    fn propose(&mut self, round: Round, id: BlockId, pol_round: Option<Round>, out: &mut Vec<Output>) {
        if let Some(p) = self.hs.own_proposals.get(&round) {
            out.push(Output::Broadcast(Message::Proposal(Box::new(p.clone())))); // already signed: resend it
            return;
        }
        let Some(key) = &self.key else { return };
        let Some((block, _)) = self.hs.blocks.get(&id) else {
            // validValue's block is unknown (we restarted after seeing it): propose anew.
            out.push(Output::BuildBlock {
                height: self.chain.height,
                round,
            });
            return;
        };
        let bytes = proposal_sign_bytes(&self.cfg.chain_id, self.chain.height, round, pol_round, id);
        let at = SignTarget {
            height: self.chain.height,
            round,
            step: SignStep::Proposal,
        };
        let Ok(signature) = key.sign(at, &bytes) else {
            return; // the signer refused (it says why); proposing nothing is safe
        };
        let p = Proposal {
            height: self.chain.height,
            round,
            pol_round,
            block: block.clone(),
            signature,
        };
        out.push(Output::Persist(WalEntry::Proposal(Box::new(p.clone()))));
        out.push(Output::Broadcast(Message::Proposal(Box::new(p.clone()))));
        self.hs.proposals.insert(round, ProposalEntry { id, pol_round });
        self.hs.own_proposals.insert(round, p);
        self.send_polka(round, out);
    }

    /// A proposal with POL round `vr` comes with the +2/3 prevotes for its value at `vr`, so
    /// every honest node can check line 28's guard even if it missed some of them (for
    /// example, the halves of a Byzantine split vote).
    fn send_polka(&self, round: Round, out: &mut Vec<Output>) {
        let Some(p) = self.hs.own_proposals.get(&round) else {
            return;
        };
        let Some(vr) = p.pol_round else { return };
        if let Some(t) = self.hs.keeper.tally(vr, VoteType::Prevote) {
            let id = self.hs.proposals.get(&round).map(|e| e.id);
            for v in t.votes_for(id) {
                out.push(Output::Broadcast(Message::Vote(v.clone())));
            }
        }
    }

    fn vote(&mut self, vote_type: VoteType, round: Round, id: Option<BlockId>, out: &mut Vec<Output>) {
        let Some(key) = &self.key else { return };
        let me = key.address();
        let Some(idx) = self.chain.validators.index_of(&me) else {
            return;
        }; // observers do not vote
        if let Some(v) = self.hs.own_votes.get(&(round, vote_type)) {
            // Signed before (possibly before a restart): resend that one, never a different one.
            out.push(Output::Broadcast(Message::Vote(v.clone())));
            return;
        }
        let bytes = vote_sign_bytes(&self.cfg.chain_id, vote_type, self.chain.height, round, id);
        let at = SignTarget {
            height: self.chain.height,
            round,
            step: SignStep::of_vote(vote_type),
        };
        let Ok(signature) = key.sign(at, &bytes) else {
            return; // the signer refused (it says why); not voting is safe
        };
        let v = Vote {
            vote_type,
            height: self.chain.height,
            round,
            block_id: id,
            validator: me,
            signature,
        };
        if let (VoteType::Precommit, Some(id)) = (vote_type, id) {
            // The lock's justification goes to the log before the lock is announced.
            if let Some((block, _)) = self.hs.blocks.get(&id) {
                let prevotes = self
                    .hs
                    .keeper
                    .tally(round, VoteType::Prevote)
                    .map(|t| t.votes_for(Some(id)).cloned().collect())
                    .unwrap_or_default();
                out.push(Output::Persist(WalEntry::Lock {
                    block: block.clone(),
                    prevotes,
                }));
            }
        }
        out.push(Output::Persist(WalEntry::Vote(v.clone())));
        out.push(Output::Broadcast(Message::Vote(v.clone())));
        let power = self.chain.validators.get(idx).power;
        self.hs.keeper.add(v.clone(), idx, power);
        self.hs.own_votes.insert((round, vote_type), v);
    }

    fn decide(&mut self, round: Round, id: BlockId, out: &mut Vec<Output>) {
        let (block, _) = self
            .hs
            .blocks
            .get(&id)
            .expect("L49 fires only for a block we hold")
            .clone();
        let commit = match self.hs.external_commit.take() {
            Some(c) if c.block_id == id => c,
            _ => self.assemble_commit(round, id),
        };
        self.hs.executing = Some((id, block.header.time, commit.clone()));
        out.push(Output::Decide { block, commit });
    }

    fn assemble_commit(&self, round: Round, id: BlockId) -> Commit {
        let vote_type = if self.cfg.planted(PlantedBug::DecideOnPrevotes) {
            VoteType::Prevote
        } else {
            VoteType::Precommit
        };
        let signatures = match self.hs.keeper.tally(round, vote_type) {
            Some(t) => t
                .votes_for(Some(id))
                .map(|v| CommitSig {
                    validator: v.validator,
                    signature: v.signature,
                })
                .collect(),
            None => vec![],
        };
        Commit {
            height: self.chain.height,
            round,
            block_id: id,
            signatures,
        }
    }

    // ---- answers from the application ----

    fn on_block_txs(&mut self, now: TimeMs, height: Height, round: Round, txs: Vec<Vec<u8>>, out: &mut Vec<Output>) {
        if height != self.chain.height || round != self.hs.sm.round || self.hs.sm.step != Step::Propose {
            return; // stale answer
        }
        if self.hs.own_proposals.contains_key(&round) {
            return;
        }
        let Some(me) = self.address() else { return };
        let mut txs = txs;
        let mut bytes = 0usize;
        let keep = txs
            .iter()
            .take(MAX_BLOCK_TXS)
            .take_while(|t| {
                bytes += t.len();
                bytes <= MAX_BLOCK_BYTES
            })
            .count();
        txs.truncate(keep);
        let header = self.chain.new_header(me, now, &txs);
        let block = Block::new(header, txs, self.chain.last_commit.clone());
        let id = block.id();
        self.hs.blocks.insert(id, (block, Validity::Valid));
        for a in apply(&mut self.hs.sm, Event::ProposeValue { round, id }) {
            self.act(now, a, out);
        }
    }

    fn on_executed(
        &mut self,
        now: TimeMs,
        height: Height,
        app_hash: Hash,
        updates: &[ValidatorUpdate],
        out: &mut Vec<Output>,
    ) {
        if height != self.chain.height {
            return;
        }
        let Some((id, time, commit)) = self.hs.executing.take() else {
            return;
        };
        self.chain.advance_decided(id, time, commit, app_hash, updates);
        self.reset_height();
        // Pacing: the next height starts `commit_ms` after the decided block's time (when its
        // proposer built it, in whatever round), not after this height started: a height
        // decided in a later round is then not followed by a block at once (issue 18, item 6).
        // A block time ahead of our clock counts as now, so a skewed proposer cannot stall us.
        let since = TimeMs(time.0.min(now.0));
        let at = TimeMs(now.0.max(since.0.saturating_add(self.cfg.timeouts.commit_ms)));
        let timeout = Timeout {
            height: self.chain.height,
            round: Round(0),
            kind: TimeoutKind::Commit,
        };
        out.push(Output::ScheduleTimeout { timeout, at });
        self.replay_future(now, out);
        self.apply_buffered();
        self.request_blocks(now, out);
    }

    /// A block that came early through block sync, applied now that its height has come.
    /// Its commit is verified here unless it was on arrival; one that fails drops the peer
    /// that served it (the height is then requested from another).
    fn apply_buffered(&mut self) {
        let h = self.chain.height;
        let Some(b) = self.sync.take(h) else { return };
        let from = b.from;
        match self.accept_decided(b.block, b.commit, b.verified) {
            Ok(true) => self.sync.applied(from),
            Ok(false) => {}
            Err(_) => self.sync.drop_peer(from),
        }
    }

    /// Sends block sync's due requests (new heights in the window, expired retries).
    fn request_blocks(&mut self, now: TimeMs, out: &mut Vec<Output>) {
        for (to, h) in self.sync.requests(now, self.chain.height) {
            out.push(Output::Send {
                to,
                msg: Message::RequestDecided(h),
            });
        }
    }

    fn replay_future(&mut self, now: TimeMs, out: &mut Vec<Output>) {
        let h = self.chain.height;
        let (ready, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.future)
            .into_iter()
            .partition(|(_, m)| m.height() == Some(h));
        self.future = later
            .into_iter()
            .filter(|(_, m)| m.height().is_some_and(|mh| mh > h))
            .collect();
        let (parked_now, parked_later): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .filter(|(_, p)| p.height >= h)
            .partition(|(_, p)| p.height == h);
        self.parked = parked_later;
        let parked_now = parked_now.into_iter().map(|(from, p)| (from, Message::Proposal(p)));
        for (from, msg) in ready.into_iter().chain(parked_now) {
            let _ = self.on_message(now, from, msg, out); // re-verified against this height's set
        }
    }

    /// Whether handling timeout `t` now would do anything. When it is false, handling it
    /// changes nothing and outputs nothing, so a driver may drop it (the simulator does).
    pub fn timeout_matters(&self, t: &Timeout) -> bool {
        if t.kind == TimeoutKind::StateSync {
            return true; // the node's own timer, always delivered
        }
        if t.height != self.chain.height {
            return false; // stale
        }
        let hs = &self.hs;
        match t.kind {
            TimeoutKind::Commit => !hs.started && hs.executing.is_none() && hs.sm.step != Step::Commit,
            TimeoutKind::Rebroadcast => hs.started && t.round == hs.sm.round && hs.sm.step != Step::Commit,
            kind => crate::state_machine::timeout_applies(&hs.sm, kind, t.round),
        }
    }

    fn on_timeout(&mut self, now: TimeMs, t: Timeout, out: &mut Vec<Output>) {
        self.request_blocks(now, out); // block sync's retries ride on the timers
        if !self.timeout_matters(&t) {
            return;
        }
        let r = t.round;
        let ev = match t.kind {
            TimeoutKind::Commit => {
                self.on_start(now, out);
                return;
            }
            TimeoutKind::Rebroadcast => {
                self.rebroadcast(r, out);
                self.schedule(now, TimeoutKind::Rebroadcast, r, out);
                return;
            }
            TimeoutKind::StateSync => return, // the node's
            TimeoutKind::Propose => Event::TimeoutPropose { round: r },
            TimeoutKind::Prevote => Event::TimeoutPrevote { round: r },
            TimeoutKind::Precommit => Event::TimeoutPrecommit { round: r },
        };
        for a in apply(&mut self.hs.sm, ev) {
            self.act(now, a, out);
        }
    }

    /// Re-sends our own messages of the round: gossip over links that may lose messages.
    /// Our votes of the two rounds before are included: peers still there need them to finish
    /// their round (they cannot skip ahead on our votes alone).
    fn rebroadcast(&self, round: Round, out: &mut Vec<Output>) {
        if let Some(p) = self.hs.own_proposals.get(&round) {
            out.push(Output::Broadcast(Message::Proposal(Box::new(p.clone()))));
            self.send_polka(round, out);
        }
        for r in round.0.saturating_sub(REBROADCAST_PAST_ROUNDS)..=round.0 {
            for t in [VoteType::Prevote, VoteType::Precommit] {
                if let Some(v) = self.hs.own_votes.get(&(Round(r), t)) {
                    out.push(Output::Broadcast(Message::Vote(v.clone())));
                }
            }
        }
    }

    /// A peer voted in a round below ours: it is behind. Send it our own votes of that round,
    /// once per (peer, round), so it can finish the round.
    fn help_lagging_peer(&mut self, to: PeerId, round: Round, out: &mut Vec<Output>) {
        if round >= self.hs.sm.round || !self.hs.helped.insert((to, round)) {
            return;
        }
        for t in [VoteType::Prevote, VoteType::Precommit] {
            if let Some(v) = self.hs.own_votes.get(&(round, t)) {
                out.push(Output::Send {
                    to,
                    msg: Message::Vote(v.clone()),
                });
            }
        }
    }

    // ---- messages ----

    fn on_message(
        &mut self,
        now: TimeMs,
        from: PeerId,
        msg: Message,
        out: &mut Vec<Output>,
    ) -> Result<(), EngineError> {
        match msg {
            Message::Proposal(p) => self.on_proposal(now, from, p, out),
            Message::Vote(v) => self.on_vote(now, from, v, out),
            Message::Decided { block, commit } => self.on_decided(now, from, block, commit, out),
            Message::RequestDecided(h) => {
                if h < self.chain.height && h.0 >= 1 {
                    out.push(Output::SendDecided { to: from, height: h });
                }
                Ok(())
            }
            Message::Evidence(ev) => {
                if ev.height() == self.chain.height {
                    verify_evidence(&self.cfg.chain_id, &self.chain.validators, &ev, self.verifier.as_mut())
                        .map_err(EngineError::BadEvidence)?;
                    let Evidence::DuplicateVote { a, .. } = ev.as_ref();
                    if self.hs.evidence_seen.insert((a.validator, a.round, a.vote_type)) {
                        out.push(Output::Evidence(ev));
                    }
                }
                Ok(())
            }
            // The mempool's and state sync's business (the node's), not consensus.
            Message::Tx(_)
            | Message::RequestSnapshot
            | Message::SnapshotOffer { .. }
            | Message::RequestChunk { .. }
            | Message::SnapshotChunk { .. } => Ok(()),
        }
    }

    /// Sorts a message by height: `Ok(true)` to process now, `Ok(false)` when handled
    /// (buffered, or answered for a lagging peer).
    fn route_height(
        &mut self,
        now: TimeMs,
        from: PeerId,
        h: Height,
        msg: &Message,
        out: &mut Vec<Output>,
    ) -> Result<bool, EngineError> {
        let cur = self.chain.height;
        if h == cur {
            return Ok(true);
        }
        if h < cur {
            self.serve(from, h, out);
            return Ok(false);
        }
        if h.0 > cur.0 + MAX_FUTURE_HEIGHTS {
            // Too far ahead to keep, but a verified sign that we are behind: catch up.
            self.note_ahead(now, from, h, out);
            return Ok(false);
        }
        if self.future.len() >= MAX_FUTURE_MESSAGES {
            return Err(EngineError::BufferFull);
        }
        self.future.push((from, msg.clone()));
        self.note_ahead(now, from, h, out);
        Ok(false)
    }

    /// Keeps a later-height proposal whose signer cannot be checked yet (see
    /// [`EngineError::Parked`]); one too far ahead to keep is only refused.
    fn park(&mut self, from: PeerId, p: Box<Proposal>) -> EngineError {
        let (height, round) = (p.height, p.round);
        if height.0 > self.chain.height.0 + MAX_FUTURE_HEIGHTS {
            return EngineError::NotYetVerifiable {
                height,
                validator: p.block.header.proposer,
            };
        }
        if self.parked.len() >= MAX_PARKED_PROPOSALS {
            self.parked.pop_front();
        }
        self.parked.push_back((from, p));
        EngineError::Parked { height, round }
    }

    /// A peer is ahead of us (a verified message of its height `h`): block sync may ask it.
    fn note_ahead(&mut self, now: TimeMs, from: PeerId, h: Height, out: &mut Vec<Output>) {
        self.sync.note_peer(from, h);
        self.request_blocks(now, out);
    }

    /// A peer is behind (it sent something for an old height): send it that decided block once.
    fn serve(&mut self, to: PeerId, h: Height, out: &mut Vec<Output>) {
        if h.0 == 0 || self.recent_serves.contains(&(to, h)) {
            return;
        }
        if self.recent_serves.len() >= MAX_RECENT_SERVES {
            self.recent_serves.pop_front();
        }
        self.recent_serves.push_back((to, h));
        out.push(Output::SendDecided { to, height: h });
    }

    fn check_round(&self, r: Round) -> Result<(), EngineError> {
        let cur = self.hs.sm.round;
        if r.0 > cur.0.saturating_add(MAX_ROUNDS_AHEAD) {
            return Err(EngineError::RoundTooFar { got: r, current: cur });
        }
        Ok(())
    }

    fn on_proposal(
        &mut self,
        now: TimeMs,
        from: PeerId,
        p: Box<Proposal>,
        out: &mut Vec<Output>,
    ) -> Result<(), EngineError> {
        if p.block.header.chain_id != self.cfg.chain_id {
            return Err(EngineError::WrongChain {
                expected: self.cfg.chain_id.clone(),
                got: p.block.header.chain_id.clone(),
            });
        }
        if p.block.header.height != p.height {
            return Err(EngineError::Malformed(format!(
                "proposal for height {} carries a block of height {}",
                p.height, p.block.header.height
            )));
        }
        if p.pol_round.is_some_and(|vr| vr >= p.round) {
            return Err(EngineError::Malformed(
                "proposal POL round is not below its round".into(),
            ));
        }
        if p.height < self.chain.height {
            self.serve(from, p.height, out); // a lagging peer
            return Ok(());
        }
        let id = p.block.id();
        let bytes = proposal_sign_bytes(&self.cfg.chain_id, p.height, p.round, p.pol_round, id);
        if p.height > self.chain.height {
            // The proposer schedule of a later height is not known yet. A proposal signed by
            // the validator its block names (a fresh value: the usual case) is buffered and
            // checked again when its height starts; any other (a re-proposal of a validValue
            // another validator built, or a forgery) is parked unblamed until then.
            let named = p.block.header.proposer;
            let signed_by_named = self.chain.validators.index_of(&named).is_some_and(|idx| {
                let vs = &self.chain.validators;
                self.verifier
                    .verify(&vs.get(idx).pub_key, vs.key(idx), &bytes, &p.signature)
                    .is_ok()
            });
            if !signed_by_named {
                return Err(self.park(from, p));
            }
        } else {
            // For our height the signer must be the proposer of (height, round).
            let proposer = if self.cfg.planted(PlantedBug::AcceptNonProposer) {
                p.block.header.proposer
            } else {
                self.chain.proposer(p.round)
            };
            let idx = self
                .chain
                .validators
                .index_of(&proposer)
                .ok_or(EngineError::UnknownValidator(proposer))?;
            let vs = &self.chain.validators;
            self.verifier
                .verify(&vs.get(idx).pub_key, vs.key(idx), &bytes, &p.signature)
                .map_err(|e| EngineError::BadSignature {
                    what: "proposal",
                    detail: format!("not signed by the proposer {proposer}: {e}"),
                })?;
        }
        let msg = Message::Proposal(p);
        if !self.route_height(now, from, msg.height().unwrap_or_default(), &msg, out)? {
            return Ok(());
        }
        let Message::Proposal(p) = msg else { unreachable!() };
        self.check_round(p.round)?;
        if let Some(existing) = self.hs.proposals.get(&p.round) {
            if existing.id == id {
                return Ok(()); // duplicate
            }
            return Err(EngineError::ConflictingProposal {
                height: p.height,
                round: p.round,
            });
        }
        self.hs.proposals.insert(
            p.round,
            ProposalEntry {
                id,
                pol_round: p.pol_round,
            },
        );
        if !self.hs.blocks.contains_key(&id) {
            match self.chain.check_block(&p.block, self.verifier.as_mut()) {
                Ok(()) => {
                    self.hs.blocks.insert(id, (p.block.clone(), Validity::Pending));
                    out.push(Output::ValidateBlock { block: p.block, id });
                }
                Err(_) => {
                    self.hs.blocks.insert(id, (p.block, Validity::Invalid));
                }
            }
        }
        Ok(())
    }

    fn on_vote(&mut self, now: TimeMs, from: PeerId, v: Vote, out: &mut Vec<Output>) -> Result<(), EngineError> {
        // A vote of the previous height is usually a peer finishing it (it will ask with
        // RequestDecided if it is stuck); two or more heights behind, send it the block.
        if v.height.0 + 1 < self.chain.height.0 {
            self.serve(from, v.height, out);
            return Ok(());
        }
        if v.height < self.chain.height {
            return Ok(());
        }

        let vs = &self.chain.validators;
        let Some(idx) = vs.index_of(&v.validator) else {
            return Err(if v.height > self.chain.height {
                EngineError::NotYetVerifiable {
                    height: v.height,
                    validator: v.validator,
                }
            } else {
                EngineError::UnknownValidator(v.validator)
            });
        };
        let bytes = vote_sign_bytes(&self.cfg.chain_id, v.vote_type, v.height, v.round, v.block_id);
        self.verifier
            .verify(&vs.get(idx).pub_key, vs.key(idx), &bytes, &v.signature)
            .map_err(|e| EngineError::BadSignature {
                what: "vote",
                detail: format!("from {}: {e}", v.validator),
            })?;
        let msg = Message::Vote(v);
        if !self.route_height(now, from, msg.height().unwrap_or_default(), &msg, out)? {
            return Ok(());
        }
        let Message::Vote(v) = msg else { unreachable!() };
        self.check_round(v.round)?;
        if self.hs.helped.len() < MAX_RECENT_SERVES {
            self.help_lagging_peer(from, v.round, out);
        }
        let power = self.chain.validators.get(idx).power;
        let wanted = v.block_id.is_some_and(|id| self.hs.blocks.contains_key(&id));
        if let AddVote::Conflict(ev) = self.hs.keeper.add_vote(v, idx, power, wanted) {
            let Evidence::DuplicateVote { a, .. } = ev.as_ref();
            let report = !self.cfg.planted(PlantedBug::SkipEvidence);
            if report && self.hs.evidence_seen.insert((a.validator, a.round, a.vote_type)) {
                out.push(Output::Evidence(ev));
            }
        }
        Ok(())
    }

    /// Catch-up: a decided block with its commit. One for our height is verified and applied;
    /// one we requested for a later height is checked as far as it can be and kept for its
    /// turn; anything else is not used.
    fn on_decided(
        &mut self,
        now: TimeMs,
        from: PeerId,
        block: Block,
        commit: Commit,
        out: &mut Vec<Output>,
    ) -> Result<(), EngineError> {
        let h = block.height();
        let cur = self.chain.height;
        let requested = self.sync.requested_from(from, h);
        if h == cur {
            let r = self.accept_decided(block, commit, false);
            match &r {
                Ok(true) => {
                    self.sync.answered(from, h);
                    self.sync.applied(from);
                }
                Ok(false) => self.sync.answered(from, h),
                Err(_) if requested => self.sync.drop_peer(from),
                Err(_) => {}
            }
            return r.map(|_| ());
        }
        if h < cur || !requested {
            return Ok(()); // not what we need now
        }
        if let Err(e) = self.precheck_decided(&block, &commit) {
            self.sync.drop_peer(from);
            return Err(e);
        }
        self.sync.answered(from, h);
        let verified = block.header.validators_hash == self.chain.validators.hash();
        self.sync.buffer(
            cur,
            Buffered {
                from,
                block,
                commit,
                verified,
            },
        );
        self.request_blocks(now, out);
        Ok(())
    }

    /// What can be checked of a decided block for a later height before its turn: the commit
    /// is for this block, and, when the header names our current validator set (the common
    /// case: no change in between), +2/3 of it signed.
    fn precheck_decided(&mut self, block: &Block, commit: &Commit) -> Result<(), EngineError> {
        if commit.block_id != block.id() || commit.height != block.height() {
            return Err(EngineError::BadDecided("the commit is not for this block".into()));
        }
        crate::chain::check_body(block)
            .map_err(|e| EngineError::BadDecided(format!("block {}: {e}", block.height())))?;
        if block.header.validators_hash == self.chain.validators.hash() {
            verify_commit(
                &self.cfg.chain_id,
                &self.chain.validators,
                commit,
                self.verifier.as_mut(),
            )
            .map_err(EngineError::BadDecided)?;
        }
        Ok(())
    }

    /// A decided block and its commit for our current height: verified (the commit's
    /// signatures only when not `verified` already) and taken as decided. `Ok(false)` when not
    /// needed (the height is already being decided).
    fn accept_decided(&mut self, block: Block, commit: Commit, verified: bool) -> Result<bool, EngineError> {
        if block.height() != self.chain.height || self.hs.sm.step == Step::Commit || self.hs.executing.is_some() {
            return Ok(false);
        }
        let id = block.id();
        if commit.block_id != id || commit.height != block.height() {
            return Err(EngineError::BadDecided("the commit is not for this block".into()));
        }
        if !verified || block.header.validators_hash != self.chain.validators.hash() {
            verify_commit(
                &self.cfg.chain_id,
                &self.chain.validators,
                &commit,
                self.verifier.as_mut(),
            )
            .map_err(EngineError::BadDecided)?;
        }
        self.chain
            .check_block(&block, self.verifier.as_mut())
            .map_err(|e: BlockError| EngineError::BadDecided(e.to_string()))?;
        self.hs.blocks.insert(id, (block, Validity::Valid));
        self.hs.external_commit = Some(commit);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "c";

    fn keys() -> Vec<PrivateKey> {
        (0..4u32).map(|i| PrivateKey::from_seed(&i.to_be_bytes())).collect()
    }

    fn signed_vote(k: &PrivateKey, round: u32, id: Option<BlockId>) -> Message {
        let bytes = vote_sign_bytes(C, VoteType::Prevote, Height(1), Round(round), id);
        Message::Vote(Vote {
            vote_type: VoteType::Prevote,
            height: Height(1),
            round: Round(round),
            block_id: id,
            validator: k.address(),
            signature: k.sign(&bytes),
        })
    }

    /// What validator `me` of four prevotes in round 1 for a valid proposal of round 1 that
    /// claims a polka in round 0, when `polka` of the others prevoted for it in round 0.
    fn round_1_prevote_for_a_proposal_with_pol_round_0(polka: usize) -> Option<Option<BlockId>> {
        let ks = keys();
        let vs = ValidatorSet::new(ks.iter().map(|k| (k.public_key(), VotingPower(1))).collect()).unwrap();
        let chain = ChainState::genesis(C, vs, Hash::default(), TimeMs(0));
        let proposer = chain.proposer(Round(1));
        let me = ks.iter().position(|k| k.address() != proposer).unwrap();
        let others: Vec<&PrivateKey> = ks
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != me)
            .map(|(_, k)| k)
            .collect();
        let block: Block = BlockData {
            header: chain.new_header(proposer, TimeMs(1), &[]),
            txs: vec![],
            last_commit: None,
        }
        .into();
        let id = block.id();
        let mut e = Engine::new(
            EngineConfig::new(C, TimeoutConfig::default()),
            Some(ks[me].clone()),
            chain,
            vec![],
            Box::new(crate::traits::CachingVerifier::new()),
        );
        let mut out = e.handle(TimeMs(0), Input::Start).unwrap();
        let send = |e: &mut Engine, from: &PrivateKey, msg: Message| {
            let input = Input::Message {
                from: from.address(),
                msg,
            };
            e.handle(TimeMs(1), input).unwrap()
        };
        for k in &others[..polka] {
            out.extend(send(&mut e, k, signed_vote(k, 0, Some(id))));
        }
        // Two of four in round 1 (f+1): skip to it.
        for k in &others[..2] {
            out.extend(send(&mut e, k, signed_vote(k, 1, None)));
        }
        assert_eq!(e.state().round, Round(1));
        let key = ks.iter().find(|k| k.address() == proposer).unwrap();
        let proposal = Proposal {
            height: Height(1),
            round: Round(1),
            pol_round: Some(Round(0)),
            signature: key.sign(&proposal_sign_bytes(C, Height(1), Round(1), Some(Round(0)), id)),
            block,
        };
        out.extend(send(&mut e, key, Message::Proposal(Box::new(proposal))));
        let validity = Input::BlockValidity {
            height: Height(1),
            block_id: id,
            valid: true,
        };
        out.extend(e.handle(TimeMs(1), validity).unwrap());
        out.iter().find_map(|o| match o {
            Output::Broadcast(Message::Vote(v))
                if v.vote_type == VoteType::Prevote && v.round == Round(1) && v.validator == ks[me].address() =>
            {
                Some(v.block_id)
            }
            _ => None,
        })
    }

    /// L28: a proposal that names a POL round is prevoted when +2/3 prevoted it in that round,
    /// and not on its word alone (the engine checks the polka, the state machine only `vr <
    /// round`).
    #[test]
    fn l28_a_proposal_claiming_a_polka_is_prevoted_only_when_the_polka_is_there() {
        let with_polka = round_1_prevote_for_a_proposal_with_pol_round_0(3);
        assert!(matches!(with_polka, Some(Some(_))), "{with_polka:?}");
        for polka in [0, 2] {
            let got = round_1_prevote_for_a_proposal_with_pol_round_0(polka);
            assert!(!matches!(got, Some(Some(_))), "{polka} of 4 is no polka: {got:?}");
        }
    }

    #[test]
    fn the_round_timeouts_grow_by_their_delta_each_round_and_the_others_do_not() {
        let t = TimeoutConfig {
            propose_ms: 3000,
            propose_delta_ms: 500,
            prevote_ms: 1000,
            prevote_delta_ms: 300,
            precommit_ms: 2000,
            precommit_delta_ms: 700,
            commit_ms: 900,
            rebroadcast_ms: 1500,
            sync_retry_ms: 400,
        };
        let at = |kind, round| t.duration_ms(kind, Round(round));
        assert_eq!((at(TimeoutKind::Propose, 0), at(TimeoutKind::Propose, 2)), (3000, 4000));
        assert_eq!((at(TimeoutKind::Prevote, 0), at(TimeoutKind::Prevote, 2)), (1000, 1600));
        assert_eq!(
            (at(TimeoutKind::Precommit, 0), at(TimeoutKind::Precommit, 2)),
            (2000, 3400)
        );
        for round in [0, 2] {
            assert_eq!(at(TimeoutKind::Commit, round), 900);
            assert_eq!(at(TimeoutKind::Rebroadcast, round), 1500);
            assert_eq!(at(TimeoutKind::StateSync, round), 400);
        }
    }
}
