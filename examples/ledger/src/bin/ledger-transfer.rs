//! `ledger-transfer`: prints a signed transfer for `ledger-node tx`, so the ledger can be
//! tried from a shell without writing code.
//!
//! ```text
//! ledger-transfer --chain-id <id> --from-demo 0 --to 0x<address> --amount 5 --nonce 1
//! ledger-node tx "$(ledger-transfer --chain-id <id> --from-demo 0 --to 0x<address> --amount 5 --nonce 1)"
//! ```
//!
//! `--from-demo N` signs with genesis demo account `N` (a public seed: a demo, not a real
//! key); `--nonce` is one more than the account's last (`ledger-node query --path balance
//! 0x<address>` prints `<balance> <nonce>`).

use clap::Parser;
use tendr_core::Address;

/// Prints a signed ledger transfer for `ledger-node tx`.
#[derive(Parser)]
#[command(name = "ledger-transfer")]
struct Args {
    /// The chain's id (`chain_id` in genesis.json, or `ledger-node status`).
    #[arg(long)]
    chain_id: String,
    /// Sign with genesis demo account N.
    #[arg(long, value_name = "N")]
    from_demo: u32,
    /// The receiver: `0x` and 40 hex digits.
    #[arg(long)]
    to: Address,
    /// Units to send.
    #[arg(long)]
    amount: u64,
    /// One more than the sender's last nonce.
    #[arg(long)]
    nonce: u64,
}

fn main() {
    let a = Args::parse();
    let t = tendr_ledger::Transfer::new(
        &a.chain_id,
        &tendr_ledger::demo_key(a.from_demo),
        a.to,
        a.amount,
        a.nonce,
    );
    println!("{}", String::from_utf8_lossy(&t.to_tx()));
}
