//! The built-in application: a key-value ledger with authorised validator-set changes.
//!
//! Transactions are bytes:
//! - `key=value` (UTF-8) sets `key` to `value`;
//! - `val:<hex>` carries a [`ValidatorApproval`]: a current validator approves setting the
//!   power of a public key (0 removes). A change takes effect once validators holding more than
//!   two thirds of the current power have approved the same (key, power); no single node, and
//!   no one outside the validator set, can change it alone.
//!
//! The app hash chains every block's transactions and results, so two nodes agree on it exactly
//! when they executed the same blocks with the same results.

use crate::codec::{decode_bounded, encode};
use crate::crypto::{sha256, verify, PrivateKey, PublicKey, Signature};
use crate::mempool::Mempool;
use crate::traits::{Application, ExecResult, TxResult};
use crate::types::{Address, Block, Hash, VotingPower};
use crate::validator::{ValidatorSet, ValidatorUpdate};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

const MAX_KEY_BYTES: usize = 256;
const APPROVAL_DOMAIN: &[u8] = b"tendr/validator-change/v1";

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
        format!("val:{}", hex::encode(encode(self))).into_bytes()
    }
}

/// A parsed transaction of the built-in application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvTx {
    Set { key: String, value: String },
    Approve(ValidatorApproval),
}

pub fn parse_tx(tx: &[u8]) -> Result<KvTx, String> {
    let s = std::str::from_utf8(tx).map_err(|_| "transaction is not UTF-8; expected `key=value`".to_string())?;
    if let Some(h) = s.strip_prefix("val:") {
        let bytes = hex::decode(h).map_err(|e| format!("validator approval: not hex ({e})"))?;
        let a: ValidatorApproval = decode_bounded(&bytes, 4096).map_err(|e| format!("validator approval: {e}"))?;
        return Ok(KvTx::Approve(a));
    }
    let (k, v) = s
        .split_once('=')
        .ok_or("transaction has no `=`; expected `key=value`")?;
    if k.is_empty() || k.len() > MAX_KEY_BYTES {
        return Err(format!("key must be 1-{MAX_KEY_BYTES} bytes"));
    }
    Ok(KvTx::Set {
        key: k.to_string(),
        value: v.to_string(),
    })
}

#[derive(Debug, Clone)]
pub struct KvApp {
    chain_id: String,
    state: BTreeMap<String, String>,
    app_hash: Hash,
    /// (target, power) -> approvers so far.
    pending: BTreeMap<(PublicKey, u64), BTreeSet<Address>>,
    height: u64,
}

impl KvApp {
    pub fn new(chain_id: &str) -> Self {
        KvApp {
            chain_id: chain_id.to_string(),
            state: BTreeMap::new(),
            app_hash: sha256(chain_id.as_bytes()),
            pending: BTreeMap::new(),
            height: 0,
        }
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.state.get(key).map(|s| s.as_str())
    }
    pub fn len(&self) -> usize {
        self.state.len()
    }
    pub fn is_empty(&self) -> bool {
        self.state.is_empty()
    }
    pub fn app_hash(&self) -> Hash {
        self.app_hash
    }
    pub fn last_height(&self) -> u64 {
        self.height
    }

    fn apply_approval(
        &mut self,
        a: &ValidatorApproval,
        vs: &ValidatorSet,
        updates: &mut Vec<ValidatorUpdate>,
    ) -> TxResult {
        let who = a.approver.address();
        let Some(idx) = vs.index_of(&who) else {
            return TxResult {
                code: 2,
                log: format!("approver {who} is not a validator"),
            };
        };
        let bytes = ValidatorApproval::sign_bytes(&self.chain_id, &a.target, a.power);
        if verify(vs.key(idx), &bytes, &a.signature).is_err() {
            return TxResult {
                code: 3,
                log: "approval signature does not verify".into(),
            };
        }
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
}

impl Application for KvApp {
    fn initial_app_hash(&self) -> Hash {
        sha256(self.chain_id.as_bytes())
    }

    fn check_tx(&self, tx: &[u8]) -> Result<(), String> {
        parse_tx(tx).map(|_| ())
    }

    fn prepare_txs(&mut self, mempool: &Mempool, max_txs: usize, max_bytes: usize) -> Vec<Vec<u8>> {
        mempool.take(max_txs, max_bytes)
    }

    fn validate_block(&self, block: &Block) -> bool {
        block.txs.iter().all(|t| parse_tx(t).is_ok())
    }

    fn execute_block(&mut self, block: &Block, validators: &ValidatorSet) -> ExecResult {
        let mut results = Vec::with_capacity(block.txs.len());
        let mut updates = Vec::new();
        let mut acc = Vec::with_capacity(40 + block.txs.len() * 36);
        acc.extend_from_slice(&self.app_hash.0);
        acc.extend_from_slice(&block.header.height.0.to_be_bytes());
        for tx in &block.txs {
            let r = match parse_tx(tx) {
                Ok(KvTx::Set { key, value }) => {
                    self.state.insert(key, value);
                    TxResult {
                        code: 0,
                        log: String::new(),
                    }
                }
                Ok(KvTx::Approve(a)) => self.apply_approval(&a, validators, &mut updates),
                Err(e) => TxResult { code: 1, log: e },
            };
            acc.extend_from_slice(&sha256(tx).0);
            acc.extend_from_slice(&r.code.to_be_bytes());
            results.push(r);
        }
        self.app_hash = sha256(&acc);
        self.height = block.header.height.0;
        ExecResult {
            app_hash: self.app_hash,
            tx_results: results,
            validator_updates: updates,
        }
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(encode(&KvSnapshot {
            chain_id: self.chain_id.clone(),
            state: self.state.clone(),
            app_hash: self.app_hash,
            pending: self.pending.clone(),
            height: self.height,
        }))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let s: KvSnapshot = postcard::from_bytes(bytes).map_err(|e| format!("not a key-value snapshot: {e}"))?;
        if s.chain_id != self.chain_id {
            return Err(format!(
                "snapshot of chain `{}`, this node runs `{}`",
                s.chain_id, self.chain_id
            ));
        }
        self.state = s.state;
        self.app_hash = s.app_hash;
        self.pending = s.pending;
        self.height = s.height;
        Ok(())
    }
}

/// The key-value application's state as [`Application::snapshot`] writes it.
#[derive(Serialize, Deserialize)]
struct KvSnapshot {
    chain_id: String,
    state: BTreeMap<String, String>,
    app_hash: Hash,
    pending: BTreeMap<(PublicKey, u64), BTreeSet<Address>>,
    height: u64,
}
