//! `tendr-kv`: the built-in application, a key-value store with validator-set changes
//! authorised by the validators ([`tendr_core::governance`]).
//!
//! It is an ordinary user of the framework: the `tendr` binary runs it through the same
//! public API (`tendr_node::cli::main_with`) any other application uses, and the simulator
//! runs it as its default application with [`KvWorkload`]-style load.
//!
//! Transactions are bytes:
//! - `key=value` (UTF-8) sets `key` to `value`;
//! - `val:<hex>` and `valreq:<hex>`: the framework's governance transactions;
//! - `evidence:<hex>`: a double-signing validator's two votes, which every real node submits when
//!   it finds them ([`governance::evidence_tx`]), committed with their check in the result.
//!
//! Queries: path `""` or `"key"` with the key as data answers its value.
//!
//! The app hash chains every block's transactions and results, so two nodes agree on it exactly
//! when they executed the same blocks with the same results.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tendr_core::codec::encode;
use tendr_core::crypto::sha256;
use tendr_core::governance::{self, Approvals, GovernanceTx};
use tendr_core::mempool::Mempool;
use tendr_core::traits::{AppError, Application, ExecResult, QueryResult, TxResult};
use tendr_core::types::{Block, Hash};
use tendr_core::validator::ValidatorSet;

const MAX_KEY_BYTES: usize = 256;

/// A parsed transaction of the key-value application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvTx {
    Set { key: String, value: String },
    Governance(GovernanceTx),
}

/// Parses a transaction; the error says what a valid one looks like.
pub fn parse_tx(tx: &[u8]) -> Result<KvTx, String> {
    if let Some(g) = governance::parse(tx) {
        return g.map(KvTx::Governance).map_err(|e| e.to_string());
    }
    let s = std::str::from_utf8(tx).map_err(|_| "transaction is not UTF-8; expected `key=value`".to_string())?;
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

/// The state commitment: LtHash16 (1,024 16-bit lanes over SHAKE128), updated in O(1) per
/// write. Each key is in the set once, so the multiset weakness (2^16 copies of one element)
/// cannot arise.
type StateHash = lthash_rs::LtHash16<sha3::Shake128>;

/// One entry of the state as it enters the commitment.
fn entry_bytes(key: &str, value: &str) -> Vec<u8> {
    encode(&(key, value))
}

#[derive(Clone)]
pub struct KvApp {
    chain_id: String,
    state: BTreeMap<String, String>,
    /// Commits to `state`; with the height and the approvals it makes the app hash, so a
    /// restored snapshot can be checked against a signed app hash (state sync).
    state_hash: StateHash,
    app_hash: Hash,
    approvals: Approvals,
    height: u64,
}

impl KvApp {
    pub fn new(chain_id: &str) -> Self {
        KvApp {
            chain_id: chain_id.to_string(),
            state: BTreeMap::new(),
            state_hash: StateHash::new(),
            app_hash: sha256(chain_id.as_bytes()),
            approvals: Approvals::default(),
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

    /// The app hash after block `height`: the chain, the height, the state (through its
    /// commitment) and the pending validator approvals.
    fn compute_app_hash(&self, state_hash: &StateHash, height: u64) -> Hash {
        use lthash_rs::LtHash;
        let mut acc = Vec::with_capacity(2048 + 128);
        acc.extend_from_slice(b"tendr-kv/app-hash/2");
        acc.extend_from_slice(&sha256(self.chain_id.as_bytes()).0);
        acc.extend_from_slice(&height.to_be_bytes());
        acc.extend_from_slice(&state_hash.clone().into_bytes());
        acc.extend_from_slice(&sha256(&encode(&self.approvals)).0);
        sha256(&acc)
    }

    fn recompute_state_hash(&self) -> StateHash {
        use lthash_rs::LtHash;
        let mut h = StateHash::new();
        for (k, v) in &self.state {
            h.insert(entry_bytes(k, v));
        }
        h
    }
    pub fn last_height(&self) -> u64 {
        self.height
    }
    pub fn approvals(&self) -> &Approvals {
        &self.approvals
    }
}

impl std::fmt::Debug for KvApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvApp")
            .field("chain_id", &self.chain_id)
            .field("height", &self.height)
            .field("keys", &self.state.len())
            .field("app_hash", &self.app_hash)
            .finish()
    }
}

impl Application for KvApp {
    fn initial_app_hash(&self) -> Hash {
        sha256(self.chain_id.as_bytes())
    }

    fn check_tx(&self, tx: &[u8]) -> Result<(), String> {
        parse_tx(tx).map(|_| ())
    }

    fn prepare_txs(&mut self, mempool: &Mempool, max_txs: usize, max_bytes: usize) -> Result<Vec<Vec<u8>>, AppError> {
        Ok(mempool.take(max_txs, max_bytes))
    }

    fn validate_block(&self, block: &Block) -> bool {
        block.txs.iter().all(|t| parse_tx(t).is_ok())
    }

    fn execute_block(&mut self, block: &Block, validators: &ValidatorSet) -> Result<ExecResult, AppError> {
        use lthash_rs::LtHash;
        let mut results = Vec::with_capacity(block.txs.len());
        let mut updates = Vec::new();
        for tx in &block.txs {
            let r = match self.approvals.execute(&self.chain_id, tx, validators, &mut updates) {
                Some(r) => r,
                None => match parse_tx(tx) {
                    Ok(KvTx::Set { key, value }) => {
                        let new = entry_bytes(&key, &value);
                        if let Some(old) = self.state.insert(key.clone(), value) {
                            if entry_bytes(&key, &old) == new {
                                results.push(TxResult {
                                    code: 0,
                                    log: String::new(),
                                });
                                continue;
                            }
                            self.state_hash.remove(entry_bytes(&key, &old));
                        }
                        self.state_hash.insert(new);
                        TxResult {
                            code: 0,
                            log: String::new(),
                        }
                    }
                    Ok(KvTx::Governance(_)) => unreachable!("governance transactions are executed above"),
                    Err(e) => TxResult { code: 1, log: e },
                },
            };
            results.push(r);
        }
        self.height = block.header.height.0;
        self.app_hash = self.compute_app_hash(&self.state_hash, self.height);
        Ok(ExecResult {
            app_hash: self.app_hash,
            tx_results: results,
            validator_updates: updates,
        })
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(encode(&KvSnapshot {
            chain_id: self.chain_id.clone(),
            state: self.state.clone(),
            app_hash: self.app_hash,
            approvals: self.approvals.clone(),
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
        self.approvals = s.approvals;
        self.height = s.height;
        self.state_hash = self.recompute_state_hash();
        Ok(())
    }

    fn supports_state_sync(&self) -> bool {
        true
    }

    fn verify_restored(&self, app_hash: &Hash) -> Result<(), String> {
        let computed = self.compute_app_hash(&self.state_hash, self.height);
        if computed != *app_hash || self.app_hash != *app_hash {
            return Err(format!(
                "the restored state hashes to {}, the trusted app hash is {}",
                computed.to_hex(),
                app_hash.to_hex()
            ));
        }
        Ok(())
    }

    fn query(&self, path: &str, data: &[u8]) -> QueryResult {
        if let Some(r) = self.approvals.query(path, data) {
            return r;
        }
        if !matches!(path, "" | "key" | "/key" | "/store") {
            return QueryResult::unsupported(path);
        }
        let key = String::from_utf8_lossy(data);
        match self.state.get(key.as_ref()) {
            Some(v) => QueryResult::found(v.clone().into_bytes()),
            None => QueryResult::not_found(),
        }
    }
}

/// The key-value application's state as [`Application::snapshot`] writes it.
#[derive(Serialize, Deserialize)]
struct KvSnapshot {
    chain_id: String,
    state: BTreeMap<String, String>,
    app_hash: Hash,
    approvals: Approvals,
    height: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tendr_core::crypto::PrivateKey;
    use tendr_core::governance::ValidatorApproval;
    use tendr_core::types::{Header, Height, TimeMs, VotingPower};

    fn block(txs: Vec<Vec<u8>>) -> Block {
        let header = Header {
            chain_id: "c".into(),
            height: Height(1),
            time: TimeMs(0),
            prev_block_id: None,
            proposer: PrivateKey::from_seed(b"p").address(),
            txs_hash: Hash::default(),
            app_hash: Hash::default(),
            validators_hash: Hash::default(),
            last_commit_hash: Hash::default(),
        };
        Block::new(header, txs, None)
    }

    #[test]
    fn approvals_need_more_than_two_thirds_and_queries_answer() {
        let keys: Vec<PrivateKey> = (0..3).map(|i| PrivateKey::from_seed(&[i])).collect();
        let vs = ValidatorSet::new(keys.iter().map(|k| (k.public_key(), VotingPower(1))).collect()).unwrap();
        let target = PrivateKey::from_seed(b"new").public_key();
        let mut app = KvApp::new("c");
        let a0 = ValidatorApproval::new("c", target, 5, &keys[0]).to_tx();
        let a1 = ValidatorApproval::new("c", target, 5, &keys[1]).to_tx();
        let forged = ValidatorApproval::new("other", target, 5, &keys[2]).to_tx();
        let r = app
            .execute_block(
                &block(vec![a0, forged, b"x=1".to_vec(), governance::request_tx(&target)]),
                &vs,
            )
            .unwrap();
        assert_eq!(
            r.tx_results.iter().map(|r| r.code).collect::<Vec<_>>(),
            vec![0, 3, 0, 0]
        );
        assert!(r.validator_updates.is_empty(), "one approval of three is not enough");
        let r = app.execute_block(&block(vec![a1]), &vs).unwrap();
        assert!(r.validator_updates.is_empty(), "two of three is exactly 2/3, not more");
        let a2 = ValidatorApproval::new("c", target, 5, &keys[2]).to_tx();
        let r = app.execute_block(&block(vec![a2]), &vs).unwrap();
        assert_eq!(r.validator_updates.len(), 1, "three of three is more than 2/3");
        assert_eq!(app.query("", b"x").value, b"1");
        assert_eq!(app.query("", b"y").code, QueryResult::NOT_FOUND);
        let addr = target.address().to_string();
        assert_eq!(
            app.query(governance::REQUEST_QUERY_PATH, addr.as_bytes()).value,
            hex::encode(target.0).into_bytes()
        );
        assert_eq!(app.query("nope", b"").code, QueryResult::UNSUPPORTED);
    }

    /// Issue 16: a double-signing validator's two votes, committed as a transaction, are
    /// checked against the set; the same pair gives the same bytes in either order; a forged
    /// pair is refused with its reason.
    #[test]
    fn evidence_transactions_are_checked_and_canonical() {
        use tendr_core::crypto::vote_sign_bytes;
        use tendr_core::types::{Evidence, Round, Vote, VoteType};
        let keys: Vec<PrivateKey> = (0..3).map(|i| PrivateKey::from_seed(&[i])).collect();
        let vs = ValidatorSet::new(keys.iter().map(|k| (k.public_key(), VotingPower(1))).collect()).unwrap();
        let vote = |chain: &str, value: Option<Hash>| {
            let bytes = vote_sign_bytes(chain, VoteType::Prevote, Height(4), Round(1), value);
            Vote {
                vote_type: VoteType::Prevote,
                height: Height(4),
                round: Round(1),
                block_id: value,
                validator: keys[1].address(),
                signature: keys[1].sign(&bytes),
            }
        };
        let (a, b) = (vote("c", Some(Hash([1; 32]))), vote("c", None));
        let ev = |a: &Vote, b: &Vote| Evidence::DuplicateVote {
            a: a.clone(),
            b: b.clone(),
        };
        let tx = governance::evidence_tx(&ev(&a, &b));
        assert_eq!(tx, governance::evidence_tx(&ev(&b, &a)), "one pair, one transaction");
        assert!(app_check(&tx).is_ok());
        let forged = governance::evidence_tx(&ev(&a, &vote("other", None)));
        let same = governance::evidence_tx(&ev(&a, &a));
        let mut app = KvApp::new("c");
        let r = app
            .execute_block(&block(vec![tx, forged, same, b"evidence:zz".to_vec()]), &vs)
            .unwrap();
        let codes: Vec<u32> = r.tx_results.iter().map(|r| r.code).collect();
        assert_eq!(codes, vec![0, 4, 4, 4], "{:?}", r.tx_results);
        let log = &r.tx_results[0].log;
        assert!(
            log.contains(&keys[1].address().to_string()) && log.contains("height 4 round 1"),
            "{log}"
        );
        assert!(r.tx_results[1].log.contains("signature"), "{:?}", r.tx_results[1]);
    }

    fn app_check(tx: &[u8]) -> Result<(), String> {
        KvApp::new("c").check_tx(tx)
    }
}
