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

use tendr_core::Address;

const USAGE: &str =
    "usage: ledger-transfer --chain-id <id> --from-demo <N> --to 0x<address> --amount <units> --nonce <n>";

fn main() {
    match run(std::env::args().skip(1).collect()) {
        Ok(tx) => println!("{tx}"),
        Err(e) => {
            eprintln!("ledger-transfer: {e}\n{USAGE}");
            std::process::exit(2);
        }
    }
}

fn run(args: Vec<String>) -> Result<String, String> {
    let (mut chain, mut from, mut to, mut amount, mut nonce) = (None, None, None, None, None);
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err("prints a signed transfer for `ledger-node tx`".into());
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = |what: &str| {
            value
                .parse::<u64>()
                .map_err(|_| format!("{what}: `{value}` is not a number"))
        };
        match flag.as_str() {
            "--chain-id" => chain = Some(value.clone()),
            "--from-demo" => from = Some(number("--from-demo")?),
            "--to" => {
                to = Some(
                    value
                        .parse::<Address>()
                        .map_err(|e| format!("--to: `{value}` is not an address ({e})"))?,
                )
            }
            "--amount" => amount = Some(number("--amount")?),
            "--nonce" => nonce = Some(number("--nonce")?),
            other => return Err(format!("unknown flag `{other}`")),
        }
    }
    let chain = chain.ok_or("--chain-id is required (the `chain_id` of genesis.json)")?;
    let from = from.ok_or("--from-demo is required")?;
    let from = u32::try_from(from).map_err(|_| "--from-demo: too large".to_string())?;
    let to = to.ok_or("--to is required")?;
    let amount = amount.ok_or("--amount is required")?;
    let nonce = nonce.ok_or("--nonce is required")?;
    let t = tendr_ledger::Transfer::new(&chain, &tendr_ledger::demo_key(from), to, amount, nonce);
    String::from_utf8(t.to_tx()).map_err(|e| e.to_string())
}
