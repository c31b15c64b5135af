//! The ledger under the simulator: its load and its invariants.
//!
//! ```no_run
//! use tendr_ledger::{sim::{SupplyConserved, Transfers}, Ledger};
//! use tendr_sim::{SimConfig, Simulation};
//! let report = Simulation::new(SimConfig::from_seed(1, None), Ledger::new)
//!     .workload(Transfers::new(200))
//!     .invariant(SupplyConserved)
//!     .run()
//!     .unwrap();
//! assert!(report.ok());
//! ```

use crate::{demo_key, Ledger, Transfer, DEMO_ACCOUNTS, DEMO_BALANCE};
use tendr_core::crypto::PrivateKey;
use tendr_sim::world::CHAIN_ID;
use tendr_sim::{AppInvariant, Workload, WorkloadCtx};

/// Random transfers between the genesis accounts, `per_sec` per virtual second, each to a
/// random honest node. About one in ten is a double spend (the same nonce again, to another
/// node and recipient), one in twenty has a bad signature (refused at the door), one in
/// twenty spends more than the sender could hold.
pub struct Transfers {
    per_sec: u32,
    keys: Vec<PrivateKey>,
    /// The next nonce of each account.
    nonces: Vec<u64>,
}

impl Transfers {
    pub fn new(per_sec: u32) -> Self {
        Transfers {
            per_sec,
            keys: (0..DEMO_ACCOUNTS).map(demo_key).collect(),
            nonces: vec![1; DEMO_ACCOUNTS as usize],
        }
    }

    fn one(&mut self, ctx: &mut WorkloadCtx<'_>) {
        let from = ctx.rng.below(self.keys.len() as u64) as usize;
        let to = self.keys[ctx.rng.below(self.keys.len() as u64) as usize].address();
        let node = *ctx.rng.pick(ctx.nodes);
        let kind = ctx.rng.below(20);
        let amount = if kind == 0 {
            DEMO_BALANCE * 4
        } else {
            ctx.rng.range(1, 1000)
        };
        let nonce = self.nonces[from];
        self.nonces[from] += 1;
        let mut t = Transfer::new(CHAIN_ID, &self.keys[from], to, amount, nonce);
        if kind == 1 {
            t.signature.0[5] ^= 1;
        }
        ctx.submit(node, t.to_tx());
        if kind >= 18 {
            // A double spend: the same nonce, another recipient, another node.
            let other = self.keys[(from + 1) % self.keys.len()].address();
            let node = *ctx.rng.pick(ctx.nodes);
            ctx.submit(
                node,
                Transfer::new(CHAIN_ID, &self.keys[from], other, amount, nonce).to_tx(),
            );
        }
    }
}

impl Workload for Transfers {
    fn first_ms(&self) -> Option<u64> {
        (self.per_sec > 0).then_some(1)
    }

    fn tick(&mut self, ctx: &mut WorkloadCtx<'_>) -> Option<u64> {
        if !ctx.nodes.is_empty() {
            self.one(ctx);
        }
        Some(ctx.now_ms + (1000 / self.per_sec.max(1) as u64).max(1))
    }
}

/// Transfers move money, never make or destroy it: the balances always sum to the genesis
/// supply, and no account holds more than it.
pub struct SupplyConserved;

impl AppInvariant<Ledger> for SupplyConserved {
    fn name(&self) -> String {
        "supply-conserved".into()
    }

    fn check(&mut self, _node: usize, _height: u64, app: &Ledger) -> Result<(), String> {
        let mut sum: u64 = 0;
        for (addr, acc) in app.accounts() {
            if acc.balance > app.genesis_supply() {
                return Err(format!("{addr} holds {}, more than the supply", acc.balance));
            }
            sum = sum.checked_add(acc.balance).ok_or("the balances overflow a u64")?;
        }
        if sum != app.genesis_supply() {
            return Err(format!(
                "balances sum to {sum}, the genesis supply is {}",
                app.genesis_supply()
            ));
        }
        Ok(())
    }
}
