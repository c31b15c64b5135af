//! `ledger-node`: the whole tendr node (init, start, join, status, add-validator, tx,
//! transactions, query, testnet) for the ledger, through the same public door the `tendr`
//! binary uses for its key-value app.
//!
//! Submit a transfer with `ledger-node tx xfer:<hex>` (print one with the `ledger-transfer`
//! binary, or build it with `tendr_ledger::Transfer::new(..).to_tx()`); read an account with
//! `ledger-node query --path balance 0x<address>` (`<balance> <nonce>`).

fn main() {
    std::process::exit(tendr_node::cli::main_with(tendr_ledger::Ledger::new));
}
