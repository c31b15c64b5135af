//! The ledger as a real network: four `ledger-node` processes (the whole tendr node for this
//! application, `tendr_node::cli::main_with(Ledger::new)`) on loopback, set up with its
//! `testnet` command; transfers submitted on one node are applied on all four; a fifth node
//! joins with the network's genesis and becomes a validator through `add-validator` (the
//! ledger routes tendr's governance transactions), and holds the same balances.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tendr_core::crypto::PrivateKey;
use tendr_core::types::Address;
use tendr_ledger::{code, demo_key, Transfer, DEMO_ACCOUNTS, DEMO_BALANCE};
use tendr_node::rpc;
use tendr_node::status::{QueryView, Status};

const LEDGER_NODE: &str = env!("CARGO_BIN_EXE_ledger-node");

/// A scratch folder and the node processes started in it; both cleaned up on drop.
struct Net {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Net {
    fn config(&self, i: usize) -> String {
        let p = self.dir.join(format!("node{i}/tendermint_config.json"));
        p.to_string_lossy().into_owned()
    }
    fn logs(&self) -> String {
        let mut s = String::new();
        for i in 1..=self.children.len() {
            let text = std::fs::read_to_string(self.dir.join(format!("node{i}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            s += &format!("--- node{i} ---\n");
            for l in tail.into_iter().rev() {
                s += l;
                s += "\n";
            }
        }
        s
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(LEDGER_NODE).args(args).output().expect("run ledger-node")
}

fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert!(
        o.status.success(),
        "ledger-node {args:?} failed ({:?}): {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_for<T>(net: &Net, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}\n{}", net.logs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn rpc_addr(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port + 10_000))
}

fn status(port: u16) -> Option<Status> {
    rpc::get_json(rpc_addr(port), "/tendr/status").ok()
}

/// `<balance> <nonce>` of `who` on the node at `port`.
fn balance(port: u16, who: &Address) -> Option<String> {
    let q: QueryView = rpc::get_json(rpc_addr(port), &format!("/query?path=balance&data={who}")).ok()?;
    q.value
}

/// Starts a 4-validator ledger network made by `ledger-node testnet`.
fn start_network() -> (Net, Vec<u16>) {
    let dir = std::env::temp_dir().join(format!("tendr-ledger-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let base = 26_000 + (std::process::id() % 400) as u16 * 10;
    let (b, d) = (base.to_string(), dir.to_string_lossy().into_owned());
    ok(&[
        "testnet",
        "--validators",
        "4",
        "--out",
        &d,
        "--base-port",
        &b,
        "--target-block-time",
        "0.2",
    ]);
    let mut net = Net {
        dir,
        children: Vec::new(),
    };
    for i in 1..=4 {
        let log = std::fs::File::create(net.dir.join(format!("node{i}.log"))).unwrap();
        let child = Command::new(LEDGER_NODE)
            .args(["start", "--config", &net.config(i)])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        net.children.push(child);
    }
    (net, (0..4).map(|i| base + i).collect())
}

/// Node 5 joins the network with node 1's genesis (as the guide's `join`), wanting to
/// validate; returns its port and its validator address.
fn join_fifth(net: &mut Net, seed_port: u16) -> (u16, String) {
    let dir = net.dir.join("node5");
    std::fs::create_dir_all(&dir).unwrap();
    let port = seed_port + 4;
    let cfg = format!(
        r#"{{"node_id": "node5", "host": "127.0.0.1", "port": {port}, "validators": [],
            "seed_nodes": [{{"host": "127.0.0.1", "port": {seed_port}}}], "is_validator": true,
            "target_block_time": 0.2, "log_level": "info"}}"#
    );
    std::fs::write(dir.join("tendermint_config.json"), cfg).unwrap();
    let genesis = dir.join("copied-genesis.json");
    std::fs::copy(net.dir.join("node1/genesis.json"), &genesis).unwrap();
    let log = std::fs::File::create(net.dir.join("node5.log")).unwrap();
    let child = Command::new(LEDGER_NODE)
        .args([
            "join",
            "--config",
            &net.config(5),
            "--genesis",
            genesis.to_str().unwrap(),
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    net.children.push(child);
    let key = dir.join("validator_key.json");
    let text = wait_for(net, "node 5's validator key", 20, || std::fs::read_to_string(&key).ok());
    let i = text.find("\"address\": \"").unwrap() + 12;
    (port, text[i..i + 42].to_string())
}

#[test]
fn transfers_submitted_on_one_node_are_applied_on_all_four() {
    let (mut net, mut ports) = start_network();
    wait_for(&net, "four connected nodes producing blocks", 40, || {
        let sts: Vec<Status> = ports.iter().filter_map(|p| status(*p)).collect();
        (sts.len() == 4 && sts.iter().all(|s| s.peers.len() == 3 && s.latest_height >= 2)).then_some(())
    });
    let chain_id = status(ports[0]).unwrap().chain_id;
    let (a, b) = (demo_key(0), demo_key(1));
    let fresh = PrivateKey::from_seed(b"ledger-e2e-fresh").address();
    let node1 = net.config(1);
    let submit = |t: Transfer| {
        let tx = String::from_utf8(t.to_tx()).unwrap();
        ok(&["tx", &tx, "--config", &node1, "--wait"])
    };
    for t in [
        Transfer::new(&chain_id, &a, b.address(), 250, 1),
        Transfer::new(&chain_id, &a, fresh, 50, 2),
        Transfer::new(&chain_id, &b, fresh, 7, 1),
    ] {
        let out = submit(t);
        assert!(out.contains(": code 0"), "{out}");
    }
    // A second transfer with a used nonce (a double spend) is executed as a failure; this one
    // is printed by the `ledger-transfer` binary, as a shell user would make it.
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_ledger-transfer"))
        .args(["--chain-id", &chain_id, "--from-demo", "0", "--to", &fresh.to_string()])
        .args(["--amount", "1", "--nonce", "2"])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let tx = String::from_utf8(made.stdout).unwrap();
    assert_eq!(
        tx.trim(),
        String::from_utf8(Transfer::new(&chain_id, &a, fresh, 1, 2).to_tx()).unwrap()
    );
    let out = ok(&["tx", tx.trim(), "--config", &node1, "--wait"]);
    assert!(out.contains(&format!(": code {}", code::STALE_NONCE)), "{out}");
    // A transfer signed for another chain never enters the mempool.
    let forged = String::from_utf8(Transfer::new("other", &a, fresh, 1, 3).to_tx()).unwrap();
    let o = run(&["tx", &forged, "--config", &node1]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(2) && err.contains("does not verify"), "{err}");

    let expected = [
        (a.address(), format!("{} 2", DEMO_BALANCE - 300)),
        (b.address(), format!("{} 1", DEMO_BALANCE + 250 - 7)),
        (fresh, "57 0".to_string()),
    ];
    for port in &ports {
        wait_for(&net, "the transfers on every node", 20, || {
            expected
                .iter()
                .all(|(who, want)| balance(*port, who).as_deref() == Some(want.as_str()))
                .then_some(())
        });
    }
    let supply = (DEMO_ACCOUNTS as u64 * DEMO_BALANCE).to_string();
    for i in 1..=4 {
        assert_eq!(
            ok(&["query", "--path", "supply", "--config", &net.config(i)]).trim(),
            supply
        );
        let fresh_text = fresh.to_string();
        let got = ok(&["query", &fresh_text, "--path", "balance", "--config", &net.config(i)]);
        assert_eq!(got.trim(), "57 0");
    }
    // The application's own answers when it has no value: its code and its log.
    let o = run(&["query", "x", "--path", "nope", "--config", &net.config(4)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.code() == Some(2) && err.contains("code 2"), "{err}");
    let o = run(&["query", "alice", "--config", &net.config(4)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(2) && err.contains("expected an address"),
        "{err}"
    );

    // A fifth node joins; validators holding more than 2/3 of the power (3 of 4) approve it by
    // address alone: its published key is found through the ledger's governance query.
    let (port5, addr5) = join_fifth(&mut net, ports[0]);
    ports.push(port5);
    let mut last = String::new();
    for i in 1..=3 {
        last = ok(&["add-validator", "--address", &addr5, "--config", &net.config(i)]);
    }
    assert!(last.contains("power set to 10"), "{last}");
    wait_for(&net, "node 5 in the validator set, with the balances", 30, || {
        let st = status(port5)?;
        let same = expected
            .iter()
            .all(|(who, want)| balance(port5, who).as_deref() == Some(want.as_str()));
        (st.in_validator_set && st.validators.len() == 5 && same).then_some(())
    });
    let h = status(ports[0]).unwrap().latest_height;
    wait_for(&net, "blocks with five validators on every node", 20, || {
        ports
            .iter()
            .all(|p| status(*p).is_some_and(|s| s.latest_height > h + 2))
            .then_some(())
    });
}
