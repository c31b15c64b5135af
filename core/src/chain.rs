//! The chain as seen between heights: who validates the next height, what the last block and
//! commit were, and the application's hash. Both the engine (after each decision) and the
//! node (when it replays its stored blocks on start) move it forward with [`ChainState::advance`],
//! so recovery and live operation compute exactly the same state.
//!
//! Validator-set changes returned by the application when it executes block `h` take effect
//! at height `h + 1`: the header of block `h + 1` already carries the new `validators_hash`,
//! and its commit is checked against the new set.

use crate::crypto::vote_sign_bytes;
use crate::proposer::ProposerSchedule;
use crate::traits::SignatureVerifier;
use crate::types::*;
use crate::validator::{ValidatorSet, ValidatorUpdate};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("chain id `{got}`, expected `{expected}`")]
    WrongChain { expected: String, got: String },
    #[error("height {got}, expected {expected}")]
    WrongHeight { expected: Height, got: Height },
    #[error("previous block id does not match the last decided block")]
    WrongPrevious,
    #[error("block time {got} is not after the previous block time {prev}")]
    TimeNotMonotonic { prev: TimeMs, got: TimeMs },
    #[error("validators hash does not match the validator set of this height")]
    WrongValidators,
    #[error("app hash does not match the application state")]
    WrongAppHash,
    #[error("transactions hash does not match the transactions")]
    WrongTxsHash,
    #[error("last commit hash does not match the last commit")]
    WrongLastCommitHash,
    #[error("last commit: {0}")]
    BadLastCommit(String),
    #[error("proposer {0} is not a validator of this height")]
    UnknownProposer(Address),
    #[error("block has {0} transactions or {1} bytes, over the limits")]
    TooLarge(usize, usize),
}

/// Everything needed to start deciding `height`.
#[derive(Clone, Debug)]
pub struct ChainState {
    pub chain_id: String,
    /// The height to decide next.
    pub height: Height,
    pub validators: ValidatorSet,
    pub schedule: ProposerSchedule,
    /// Validators of `height - 1` (they signed `last_commit`).
    pub last_validators: Option<ValidatorSet>,
    /// Id and time of the block decided at `height - 1`.
    pub last_block: Option<(BlockId, TimeMs)>,
    pub last_commit: Option<Commit>,
    pub app_hash: Hash,
    pub genesis_time: TimeMs,
}

/// The encoded form of a [`ChainState`] (in snapshots: on disk and on the wire).
#[derive(serde::Serialize, serde::Deserialize)]
struct ChainRecord {
    chain_id: String,
    height: Height,
    validators: Vec<(crate::crypto::PublicKey, VotingPower)>,
    priorities: Vec<i64>,
    last_validators: Option<Vec<(crate::crypto::PublicKey, VotingPower)>>,
    last_block: Option<(BlockId, TimeMs)>,
    last_commit: Option<Commit>,
    app_hash: Hash,
    genesis_time: TimeMs,
}

fn members(vs: &ValidatorSet) -> Vec<(crate::crypto::PublicKey, VotingPower)> {
    vs.validators().iter().map(|v| (v.pub_key, v.power)).collect()
}

impl ChainState {
    /// The canonical encoding (see [`ChainState::decode`]).
    pub fn encode(&self) -> Vec<u8> {
        crate::codec::encode(&ChainRecord {
            chain_id: self.chain_id.clone(),
            height: self.height,
            validators: members(&self.validators),
            priorities: self.schedule.priorities().to_vec(),
            last_validators: self.last_validators.as_ref().map(members),
            last_block: self.last_block,
            last_commit: self.last_commit.clone(),
            app_hash: self.app_hash,
            genesis_time: self.genesis_time,
        })
    }

    /// Decodes and checks an encoded chain state: valid validator sets, a proposer schedule
    /// that fits its set, a last block and commit present together past height 1.
    pub fn decode(bytes: &[u8]) -> Result<ChainState, String> {
        let r: ChainRecord = crate::codec::decode_bounded(bytes, crate::limits::MAX_MESSAGE_BYTES)
            .map_err(|e| format!("not an encoded chain state: {e}"))?;
        let validators = ValidatorSet::new(r.validators).map_err(|e| format!("validator set: {e}"))?;
        let last_validators = match r.last_validators {
            Some(m) => Some(ValidatorSet::new(m).map_err(|e| format!("last validator set: {e}"))?),
            None => None,
        };
        let schedule = ProposerSchedule::from_priorities(&validators, r.priorities)
            .ok_or("proposer priorities do not fit the validator set")?;
        let complete = r.last_block.is_some() && r.last_commit.is_some() && last_validators.is_some();
        if r.height.0 == 0 || (r.height.0 > 1) != complete {
            return Err(format!(
                "height {} with{} a last block, commit and validator set",
                r.height.0,
                if complete { "" } else { "out" }
            ));
        }
        if let Some(c) = &r.last_commit {
            if c.height.next() != r.height || Some(c.block_id) != r.last_block.map(|b| b.0) {
                return Err("the last commit is not for the last block".into());
            }
        }
        Ok(ChainState {
            chain_id: r.chain_id,
            height: r.height,
            validators,
            schedule,
            last_validators,
            last_block: r.last_block,
            last_commit: r.last_commit,
            app_hash: r.app_hash,
            genesis_time: r.genesis_time,
        })
    }

    pub fn genesis(chain_id: &str, validators: ValidatorSet, app_hash: Hash, genesis_time: TimeMs) -> Self {
        ChainState {
            chain_id: chain_id.to_string(),
            height: Height(1),
            schedule: ProposerSchedule::new(&validators),
            validators,
            last_validators: None,
            last_block: None,
            last_commit: None,
            app_hash,
            genesis_time,
        }
    }

    /// Moves past a decided and executed block. Invalid updates (an empty or oversized set)
    /// are dropped identically on every node; the set then stays as it was.
    pub fn advance(&mut self, block: &Block, commit: &Commit, app_hash: Hash, updates: &[ValidatorUpdate]) {
        assert_eq!(block.height(), self.height, "advance with a block of another height");
        self.advance_decided(block.id(), block.header.time, commit.clone(), app_hash, updates);
    }

    /// [`ChainState::advance`] past the block `id` (the block's own id, which the caller
    /// computed), decided at `time` by `commit`.
    pub fn advance_decided(
        &mut self,
        id: BlockId,
        time: TimeMs,
        commit: Commit,
        app_hash: Hash,
        updates: &[ValidatorUpdate],
    ) {
        assert_eq!(commit.height, self.height, "advance with a commit of another height");
        let next = if updates.is_empty() {
            None
        } else {
            self.validators.apply_updates(updates).ok()
        };
        match next {
            Some(next) => {
                self.schedule.advance_to(&self.validators, &next);
                self.last_validators = Some(std::mem::replace(&mut self.validators, next));
            }
            None => {
                self.schedule.advance(&self.validators);
                self.last_validators = Some(self.validators.clone());
            }
        }
        self.last_block = Some((id, time));
        self.last_commit = Some(commit);
        self.app_hash = app_hash;
        self.height = self.height.next();
    }

    pub fn proposer(&self, round: Round) -> Address {
        self.schedule.proposer(&self.validators, round)
    }

    /// The header of a new block proposed by `proposer` at `now`.
    pub fn new_header(&self, proposer: Address, now: TimeMs, txs: &[Vec<u8>]) -> Header {
        let min_time = match self.last_block {
            Some((_, t)) => t.0 + 1,
            None => self.genesis_time.0,
        };
        Header {
            chain_id: self.chain_id.clone(),
            height: self.height,
            time: TimeMs(now.0.max(min_time)),
            prev_block_id: self.last_block.map(|(id, _)| id),
            proposer,
            txs_hash: txs_hash(txs),
            app_hash: self.app_hash,
            validators_hash: self.validators.hash(),
            last_commit_hash: commit_hash(&self.last_commit),
        }
    }

    /// Checks everything about a block that does not need the application.
    pub fn check_block(&self, block: &Block, verifier: &mut dyn SignatureVerifier) -> Result<(), BlockError> {
        let h = &block.header;
        if h.chain_id != self.chain_id {
            return Err(BlockError::WrongChain {
                expected: self.chain_id.clone(),
                got: h.chain_id.clone(),
            });
        }
        if h.height != self.height {
            return Err(BlockError::WrongHeight {
                expected: self.height,
                got: h.height,
            });
        }
        if h.prev_block_id != self.last_block.map(|(id, _)| id) {
            return Err(BlockError::WrongPrevious);
        }
        match self.last_block {
            Some((_, prev)) if h.time <= prev => return Err(BlockError::TimeNotMonotonic { prev, got: h.time }),
            _ => {}
        }
        if h.validators_hash != self.validators.hash() {
            return Err(BlockError::WrongValidators);
        }
        if h.app_hash != self.app_hash {
            return Err(BlockError::WrongAppHash);
        }
        check_body(block)?;
        if self.validators.index_of(&h.proposer).is_none() {
            return Err(BlockError::UnknownProposer(h.proposer));
        }
        match (&block.last_commit, &self.last_validators, self.last_block) {
            (None, None, None) => Ok(()),
            (Some(c), Some(vs), Some((id, _))) => {
                if c.block_id != id || c.height.next() != self.height {
                    return Err(BlockError::BadLastCommit("not for the last decided block".into()));
                }
                verify_commit(&self.chain_id, vs, c, verifier).map_err(BlockError::BadLastCommit)
            }
            _ => Err(BlockError::BadLastCommit("missing or unexpected".into())),
        }
    }
}

/// Checks a commit: distinct members of `vs`, valid precommit signatures, +2/3 of the power.
/// Whether a block's body is the one its header (and so its id) names: its transactions
/// within the limits and hashing to `txs_hash`, its last commit to `last_commit_hash`. A
/// body changed behind an unchanged header keeps the block's id, so a block fetched from a
/// peer is checked with this before anything of it is kept.
pub fn check_body(block: &Block) -> Result<(), BlockError> {
    let h = &block.header;
    let bytes: usize = block.txs.iter().map(|t| t.len()).sum();
    if block.txs.len() > crate::limits::MAX_BLOCK_TXS || bytes > crate::limits::MAX_BLOCK_BYTES {
        return Err(BlockError::TooLarge(block.txs.len(), bytes));
    }
    if h.txs_hash != txs_hash(&block.txs) {
        return Err(BlockError::WrongTxsHash);
    }
    if h.last_commit_hash != commit_hash(&block.last_commit) {
        return Err(BlockError::WrongLastCommitHash);
    }
    Ok(())
}

pub fn verify_commit(
    chain_id: &str,
    vs: &ValidatorSet,
    commit: &Commit,
    verifier: &mut dyn SignatureVerifier,
) -> Result<(), String> {
    let mut power = 0u64;
    let mut seen = std::collections::BTreeSet::new();
    if commit.signatures.len() > vs.len() {
        return Err(format!(
            "{} signatures for {} validators",
            commit.signatures.len(),
            vs.len()
        ));
    }
    let bytes = vote_sign_bytes(
        chain_id,
        VoteType::Precommit,
        commit.height,
        commit.round,
        Some(commit.block_id),
    );
    for s in &commit.signatures {
        let idx = vs
            .index_of(&s.validator)
            .ok_or_else(|| format!("signer {} is not a validator", s.validator))?;
        if !seen.insert(idx) {
            return Err(format!("signer {} appears twice", s.validator));
        }
        verifier
            .verify(&vs.get(idx).pub_key, vs.key(idx), &bytes, &s.signature)
            .map_err(|e| format!("precommit of {}: {e}", s.validator))?;
        power += vs.get(idx).power.0;
    }
    if !vs.is_quorum(power) {
        return Err(format!(
            "signers hold {power} of {} voting power; more than 2/3 needed",
            vs.total_power()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::PrivateKey;
    use crate::traits::CachingVerifier;

    fn keys() -> Vec<PrivateKey> {
        (0..4u32).map(|i| PrivateKey::from_seed(&i.to_be_bytes())).collect()
    }

    /// Four validators of power 1, genesis at time 100.
    fn genesis(ks: &[PrivateKey]) -> ChainState {
        let vs = ValidatorSet::new(ks.iter().map(|k| (k.public_key(), VotingPower(1))).collect()).unwrap();
        ChainState::genesis("c", vs, Hash([9; 32]), TimeMs(100))
    }

    /// A block of `c`'s next height from its first proposer, at `now`, with `c`'s last commit.
    fn block(c: &ChainState, now: u64) -> Block {
        BlockData {
            header: c.new_header(c.proposer(Round(0)), TimeMs(now), &[b"tx".to_vec()]),
            txs: vec![b"tx".to_vec()],
            last_commit: c.last_commit.clone(),
        }
        .into()
    }

    /// Precommits of `signers` for `id` at `height`, round 0.
    fn commit(signers: &[PrivateKey], height: Height, id: BlockId) -> Commit {
        let bytes = vote_sign_bytes("c", VoteType::Precommit, height, Round(0), Some(id));
        Commit {
            height,
            round: Round(0),
            block_id: id,
            signatures: signers
                .iter()
                .map(|k| CommitSig {
                    validator: k.address(),
                    signature: k.sign(&bytes),
                })
                .collect(),
        }
    }

    /// The chain state at height 2: block 1 decided at time 1,000 by three of four.
    fn at_height_2(ks: &[PrivateKey]) -> ChainState {
        let mut c = genesis(ks);
        let b = block(&c, 1_000);
        c.advance(&b, &commit(&ks[..3], Height(1), b.id()), Hash([1; 32]), &[]);
        c
    }

    /// `b` with its header changed by `f` (the body stays, so only the header's checks differ).
    fn with_header(b: &Block, f: impl FnOnce(&mut Header)) -> Block {
        let mut data: BlockData = (**b).clone();
        f(&mut data.header);
        data.into()
    }

    /// `b` with `last_commit` as its last commit (and the header hash that names it).
    fn with_last_commit(b: &Block, last_commit: Option<Commit>) -> Block {
        let mut data: BlockData = (**b).clone();
        data.header.last_commit_hash = commit_hash(&last_commit);
        data.last_commit = last_commit;
        data.into()
    }

    fn check(c: &ChainState, b: &Block) -> Result<(), BlockError> {
        c.check_block(b, &mut CachingVerifier::new())
    }

    #[test]
    fn a_block_built_on_the_chain_state_passes_its_checks_at_genesis_and_after() {
        let ks = keys();
        let c = genesis(&ks);
        assert_eq!(check(&c, &block(&c, 500)), Ok(()));
        let c = at_height_2(&ks);
        assert_eq!(check(&c, &block(&c, 2_000)), Ok(()));
    }

    #[test]
    fn check_block_refuses_a_header_that_does_not_follow_the_chain() {
        let ks = keys();
        let c = at_height_2(&ks);
        let good = block(&c, 2_000);
        let bad = |f: fn(&mut Header)| check(&c, &with_header(&good, f));
        assert!(matches!(
            bad(|h| h.chain_id = "other".into()),
            Err(BlockError::WrongChain { .. })
        ));
        assert!(matches!(
            bad(|h| h.height = Height(3)),
            Err(BlockError::WrongHeight { .. })
        ));
        assert_eq!(bad(|h| h.prev_block_id = None), Err(BlockError::WrongPrevious));
        assert_eq!(
            bad(|h| h.prev_block_id = Some(Hash([5; 32]))),
            Err(BlockError::WrongPrevious)
        );
        assert_eq!(
            bad(|h| h.time = TimeMs(1_000)),
            Err(BlockError::TimeNotMonotonic {
                prev: TimeMs(1_000),
                got: TimeMs(1_000)
            }),
            "a block's time is strictly after the last block's"
        );
        assert_eq!(
            check(&c, &with_header(&good, |h| h.time = TimeMs(1_001))),
            Ok(()),
            "one millisecond later is enough"
        );
        assert_eq!(
            bad(|h| h.validators_hash = Hash([5; 32])),
            Err(BlockError::WrongValidators)
        );
        assert_eq!(bad(|h| h.app_hash = Hash([5; 32])), Err(BlockError::WrongAppHash));
        assert_eq!(bad(|h| h.txs_hash = Hash([5; 32])), Err(BlockError::WrongTxsHash));
        assert_eq!(
            bad(|h| h.proposer = Address([5; 20])),
            Err(BlockError::UnknownProposer(Address([5; 20])))
        );
    }

    #[test]
    fn check_block_wants_a_valid_last_commit_for_the_last_block_exactly_past_genesis() {
        let ks = keys();
        let g = genesis(&ks);
        let c = at_height_2(&ks);
        let good = block(&c, 2_000);
        let (last_id, _) = c.last_block.unwrap();
        let not_for_last = Err(BlockError::BadLastCommit("not for the last decided block".into()));
        // Well signed, for another block of height 1, or for the last block at another height.
        let other_block = commit(&ks[..3], Height(1), Hash([5; 32]));
        assert_eq!(check(&c, &with_last_commit(&good, Some(other_block))), not_for_last);
        let other_height = commit(&ks[..3], Height(2), last_id);
        assert_eq!(check(&c, &with_last_commit(&good, Some(other_height))), not_for_last);
        // Two of four signers are not +2/3.
        let weak = commit(&ks[..2], Height(1), last_id);
        assert!(matches!(
            check(&c, &with_last_commit(&good, Some(weak))),
            Err(BlockError::BadLastCommit(_))
        ));
        // None past genesis; one at genesis.
        assert_eq!(
            check(&c, &with_last_commit(&good, None)),
            Err(BlockError::BadLastCommit("missing or unexpected".into()))
        );
        let first = block(&g, 500);
        let commit_at_genesis = commit(&ks[..3], Height(1), last_id);
        assert_eq!(
            check(&g, &with_last_commit(&first, Some(commit_at_genesis))),
            Err(BlockError::BadLastCommit("missing or unexpected".into()))
        );
    }

    #[test]
    fn a_commit_needs_more_than_two_thirds_of_the_power_from_distinct_members_with_valid_signatures() {
        let ks = keys();
        let vs = genesis(&ks).validators;
        let id = Hash([7; 32]);
        let verify = |c: &Commit| verify_commit("c", &vs, c, &mut CachingVerifier::new());
        assert_eq!(verify(&commit(&ks[..3], Height(1), id)), Ok(()));
        assert_eq!(verify(&commit(&ks, Height(1), id)), Ok(()), "everyone signed");
        assert_eq!(
            verify(&commit(&ks[..2], Height(1), id)),
            Err("signers hold 2 of 4 voting power; more than 2/3 needed".into())
        );
        let twice = commit(
            &[ks[0].clone(), ks[1].clone(), ks[2].clone(), ks[2].clone()],
            Height(1),
            id,
        );
        assert_eq!(verify(&twice), Err(format!("signer {} appears twice", ks[2].address())));
        let mut too_many = commit(&ks, Height(1), id);
        too_many.signatures.push(too_many.signatures[0].clone());
        assert_eq!(verify(&too_many), Err("5 signatures for 4 validators".into()));
        let stranger = PrivateKey::from_seed(b"stranger");
        let with_stranger = commit(&[ks[0].clone(), ks[1].clone(), stranger.clone()], Height(1), id);
        assert_eq!(
            verify(&with_stranger),
            Err(format!("signer {} is not a validator", stranger.address()))
        );
        let mut forged = commit(&ks[..3], Height(1), id);
        forged.signatures[1].signature = forged.signatures[0].signature;
        assert!(verify(&forged).is_err(), "a signature of another member");
        assert!(
            verify_commit(
                "other",
                &vs,
                &commit(&ks[..3], Height(1), id),
                &mut CachingVerifier::new()
            )
            .is_err(),
            "signed for another chain"
        );
    }

    #[test]
    fn a_body_is_checked_against_its_header_and_the_size_limits() {
        use crate::limits::{MAX_BLOCK_BYTES, MAX_BLOCK_TXS};
        let ks = keys();
        let c = genesis(&ks);
        let with_txs = |txs: Vec<Vec<u8>>| -> Block {
            BlockData {
                header: c.new_header(ks[0].address(), TimeMs(500), &txs),
                txs,
                last_commit: None,
            }
            .into()
        };
        assert_eq!(
            check_body(&with_txs(vec![vec![]; MAX_BLOCK_TXS])),
            Ok(()),
            "as many txs as allowed"
        );
        assert_eq!(
            check_body(&with_txs(vec![vec![]; MAX_BLOCK_TXS + 1])),
            Err(BlockError::TooLarge(MAX_BLOCK_TXS + 1, 0))
        );
        assert_eq!(
            check_body(&with_txs(vec![vec![0; MAX_BLOCK_BYTES]])),
            Ok(()),
            "as many bytes as allowed"
        );
        assert_eq!(
            check_body(&with_txs(vec![vec![0; MAX_BLOCK_BYTES + 1]])),
            Err(BlockError::TooLarge(1, MAX_BLOCK_BYTES + 1))
        );
        let good = with_txs(vec![b"a".to_vec()]);
        let mut other_txs: BlockData = (*good).clone();
        other_txs.txs = vec![b"b".to_vec()];
        assert_eq!(check_body(&other_txs.into()), Err(BlockError::WrongTxsHash));
        let mut other_commit: BlockData = (*good).clone();
        other_commit.last_commit = Some(commit(&ks[..3], Height(1), Hash([7; 32])));
        assert_eq!(check_body(&other_commit.into()), Err(BlockError::WrongLastCommitHash));
    }

    #[test]
    fn a_new_header_is_strictly_later_than_the_last_block_even_when_the_clock_is_behind() {
        let ks = keys();
        let g = genesis(&ks);
        assert_eq!(
            g.new_header(ks[0].address(), TimeMs(5), &[]).time,
            TimeMs(100),
            "not before genesis"
        );
        assert_eq!(g.new_header(ks[0].address(), TimeMs(300), &[]).time, TimeMs(300));
        let c = at_height_2(&ks);
        assert_eq!(c.new_header(ks[0].address(), TimeMs(5), &[]).time, TimeMs(1_001));
        assert_eq!(c.new_header(ks[0].address(), TimeMs(1_000), &[]).time, TimeMs(1_001));
        assert_eq!(c.new_header(ks[0].address(), TimeMs(3_000), &[]).time, TimeMs(3_000));
    }

    #[test]
    fn a_chain_state_survives_encoding_at_genesis_and_after() {
        let ks = keys();
        for c in [genesis(&ks), at_height_2(&ks)] {
            let bytes = c.encode();
            let back = ChainState::decode(&bytes).unwrap();
            assert_eq!(back.encode(), bytes);
            assert_eq!(
                (back.height, back.last_block, back.app_hash),
                (c.height, c.last_block, c.app_hash)
            );
        }
    }

    #[test]
    fn decode_refuses_a_chain_state_whose_last_block_commit_and_set_do_not_go_together() {
        let ks = keys();
        let refused = |c: ChainState| ChainState::decode(&c.encode()).err();
        let c = at_height_2(&ks);
        // Past height 1, each of the three is needed.
        assert!(refused(ChainState {
            last_block: None,
            ..c.clone()
        })
        .is_some());
        assert!(refused(ChainState {
            last_commit: None,
            ..c.clone()
        })
        .is_some());
        assert!(refused(ChainState {
            last_validators: None,
            ..c.clone()
        })
        .is_some());
        // Height 0 does not exist; height 1 has no last block.
        assert!(refused(ChainState {
            height: Height(0),
            ..genesis(&ks)
        })
        .is_some());
        assert!(refused(ChainState {
            height: Height(1),
            ..c.clone()
        })
        .is_some());
        // The last commit is for the last block, one height down.
        let (last_id, _) = c.last_block.unwrap();
        let wrong_block = commit(&ks[..3], Height(1), Hash([5; 32]));
        assert_eq!(
            refused(ChainState {
                last_commit: Some(wrong_block),
                ..c.clone()
            }),
            Some("the last commit is not for the last block".into())
        );
        let wrong_height = commit(&ks[..3], Height(2), last_id);
        assert_eq!(
            refused(ChainState {
                last_commit: Some(wrong_height),
                ..c.clone()
            }),
            Some("the last commit is not for the last block".into())
        );
    }
}
