//! `tendr-ledger`: an example application built on tendr's public API alone.
//!
//! Accounts hold balances; a transfer is signed with the sender's k256 key and carries a nonce
//! that must be higher than the sender's last one (so a transfer cannot be replayed, and of two
//! transfers with the same nonce — a double spend — only the first in the chain succeeds). The
//! genesis allocation gives [`DEMO_ACCOUNTS`] accounts, whose keys are derived from public seeds
//! ([`demo_key`]), [`DEMO_BALANCE`] each. Validator-set changes go through tendr's governance
//! transactions, so `add-validator` works on a ledger network as on any other.
//!
//! What the crate shows, in both worlds:
//! - [`Ledger`]: the replicated state machine ([`Application`]);
//! - [`sim`]: its workload (random transfers, some invalid, some double spends) and its
//!   invariants (supply conserved, balances bounded), for seeded simulation from `cargo test`;
//! - `ledger-node`: the whole tendr node for this application, in a few lines.
//!
//! Transactions: `xfer:<hex>` (a [`Transfer`]) and tendr's `val:`/`valreq:` governance ones.
//! Queries: path `balance` (or `""`) with an address `0x...` as data answers
//! `<balance> <nonce>`; path `supply` answers the total supply.
#![forbid(unsafe_code)]

pub mod sim;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tendr_core::codec::{decode_bounded, encode};
use tendr_core::crypto::{sha256, verify, PrivateKey, PublicKey, Signature};
use tendr_core::governance::{self, Approvals};
use tendr_core::mempool::Mempool;
use tendr_core::traits::{AppError, Application, ExecResult, QueryResult, TxResult};
use tendr_core::types::{Address, Block, Hash};
use tendr_core::validator::ValidatorSet;

/// Accounts in the genesis allocation.
pub const DEMO_ACCOUNTS: u32 = 16;
/// Each genesis account's balance.
pub const DEMO_BALANCE: u64 = 1_000_000;
const TRANSFER_PREFIX: &str = "xfer:";
const TRANSFER_DOMAIN: &[u8] = b"tendr-ledger/transfer/v1";

/// Result codes of a transfer or query (0 is success). They start at 10, above the
/// framework's own query codes (`QueryResult::NOT_FOUND` 1, `UNSUPPORTED` 2), so a client
/// never mistakes one for the other.
pub mod code {
    pub const MALFORMED: u32 = 10;
    pub const BAD_SIGNATURE: u32 = 11;
    pub const STALE_NONCE: u32 = 12;
    pub const INSUFFICIENT_FUNDS: u32 = 13;
    pub const ZERO_AMOUNT: u32 = 14;
}

/// The key of genesis account `i` (its seed is public: a demo, not a real allocation).
pub fn demo_key(i: u32) -> PrivateKey {
    PrivateKey::from_seed(format!("tendr-ledger-account-{i}").as_bytes())
}

/// A signed transfer of `amount` from the signer (`from`) to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub from: PublicKey,
    pub to: Address,
    pub amount: u64,
    pub nonce: u64,
    pub signature: Signature,
}

impl Transfer {
    pub fn sign_bytes(chain_id: &str, to: &Address, amount: u64, nonce: u64) -> Vec<u8> {
        let mut b = TRANSFER_DOMAIN.to_vec();
        b.push(0);
        b.extend_from_slice(chain_id.as_bytes());
        b.push(0);
        b.extend_from_slice(&to.0);
        b.extend_from_slice(&amount.to_be_bytes());
        b.extend_from_slice(&nonce.to_be_bytes());
        b
    }

    pub fn new(chain_id: &str, from: &PrivateKey, to: Address, amount: u64, nonce: u64) -> Self {
        Transfer {
            from: from.public_key(),
            to,
            amount,
            nonce,
            signature: from.sign(&Self::sign_bytes(chain_id, &to, amount, nonce)),
        }
    }

    /// The transaction bytes.
    pub fn to_tx(&self) -> Vec<u8> {
        format!("{TRANSFER_PREFIX}{}", hex::encode(encode(self))).into_bytes()
    }

    /// Parses transaction bytes (not the signature: see [`Transfer::verify`]).
    pub fn parse(tx: &[u8]) -> Result<Transfer, String> {
        let h = tx
            .strip_prefix(TRANSFER_PREFIX.as_bytes())
            .ok_or("not a ledger transaction: expected `xfer:<hex>` (or a governance `val:`/`valreq:`)")?;
        let bytes = hex::decode(h).map_err(|e| format!("transfer: not hex ({e})"))?;
        decode_bounded(&bytes, 512).map_err(|e| format!("transfer: {e}"))
    }

    pub fn verify(&self, chain_id: &str) -> Result<(), String> {
        let key = self
            .from
            .verifying_key()
            .map_err(|e| format!("transfer: bad public key ({e})"))?;
        verify(
            &key,
            &Self::sign_bytes(chain_id, &self.to, self.amount, self.nonce),
            &self.signature,
        )
        .map_err(|_| "transfer: the signature does not verify (forged, or for another chain)".to_string())
    }
}

/// One account's balance and the highest nonce it used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: u64,
    pub nonce: u64,
}

/// The ledger: accounts in an ordered map, so that its hash and snapshot are the same on
/// every node.
#[derive(Debug, Clone)]
pub struct Ledger {
    chain_id: String,
    accounts: BTreeMap<Address, Account>,
    approvals: Approvals,
    supply: u64,
    app_hash: Hash,
    genesis_app_hash: Hash,
    height: u64,
}

impl Ledger {
    /// The ledger with the demo genesis allocation.
    pub fn new(chain_id: &str) -> Self {
        let alloc: Vec<(Address, u64)> = (0..DEMO_ACCOUNTS)
            .map(|i| (demo_key(i).address(), DEMO_BALANCE))
            .collect();
        Self::with_allocation(chain_id, &alloc)
    }

    /// The ledger with a genesis allocation of its own (every node must use the same).
    pub fn with_allocation(chain_id: &str, alloc: &[(Address, u64)]) -> Self {
        let accounts: BTreeMap<Address, Account> = alloc
            .iter()
            .map(|(a, b)| (*a, Account { balance: *b, nonce: 0 }))
            .collect();
        let supply = accounts.values().map(|a| a.balance).sum();
        let mut l = Ledger {
            chain_id: chain_id.to_string(),
            accounts,
            approvals: Approvals::default(),
            supply,
            app_hash: Hash::default(),
            genesis_app_hash: Hash::default(),
            height: 0,
        };
        l.app_hash = l.state_hash(Hash::default(), 0);
        l.genesis_app_hash = l.app_hash;
        l
    }

    pub fn account(&self, a: &Address) -> Account {
        self.accounts.get(a).copied().unwrap_or_default()
    }
    /// Every account with a balance or a used nonce, in address order.
    pub fn accounts(&self) -> impl Iterator<Item = (&Address, &Account)> {
        self.accounts.iter()
    }
    /// The total supply fixed at genesis (transfers move it, never create it).
    pub fn genesis_supply(&self) -> u64 {
        self.supply
    }
    pub fn height(&self) -> u64 {
        self.height
    }

    /// The hash of the whole state after `height`, chained to the previous one.
    fn state_hash(&self, prev: Hash, height: u64) -> Hash {
        let mut b = Vec::with_capacity(48 + self.accounts.len() * 36);
        b.extend_from_slice(&prev.0);
        b.extend_from_slice(&height.to_be_bytes());
        b.extend_from_slice(self.chain_id.as_bytes());
        #[cfg(feature = "planted-bugs")]
        if planted::on(planted::HASHMAP_ORDER) {
            // Planted bug: the accounts hashed in the iteration order of a HashMap with a random
            // state, which differs from node to node.
            let m: std::collections::HashMap<_, _> = self.accounts.iter().collect();
            for (a, acc) in m {
                Self::hash_account(&mut b, a, acc);
            }
            return sha256(&b);
        }
        for (a, acc) in &self.accounts {
            Self::hash_account(&mut b, a, acc);
        }
        sha256(&b)
    }

    fn hash_account(b: &mut Vec<u8>, a: &Address, acc: &Account) {
        b.extend_from_slice(&a.0);
        b.extend_from_slice(&acc.balance.to_be_bytes());
        b.extend_from_slice(&acc.nonce.to_be_bytes());
    }

    /// Applies one verified transfer; the result code says why it did nothing.
    fn apply(&mut self, t: &Transfer) -> TxResult {
        let from = t.from.address();
        let sender = self.account(&from);
        let fail = |code: u32, log: String| TxResult { code, log };
        if t.amount == 0 {
            return fail(code::ZERO_AMOUNT, "transfer of 0".into());
        }
        if t.nonce <= sender.nonce {
            return fail(
                code::STALE_NONCE,
                format!("nonce {} is not above {from}'s last nonce {}", t.nonce, sender.nonce),
            );
        }
        if sender.balance < t.amount {
            return fail(
                code::INSUFFICIENT_FUNDS,
                format!("{from} holds {}, cannot send {}", sender.balance, t.amount),
            );
        }
        let s = self.accounts.entry(from).or_default();
        s.balance -= t.amount;
        s.nonce = t.nonce;
        #[cfg(feature = "planted-bugs")]
        if planted::on(planted::WALL_CLOCK) {
            // Planted bug: the sender's nonce records the wall-clock millisecond it was applied.
            s.nonce = s.nonce.max(planted::wall_clock_ms());
        }
        self.accounts.entry(t.to).or_default().balance += t.amount;
        TxResult {
            code: 0,
            log: String::new(),
        }
    }

    fn execute_tx(&mut self, tx: &[u8], vs: &ValidatorSet, updates: &mut Vec<tendr_core::ValidatorUpdate>) -> TxResult {
        if let Some(r) = self.approvals.execute(&self.chain_id, tx, vs, updates) {
            return r;
        }
        let t = match Transfer::parse(tx) {
            Ok(t) => t,
            Err(log) => {
                return TxResult {
                    code: code::MALFORMED,
                    log,
                }
            }
        };
        match t.verify(&self.chain_id) {
            Ok(()) => self.apply(&t),
            Err(log) => TxResult {
                code: code::BAD_SIGNATURE,
                log,
            },
        }
    }
}

impl Application for Ledger {
    fn initial_app_hash(&self) -> Hash {
        self.genesis_app_hash
    }

    fn check_tx(&self, tx: &[u8]) -> Result<(), String> {
        if let Some(g) = governance::parse(tx) {
            return g.map(|_| ()).map_err(|e| e.to_string());
        }
        let t = Transfer::parse(tx)?;
        t.verify(&self.chain_id)?;
        if t.amount == 0 {
            return Err("transfer of 0".into());
        }
        Ok(())
    }

    fn prepare_txs(&mut self, mempool: &Mempool, max_txs: usize, max_bytes: usize) -> Result<Vec<Vec<u8>>, AppError> {
        Ok(mempool.take(max_txs, max_bytes))
    }

    /// A block is valid when every transaction is well-formed (a transfer that fails — stale
    /// nonce, insufficient funds, bad signature — is executed as a failure, as in CometBFT).
    fn validate_block(&self, block: &Block) -> bool {
        block
            .txs
            .iter()
            .all(|tx| governance::parse(tx).is_some() || Transfer::parse(tx).is_ok())
    }

    fn execute_block(&mut self, block: &Block, validators: &ValidatorSet) -> Result<ExecResult, AppError> {
        let mut updates = Vec::new();
        #[cfg(feature = "planted-bugs")]
        let tx_results = if planted::on(planted::THREAD_TIMING) {
            planted::execute_in_completion_order(self, &block.txs, validators, &mut updates)
        } else {
            block
                .txs
                .iter()
                .map(|tx| self.execute_tx(tx, validators, &mut updates))
                .collect()
        };
        #[cfg(not(feature = "planted-bugs"))]
        let tx_results = block
            .txs
            .iter()
            .map(|tx| self.execute_tx(tx, validators, &mut updates))
            .collect();
        self.height = block.header.height.0;
        self.app_hash = self.state_hash(self.app_hash, self.height);
        Ok(ExecResult {
            app_hash: self.app_hash,
            tx_results,
            validator_updates: updates,
        })
    }

    fn snapshot(&self) -> Option<Vec<u8>> {
        Some(encode(&LedgerSnapshot {
            chain_id: self.chain_id.clone(),
            accounts: self.accounts.clone(),
            approvals: self.approvals.clone(),
            supply: self.supply,
            app_hash: self.app_hash,
            height: self.height,
        }))
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let s: LedgerSnapshot = postcard::from_bytes(bytes).map_err(|e| format!("not a ledger snapshot: {e}"))?;
        if s.chain_id != self.chain_id {
            return Err(format!(
                "snapshot of chain `{}`, this node runs `{}`",
                s.chain_id, self.chain_id
            ));
        }
        let supply: u64 = s.accounts.values().map(|a| a.balance).sum();
        if supply != s.supply {
            return Err(format!(
                "snapshot balances sum to {supply}, its supply says {}",
                s.supply
            ));
        }
        self.accounts = s.accounts;
        self.approvals = s.approvals;
        self.supply = s.supply;
        self.app_hash = s.app_hash;
        self.height = s.height;
        Ok(())
    }

    fn query(&self, path: &str, data: &[u8]) -> QueryResult {
        if let Some(r) = self.approvals.query(path, data) {
            return r;
        }
        match path {
            "" | "balance" => {
                let Some(addr) = std::str::from_utf8(data)
                    .ok()
                    .and_then(|s| s.trim().parse::<Address>().ok())
                else {
                    return QueryResult {
                        code: code::MALFORMED,
                        value: Vec::new(),
                        log: "balance: expected an address `0x` + 40 hex digits".into(),
                    };
                };
                let a = self.account(&addr);
                QueryResult::found(format!("{} {}", a.balance, a.nonce).into_bytes())
            }
            "supply" => QueryResult::found(self.supply.to_string().into_bytes()),
            _ => QueryResult::unsupported(path),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct LedgerSnapshot {
    chain_id: String,
    accounts: BTreeMap<Address, Account>,
    approvals: Approvals,
    supply: u64,
    app_hash: Hash,
    height: u64,
}

/// Deliberately non-deterministic execution (feature `planted-bugs`), chosen per process with
/// [`planted::set`]: the simulator must report the divergence.
#[cfg(feature = "planted-bugs")]
pub mod planted {
    use super::*;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// Accounts hashed in a randomly seeded HashMap's order.
    pub const HASHMAP_ORDER: u8 = 1;
    /// The wall clock read during execution.
    pub const WALL_CLOCK: u8 = 2;
    /// Transactions applied in the order parallel threads finish verifying them.
    pub const THREAD_TIMING: u8 = 3;

    static ON: AtomicU8 = AtomicU8::new(0);

    /// Turns on one planted bug for this process (0: none).
    pub fn set(bug: u8) {
        ON.store(bug, Ordering::SeqCst);
    }
    pub(crate) fn on(bug: u8) -> bool {
        ON.load(Ordering::Relaxed) == bug
    }
    pub(crate) fn wall_clock_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// Verifies the block's transactions on one thread each and applies them as the threads
    /// finish: conflicting transfers (a double spend) then succeed in whichever order the OS
    /// scheduled them.
    pub(crate) fn execute_in_completion_order(
        l: &mut Ledger,
        txs: &[Vec<u8>],
        vs: &ValidatorSet,
        updates: &mut Vec<tendr_core::ValidatorUpdate>,
    ) -> Vec<TxResult> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            for (i, t) in txs.iter().enumerate() {
                let tx = tx.clone();
                let chain = l.chain_id.clone();
                s.spawn(move || {
                    let ok = Transfer::parse(t).map(|x| x.verify(&chain).is_ok()).unwrap_or(false);
                    let _ = tx.send((i, ok));
                });
            }
        });
        drop(tx);
        let order: Vec<usize> = rx.iter().map(|(i, _)| i).collect();
        let mut results = vec![None; txs.len()];
        for i in order {
            results[i] = Some(l.execute_tx(&txs[i], vs, updates));
        }
        results.into_iter().map(|r| r.expect("every transaction ran")).collect()
    }
}

/// The "Build your own application" walkthrough (`docs/BUILD_YOUR_APP.md`), compiled and run as
/// doc tests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/BUILD_YOUR_APP.md")]
pub struct BuildYourApp;
