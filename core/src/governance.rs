//! Validator-set changes authorised by the validators themselves, for any application.
//!
//! Two framework transactions, which an application that wants `tendr add-validator` routes
//! to [`Approvals::execute`] before its own parsing:
//! - `val:<hex>` carries a [`ValidatorApproval`]: a current validator approves setting the
//!   power of a public key (0 removes). The change takes effect once validators holding more
//!   than two thirds of the current power have approved the same (key, power); no single
//!   node, and no one outside the validator set, can change it alone.
//! - `valreq:<hex public key>` publishes the public key of a node that wants to validate, so
//!   that operators can approve it by address alone ([`Approvals::requested_key`]).
//! - `evidence:<hex>` carries [`Evidence`] of a validator that signed two conflicting votes
//!   ([`evidence_tx`]); a real node submits it when its engine finds such a pair, so the proof
//!   is committed in a block. Executing it checks both signatures against the current set and
//!   records nothing else (no slashing: the application decides what to do with it).
//!
//! The state is plain ordered maps: deterministic to execute, to snapshot and to compare.

use crate::codec::{decode_bounded, encode};
use crate::crypto::{verify, PrivateKey, PublicKey, Signature};
use crate::traits::TxResult;
use crate::types::{Address, Evidence, VotingPower};
use crate::validator::{ValidatorSet, ValidatorUpdate};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const APPROVAL_DOMAIN: &[u8] = b"tendr/validator-change/v1";
/// Prefix of an approval transaction.
pub const APPROVAL_PREFIX: &str = "val:";
/// Prefix of a published validator public key.
pub const REQUEST_PREFIX: &str = "valreq:";
/// Prefix of a transaction carrying evidence of a double-signing validator.
pub const EVIDENCE_PREFIX: &str = "evidence:";
/// Query path answering the published key of an address (`data`: the address, `0x...`).
pub const REQUEST_QUERY_PATH: &str = "tendr/validator_request";

/// A validator's signed approval of a validator-set change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorApproval {
    pub target: PublicKey,
    pub power: u64,
    pub approver: PublicKey,
    pub signature: Signature,
}

impl ValidatorApproval {
    pub fn sign_bytes(chain_id: &str, target: &PublicKey, power: u64) -> Vec<u8> {
        let mut b = APPROVAL_DOMAIN.to_vec();
        b.push(0);
        b.extend_from_slice(chain_id.as_bytes());
        b.push(0);
        b.extend_from_slice(&target.0);
        b.extend_from_slice(&power.to_be_bytes());
        b
    }

    pub fn new(chain_id: &str, target: PublicKey, power: u64, approver: &PrivateKey) -> Self {
        let signature = approver.sign(&Self::sign_bytes(chain_id, &target, power));
        ValidatorApproval {
            target,
            power,
            approver: approver.public_key(),
            signature,
        }
    }

    /// The transaction bytes carrying this approval.
    pub fn to_tx(&self) -> Vec<u8> {
        format!("{APPROVAL_PREFIX}{}", hex::encode(encode(self))).into_bytes()
    }

    /// Checks the approver is in `vs` and the signature is theirs for this chain.
    pub fn check(&self, chain_id: &str, vs: &ValidatorSet) -> Result<Address, GovernanceError> {
        let who = self.approver.address();
        let idx = vs.index_of(&who).ok_or(GovernanceError::NotAValidator(who))?;
        let bytes = Self::sign_bytes(chain_id, &self.target, self.power);
        verify(vs.key(idx), &bytes, &self.signature).map_err(|_| GovernanceError::BadSignature(who))?;
        Ok(who)
    }
}

/// The transaction publishing `key` as a node that wants to validate.
pub fn request_tx(key: &PublicKey) -> Vec<u8> {
    format!("{REQUEST_PREFIX}{}", hex::encode(key.0)).into_bytes()
}

/// The transaction committing `ev`. Its two votes are put in one order (by their encoding),
/// so every node that found the same pair submits the same bytes and the mempool keeps one.
pub fn evidence_tx(ev: &Evidence) -> Vec<u8> {
    let Evidence::DuplicateVote { a, b } = ev;
    let (a, b) = if encode(a) <= encode(b) { (a, b) } else { (b, a) };
    let canonical = Evidence::DuplicateVote {
        a: a.clone(),
        b: b.clone(),
    };
    format!("{EVIDENCE_PREFIX}{}", hex::encode(encode(&canonical))).into_bytes()
}

/// A governance transaction, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GovernanceTx {
    Approve(ValidatorApproval),
    Request(PublicKey),
    Evidence(Box<Evidence>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GovernanceError {
    #[error("validator approval: {0}")]
    Malformed(String),
    #[error("approver {0} is not in the current validator set")]
    NotAValidator(Address),
    #[error("the approval's signature does not verify for {0} (forged, or signed for another chain)")]
    BadSignature(Address),
    #[error("evidence: {0}")]
    BadEvidence(String),
}

impl GovernanceError {
    /// The transaction result code of this refusal (0 is success).
    pub fn code(&self) -> u32 {
        match self {
            GovernanceError::Malformed(_) => 1,
            GovernanceError::NotAValidator(_) => 2,
            GovernanceError::BadSignature(_) => 3,
            GovernanceError::BadEvidence(_) => 4,
        }
    }
}

/// `Some` when `tx` is a governance transaction (well-formed or not), `None` otherwise.
pub fn parse(tx: &[u8]) -> Option<Result<GovernanceTx, GovernanceError>> {
    if let Some(h) = tx.strip_prefix(APPROVAL_PREFIX.as_bytes()) {
        let bytes = hex::decode(h).map_err(|e| GovernanceError::Malformed(format!("not hex ({e})")));
        return Some(bytes.and_then(|b| {
            decode_bounded(&b, 4096)
                .map(GovernanceTx::Approve)
                .map_err(|e| GovernanceError::Malformed(e.to_string()))
        }));
    }
    if let Some(h) = tx.strip_prefix(REQUEST_PREFIX.as_bytes()) {
        let key = std::str::from_utf8(h)
            .ok()
            .and_then(|s| PublicKey::from_hex(s).ok())
            .ok_or_else(|| GovernanceError::Malformed("validator request: not a hex public key".into()));
        return Some(key.map(GovernanceTx::Request));
    }
    if let Some(h) = tx.strip_prefix(EVIDENCE_PREFIX.as_bytes()) {
        let bytes = hex::decode(h).map_err(|e| GovernanceError::BadEvidence(format!("not hex ({e})")));
        return Some(bytes.and_then(|b| {
            decode_bounded(&b, MAX_EVIDENCE_BYTES)
                .map(|e| GovernanceTx::Evidence(Box::new(e)))
                .map_err(|e| GovernanceError::BadEvidence(e.to_string()))
        }));
    }
    None
}

/// Two votes and their framing: far below a transaction's limit.
const MAX_EVIDENCE_BYTES: usize = 4096;

/// Executes an evidence transaction: both votes must be the culprit's (a member of `vs`) and
/// conflict; the result says who double-signed where.
fn execute_evidence(chain_id: &str, ev: &Evidence, vs: &ValidatorSet) -> TxResult {
    let mut verifier = crate::traits::CachingVerifier::new();
    match crate::votes::verify_evidence(chain_id, vs, ev, &mut verifier) {
        Ok(()) => {
            let Evidence::DuplicateVote { a, .. } = ev;
            TxResult {
                code: 0,
                log: format!(
                    "duplicate-vote evidence committed: validator {} signed two {:?}s at height {} round {}",
                    a.validator, a.vote_type, a.height.0, a.round.0
                ),
            }
        }
        Err(e) => {
            let e = GovernanceError::BadEvidence(e);
            TxResult {
                code: e.code(),
                log: e.to_string(),
            }
        }
    }
}

/// The approvals collected so far and the published validator keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approvals {
    /// (target, power) -> approvers so far.
    pending: BTreeMap<(PublicKey, u64), BTreeSet<Address>>,
    /// Keys published by nodes that want to validate.
    requests: BTreeMap<Address, PublicKey>,
}

/// Most published keys kept (the oldest address is forgotten first when full).
const MAX_REQUESTS: usize = 1024;

impl Approvals {
    /// Executes `tx` when it is a governance transaction (`None` otherwise: the application's
    /// own). Validator-set changes that reach more than 2/3 of `vs`'s power go to `updates`.
    pub fn execute(
        &mut self,
        chain_id: &str,
        tx: &[u8],
        vs: &ValidatorSet,
        updates: &mut Vec<ValidatorUpdate>,
    ) -> Option<TxResult> {
        let r = match parse(tx)? {
            Err(e) => TxResult {
                code: e.code(),
                log: e.to_string(),
            },
            Ok(GovernanceTx::Approve(a)) => self.approve(chain_id, &a, vs, updates),
            Ok(GovernanceTx::Evidence(ev)) => execute_evidence(chain_id, &ev, vs),
            Ok(GovernanceTx::Request(pk)) => {
                if self.requests.len() >= MAX_REQUESTS && !self.requests.contains_key(&pk.address()) {
                    self.requests.pop_first();
                }
                self.requests.insert(pk.address(), pk);
                TxResult {
                    code: 0,
                    log: format!("validator key of {} published", pk.address()),
                }
            }
        };
        Some(r)
    }

    fn approve(
        &mut self,
        chain_id: &str,
        a: &ValidatorApproval,
        vs: &ValidatorSet,
        updates: &mut Vec<ValidatorUpdate>,
    ) -> TxResult {
        let who = match a.check(chain_id, vs) {
            Ok(who) => who,
            Err(e) => {
                return TxResult {
                    code: e.code(),
                    log: match e {
                        GovernanceError::NotAValidator(w) => format!("approver {w} is not a validator"),
                        GovernanceError::BadSignature(_) => "approval signature does not verify".into(),
                        e => e.to_string(),
                    },
                }
            }
        };
        let approvers = self.pending.entry((a.target, a.power)).or_default();
        approvers.insert(who);
        let power: u64 = approvers.iter().map(|ad| vs.power_of(ad).0).sum();
        if vs.is_quorum(power) {
            self.pending.retain(|(t, _), _| *t != a.target);
            updates.push(ValidatorUpdate {
                pub_key: a.target,
                power: VotingPower(a.power),
            });
            return TxResult {
                code: 0,
                log: format!("validator {} power set to {}", a.target.address(), a.power),
            };
        }
        TxResult {
            code: 0,
            log: format!("approval recorded: {power} of {} power", vs.total_power()),
        }
    }

    /// The public key `addr` published, if any.
    pub fn requested_key(&self, addr: &Address) -> Option<PublicKey> {
        self.requests.get(addr).copied()
    }

    /// Answers [`REQUEST_QUERY_PATH`] queries; `None` for other paths.
    pub fn query(&self, path: &str, data: &[u8]) -> Option<crate::traits::QueryResult> {
        if path != REQUEST_QUERY_PATH {
            return None;
        }
        let addr = std::str::from_utf8(data).ok().and_then(|s| s.parse::<Address>().ok());
        Some(match addr.and_then(|a| self.requested_key(&a)) {
            Some(pk) => crate::traits::QueryResult::found(hex::encode(pk.0).into_bytes()),
            None => crate::traits::QueryResult::not_found(),
        })
    }
}
