//! The guide's four-machine workflow on four test hosts (network namespaces, one address each),
//! then the faults of a real network, each phase under a steady transaction load sent through
//! the RPC from outside the hosts: a 3|1 split, a 2|2 split, 100 ms latency with 1% loss (the
//! nodes' `link_shaping`), kill -9 of one validator and of all four. After each phase every
//! host holds the same block at every height, and every transaction a node reports committed
//! is on every node at the same height.

use super::hosts::Hosts;
use super::{rpc, spawn_command, wait_for, Scratch, TENDR};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tendr_node::status::{BlockView, Status, TxView};

const PORT: u16 = 26_656;
const RPC_PORT: u16 = 36_656;
const HOSTS: usize = 4;

/// The four hosts, their node processes and configs.
struct Cluster {
    // Field order is drop order: processes first, then the namespaces.
    s: Scratch,
    h: Hosts,
    cfgs: Vec<String>,
}

/// The guide's config for host `i`, with the test's short timeouts and optional link shaping.
fn config(h: &Hosts, i: usize, shaping: Option<&str>) -> String {
    let shaping = shaping
        .map(|s| format!(",\n  \"link_shaping\": {s}"))
        .unwrap_or_default();
    format!(
        r#"{{
  "node_id": "host{n}",
  "host": "{addr}",
  "port": {PORT},
  "rpc_addr": "{addr}:{RPC_PORT}",  // reachable from the test, outside the host
  "validators": [],
  "seed_nodes": [{{"host": "{seed}", "port": {PORT}}}],
  "is_validator": true,
  "target_block_time": 0.5,
  "log_level": "info",
  "timeouts": {{"propose_ms": 1000, "prevote_ms": 500, "precommit_ms": 500, "delta_ms": 200, "rebroadcast_ms": 500}}{shaping}
}}"#,
        n = i + 1,
        addr = h.addr(i),
        seed = h.addr(0),
    )
}

impl Cluster {
    fn new() -> Cluster {
        let h = Hosts::new(HOSTS);
        let s = Scratch::new("hosts");
        let cfgs = (0..HOSTS)
            .map(|i| {
                let d = s.path(&format!("host{}", i + 1));
                std::fs::create_dir_all(&d).unwrap();
                let c = d.join("tendermint_config.json");
                std::fs::write(&c, config(&h, i, None)).unwrap();
                c.to_string_lossy().into_owned()
            })
            .collect();
        Cluster { s, h, cfgs }
    }

    fn rpc(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.h.addr(i), RPC_PORT))
    }

    fn status(&self, i: usize) -> Option<Status> {
        rpc::get_json(self.rpc(i), "/tendr/status").ok()
    }

    fn height(&self, i: usize) -> u64 {
        self.status(i).map_or(0, |st| st.latest_height)
    }

    /// `tendr args` run inside host `i`.
    fn tendr(&self, i: usize, args: &[&str]) -> Output {
        self.h
            .command(i, TENDR)
            .args(args)
            .output()
            .expect("run tendr in a host")
    }

    /// `tendr args --config <host i's>` inside host `i`, which must succeed; its output.
    fn ok(&self, i: usize, args: &[&str]) -> String {
        let o = self.tendr(i, &[args, &["--config", &self.cfgs[i]]].concat());
        assert!(
            o.status.success(),
            "host {}: tendr {args:?} failed: {}{}",
            i + 1,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn start(&mut self, i: usize, args: &[&str]) {
        let mut cmd = self.h.command(i, TENDR);
        cmd.args(args).args(["--config", &self.cfgs[i]]);
        spawn_command(&mut self.s, i, cmd);
    }

    /// Waits until every host in `hosts` is at least at `height`.
    fn wait_height(&self, what: &str, hosts: &[usize], height: u64, secs: u64) {
        wait_for(&self.s, what, secs, || {
            hosts.iter().all(|&i| self.height(i) >= height).then_some(())
        });
    }

    fn top(&self) -> u64 {
        (0..HOSTS).map(|i| self.height(i)).max().unwrap()
    }
}

/// Transactions sent through the RPC round-robin to the hosts, about `per_sec` a second,
/// until stopped; the ones a node accepted, by hash.
struct Load {
    stop: Arc<AtomicBool>,
    accepted: Arc<Mutex<Vec<(String, String)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addrs: Vec<SocketAddr>, per_sec: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let (st, acc) = (stop.clone(), accepted.clone());
        let thread = std::thread::spawn(move || {
            let mut k = 0u64;
            while !st.load(Ordering::Relaxed) {
                let payload = format!("load{k}={}", "x".repeat(64));
                let to = addrs[(k % addrs.len() as u64) as usize];
                if let Ok(v) = rpc::post_json::<serde_json::Value>(to, "/tx", payload.as_bytes()) {
                    if let Some(hash) = v["hash"].as_str() {
                        acc.lock().unwrap().push((hash.to_string(), payload));
                    }
                }
                k += 1;
                std::thread::sleep(Duration::from_millis(1000 / per_sec));
            }
        });
        Load {
            stop,
            accepted,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> Vec<(String, String)> {
        self.accepted.lock().unwrap().clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the checks have established so far.
#[derive(Default)]
struct Checked {
    /// Heights 1..=this agree on every host.
    height: u64,
    /// Transactions seen committed on every host: hash -> (height, index).
    committed: BTreeMap<String, (u64, u32)>,
}

/// Every host holds the same block at every height up to the lowest host's top, and every
/// transaction any host reports committed at or below it is on every host at the same place.
fn check(c: &Cluster, accepted: &[(String, String)], done: &mut Checked, phase: &str) {
    let top = (0..HOSTS).map(|i| c.height(i)).min().unwrap();
    assert!(top > done.height, "{phase}: no host went past height {}", done.height);
    for height in done.height + 1..=top {
        let ids: Vec<String> = (0..HOSTS)
            .map(|i| {
                let b: BlockView = rpc::get_json(c.rpc(i), &format!("/tendr/block?height={height}"))
                    .unwrap_or_else(|e| panic!("{phase}: host {} block {height}: {e}", i + 1));
                b.id
            })
            .collect();
        assert!(
            ids.iter().all(|id| *id == ids[0]),
            "{phase}: height {height} differs: {ids:?}"
        );
    }
    done.height = top;
    let before = done.committed.len();
    for (hash, payload) in accepted {
        if done.committed.contains_key(hash) {
            continue;
        }
        let seen: Vec<Option<TxView>> = (0..HOSTS)
            .map(|i| rpc::get_json(c.rpc(i), &format!("/tendr/tx?hash={hash}")).ok())
            .collect();
        let Some(first) = seen.iter().flatten().find(|t| t.height <= top) else {
            continue; // not committed yet (or lost with a killed node's mempool)
        };
        for (i, t) in seen.iter().enumerate() {
            let t = t.as_ref().unwrap_or_else(|| {
                panic!(
                    "{phase}: {hash} committed at {} but not on host {}",
                    first.height,
                    i + 1
                )
            });
            assert_eq!(
                (t.height, t.index, &t.payload),
                (first.height, first.index, payload),
                "{phase}: host {}",
                i + 1
            );
        }
        done.committed.insert(hash.clone(), (first.height, first.index));
    }
    eprintln!(
        "{phase}: heights 1..={top} agree on {HOSTS} hosts; {} transactions committed on every host ({} new)",
        done.committed.len(),
        done.committed.len() - before
    );
}

/// Steps 2-5 of the guide inside the hosts: init, join, status, add-validator one by one, tx,
/// transactions.
fn guide(c: &mut Cluster) {
    let out = c.ok(0, &["init"]);
    assert!(out.contains("genesis.json"), "{out}");
    c.start(0, &["start"]);
    c.wait_height("the genesis host to make blocks", &[0], 2, 30);
    let genesis = c.s.path("host1/genesis.json");
    for i in 1..HOSTS {
        let copy = c.s.path(&format!("host{}/copied-genesis.json", i + 1));
        std::fs::copy(&genesis, &copy).unwrap();
        c.start(i, &["join", "--genesis", copy.to_str().unwrap()]);
    }
    wait_for(&c.s, "every host connected to the other three", 40, || {
        (0..HOSTS)
            .all(|i| c.status(i).is_some_and(|st| st.peers.len() == HOSTS - 1))
            .then_some(())
    });
    let text = c.ok(3, &["status"]);
    assert!(text.contains("peers      3") && text.contains("validators 1"), "{text}");
    let addrs: Vec<String> = (0..HOSTS)
        .map(|i| c.status(i).unwrap().validator_address.expect("a validator key"))
        .collect();
    for (joiner, address) in addrs.iter().enumerate().skip(1) {
        // One by one: each validator already in the set approves the newcomer.
        for approver in 0..joiner {
            c.ok(approver, &["add-validator", "--address", address]);
        }
        wait_for(&c.s, "the new validator in the set", 30, || {
            c.status(joiner).filter(|st| st.in_validator_set)
        });
    }
    wait_for(&c.s, "four validators", 30, || {
        (c.status(0)?.validators.len() == HOSTS).then_some(())
    });
    for i in 0..HOSTS {
        let out = c.ok(i, &["tx", &format!("host{i}=hello"), "--wait"]);
        assert!(out.contains("committed at height"), "{out}");
    }
    for i in 0..HOSTS {
        let list = c.ok(i, &["transactions", "--limit", "1000"]);
        assert!(
            (0..HOSTS).all(|k| list.contains(&format!("host{k}=hello"))),
            "host {}: {list}",
            i + 1
        );
    }
}

/// Cuts the hosts into `groups`; only a group with more than 2/3 of the power (3 of 4) may
/// advance, and the others stay where they were. Then heals.
fn split(c: &Cluster, groups: &[&[usize]], secs: u64) {
    c.h.partition(groups);
    // A decision already in flight may still land.
    let at: Vec<u64> = (0..HOSTS).map(|i| c.height(i) + 1).collect();
    std::thread::sleep(Duration::from_secs(secs));
    for g in groups {
        for &i in *g {
            let now = c.height(i);
            if g.len() * 3 > HOSTS * 2 {
                assert!(now > at[i], "host {} in the majority stalled at {now}", i + 1);
            } else {
                assert!(
                    now <= at[i],
                    "host {} in a minority went from {} to {now}",
                    i + 1,
                    at[i] - 1
                );
            }
        }
    }
    c.h.heal();
}

#[test]
fn guide_on_four_hosts_through_splits_latency_loss_and_kill_9() {
    let mut c = Cluster::new();
    guide(&mut c);
    let load = Load::start((0..HOSTS).map(|i| c.rpc(i)).collect(), 20);
    let mut done = Checked::default();
    let after = |c: &Cluster, more: u64| c.top() + more;

    let target = after(&c, 3);
    c.wait_height("blocks under load", &[0, 1, 2, 3], target, 30);
    check(&c, &load.accepted(), &mut done, "healthy");

    split(&c, &[&[0, 1, 2], &[3]], 6);
    let target = after(&c, 3);
    c.wait_height("every host past the 3|1 split", &[0, 1, 2, 3], target, 40);
    check(&c, &load.accepted(), &mut done, "3|1 split and heal");

    split(&c, &[&[0, 1], &[2, 3]], 4);
    let target = after(&c, 3);
    c.wait_height("every host past the 2|2 split", &[0, 1, 2, 3], target, 40);
    check(&c, &load.accepted(), &mut done, "2|2 split and heal");

    // 100 ms more on every datagram each host sends, ±5 ms of jitter, 1% lost: a restart with
    // the new config. 30 heights: this mix used to stall all four within about 25 (copies of
    // votes came back slower than the dedup window and were relayed again and again, until
    // the relay storm filled QUIC's congestion window and votes took seconds).
    let target = after(&c, 30);
    for i in 0..HOSTS {
        c.s.kill(i);
        let shaping = format!(r#"{{"latency_ms": 100, "jitter_ms": 5, "loss": 0.01, "seed": {i}}}"#);
        std::fs::write(&c.cfgs[i], config(&c.h, i, Some(&shaping))).unwrap();
        c.start(i, &["start"]);
    }
    c.wait_height(
        "blocks with 100 ms latency, jitter and 1% loss",
        &[0, 1, 2, 3],
        target,
        90,
    );
    assert_eq!(
        c.s.full_logs().matches("link shaping on").count(),
        HOSTS,
        "every host shapes its links"
    );
    check(&c, &load.accepted(), &mut done, "100 ms latency, jitter, 1% loss");

    c.s.kill(2);
    let target = after(&c, 3);
    c.wait_height("three validators without host 3", &[0, 1, 3], target, 40);
    c.start(2, &["start"]);
    let target = after(&c, 2);
    c.wait_height("host 3 back after kill -9", &[0, 1, 2, 3], target, 60);
    check(&c, &load.accepted(), &mut done, "kill -9 of one validator");

    let target = after(&c, 3);
    for i in 0..HOSTS {
        c.s.kill(i);
    }
    for i in 0..HOSTS {
        c.start(i, &["start"]);
    }
    c.wait_height("every host after kill -9 of all", &[0, 1, 2, 3], target, 60);
    check(&c, &load.accepted(), &mut done, "kill -9 of all validators");

    let accepted = load.accepted();
    drop(load);
    let target = after(&c, 3);
    c.wait_height("the last transactions", &[0, 1, 2, 3], target, 30);
    // Once more over the whole chain and every accepted transaction, from scratch.
    let mut whole = Checked::default();
    check(&c, &accepted, &mut whole, "whole chain after the load");
    let sent = accepted.len();
    assert!(whole.committed.len() >= done.committed.len());
    // Only transactions in a killed node's mempool may be lost.
    assert!(
        whole.committed.len() * 10 > sent * 8,
        "{} of {sent} accepted transactions committed",
        whole.committed.len()
    );
    assert!(!c.s.full_logs().contains("evidence:"), "a validator double-signed");
}
