//! The guide's workflow with the real `tendr` binary, as separate processes on loopback, and
//! the bad-input checks: each malformed file or refused request gives its clear message, exit
//! status 2, and changes nothing on disk; CometBFT's RPC client against the nodes
//! (`e2e/cometbft.rs`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tendr_node::rpc;
use tendr_node::status::{BlockView, QueryView, Status, TxView};

const TENDR: &str = env!("CARGO_BIN_EXE_tendr");

/// CometBFT's client against tendr's RPC, and the RPC under hostile clients (issue 14).
#[path = "e2e/cometbft.rs"]
mod cometbft;

/// A scratch folder and the node processes started in it; both cleaned up on drop.
struct Scratch {
    dir: PathBuf,
    children: BTreeMap<usize, Child>,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tendr-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch {
            dir,
            children: BTreeMap::new(),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }
    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children.remove(&i) {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
    fn logs(&self) -> String {
        let mut s = String::new();
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                s += &format!("--- {} ---\n", p.display());
                for l in tail.into_iter().rev() {
                    s += l;
                    s += "\n";
                }
            }
        }
        s
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let keys: Vec<usize> = self.children.keys().copied().collect();
        for k in keys {
            self.kill(k);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn tendr(args: &[&str]) -> Output {
    Command::new(TENDR).args(args).output().expect("run tendr")
}

fn ok(args: &[&str]) -> String {
    let o = tendr(args);
    assert!(
        o.status.success(),
        "tendr {args:?} failed ({:?}): {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs tendr expecting exit status 2 and `want` in its error message.
fn refused(args: &[&str], want: &str) -> String {
    let o = tendr(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(2),
        "tendr {args:?}: expected exit 2, got {:?}: {err}",
        o.status.code()
    );
    assert!(err.contains(want), "tendr {args:?}: expected `{want}` in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn spawn(s: &mut Scratch, i: usize, args: &[&str]) {
    let log = std::fs::File::create(s.path(&format!("node{i}-{}.log", s.children.len() + 100 * i))).unwrap();
    let child = Command::new(TENDR)
        .args(args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    s.children.insert(i, child);
}

fn base_port() -> u16 {
    21_000 + (std::process::id() % 400) as u16 * 10
}

fn rpc_addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port + 10_000))
}

fn status(port: u16) -> Option<Status> {
    rpc::get_json(rpc_addr(port), "/tendr/status").ok()
}

fn wait_for<T>(s: &Scratch, what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs} s waiting for {what}\n{}", s.logs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The guide's config, comments included, for node `i` on loopback with short timeouts.
fn guide_config(i: usize, port: u16, seed_port: u16) -> String {
    format!(
        r#"{{
  "node_id": "node{i}",  // Unique identifier for this node
  "host": "127.0.0.1",   // Listen on loopback for the test
  "port": {port},        // Unique port for this node
  "validators": [],    // Will be populated automatically
  "seed_nodes": [      // List of nodes to connect to on startup
    {{"host": "127.0.0.1", "port": {seed_port}}},  // the genesis node
  ],
  "is_validator": true,     // Whether this node is a validator
  "target_block_time": 0.3,  // Target time between blocks in seconds
  "log_level": "info",
  "timeouts": {{"propose_ms": 1000, "prevote_ms": 500, "precommit_ms": 500, "delta_ms": 200, "rebroadcast_ms": 500}}
}}"#
    )
}

fn validator_address(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("validator_key.json")).unwrap();
    let i = text.find("\"address\": \"").unwrap() + 12;
    text[i..i + 42].to_string()
}

#[test]
fn guide_workflow_four_machines_on_loopback() {
    let mut s = Scratch::new("guide");
    let base = base_port();
    let ports: Vec<u16> = (0..4).map(|i| base + i).collect();
    let cfgs: Vec<String> = (1..=4)
        .map(|i| {
            let d = s.path(&format!("machine{i}"));
            std::fs::create_dir_all(&d).unwrap();
            let c = d.join("tendermint_config.json");
            std::fs::write(&c, guide_config(i, ports[i - 1], ports[0])).unwrap();
            c.to_string_lossy().into_owned()
        })
        .collect();

    // Step 2: initialise and start the genesis node.
    let out = ok(&["init", "--config", &cfgs[0]]);
    assert!(out.contains("genesis.json") && out.contains("Next steps"), "{out}");
    let m1 = s.path("machine1");
    for f in ["validator_key.json", "node_key.json"] {
        let mode = std::fs::metadata(m1.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    spawn(&mut s, 1, &["start", "--config", &cfgs[0]]);
    wait_for(&s, "the genesis node to produce blocks alone", 20, || {
        status(ports[0]).filter(|st| st.latest_height >= 2)
    });

    // A join with a foreign genesis is refused before anything is written.
    let foreign = s.path("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    let fcfg = foreign.join("tendermint_config.json");
    std::fs::write(&fcfg, guide_config(9, base + 9, base + 8)).unwrap();
    ok(&["init", "--config", fcfg.to_str().unwrap()]);
    let m5 = s.path("machine5");
    std::fs::create_dir_all(&m5).unwrap();
    let c5 = m5.join("tendermint_config.json");
    std::fs::write(&c5, guide_config(5, base + 4, ports[0])).unwrap();
    let before = snapshot(&m5);
    refused(
        &[
            "join",
            "--config",
            c5.to_str().unwrap(),
            "--genesis",
            foreign.join("genesis.json").to_str().unwrap(),
        ],
        "the network refused the given genesis",
    );
    assert_eq!(snapshot(&m5), before, "a refused join changed files");
    wait_for(&s, "the genesis node's status to report the foreign peer", 10, || {
        status(ports[0]).filter(|st| st.warnings.iter().any(|w| w.contains("another chain or genesis")))
    });

    // Step 3: copy genesis.json to the other machines and join.
    for i in 2..=4 {
        let g = s.path(&format!("machine{i}/copied-genesis.json"));
        std::fs::copy(m1.join("genesis.json"), &g).unwrap();
        spawn(
            &mut s,
            i,
            &["join", "--config", &cfgs[i - 1], "--genesis", g.to_str().unwrap()],
        );
    }

    // Step 4: status shows every node connected and a rising height.
    let h0 = wait_for(&s, "all four nodes connected", 30, || {
        let sts: Vec<Status> = ports.iter().filter_map(|p| status(*p)).collect();
        (sts.len() == 4 && sts.iter().all(|st| st.peers.len() == 3)).then(|| sts[0].latest_height)
    });
    wait_for(&s, "the height to rise on node 4", 20, || {
        status(ports[3]).filter(|st| st.latest_height > h0 + 2)
    });
    let text = ok(&["status", "--config", &cfgs[3]]);
    assert!(text.contains("peers      3") && text.contains("validators 1"), "{text}");

    // Step 5: the validators approve each joining node in turn (> 2/3 of the power each time).
    let addrs: Vec<String> = (1..=4)
        .map(|i| validator_address(&s.path(&format!("machine{i}"))))
        .collect();
    for joiner in 1..4 {
        let mut last = String::new();
        for cfg in &cfgs[..joiner] {
            last = ok(&["add-validator", "--address", &addrs[joiner], "--config", cfg]);
        }
        assert!(last.contains("power set to 10"), "{last}");
        // A node outside the set cannot approve.
        if joiner < 3 {
            refused(
                &["add-validator", "--address", &addrs[3], "--config", &cfgs[3]],
                "not in the current validator set",
            );
        }
        let st = wait_for(&s, "the new validator to take effect", 20, || {
            status(ports[joiner]).filter(|st| st.in_validator_set)
        });
        // The first status that says "validator" does not also warn that it is not one.
        assert!(
            !st.warnings.iter().any(|w| w.contains("not in the validator set")),
            "{:?}",
            st.warnings
        );
    }
    let st = wait_for(&s, "4 validators producing blocks", 20, || {
        let st = status(ports[0])?;
        (st.validators.len() == 4).then_some(st)
    });
    wait_for(&s, "blocks with 4 validators", 20, || {
        status(ports[0]).filter(|x| x.latest_height > st.latest_height + 3)
    });

    // Transactions submitted on different nodes are listed on every node.
    for (i, cfg) in cfgs.iter().enumerate() {
        let out = ok(&["tx", &format!("key{i}=value{i}"), "--config", cfg, "--wait"]);
        assert!(out.contains("committed at height"), "{out}");
    }
    for (i, cfg) in cfgs.iter().enumerate() {
        wait_for(&s, "every transaction on every node", 20, || {
            let txs: Vec<TxView> = rpc::get_json(rpc_addr(ports[i]), "/transactions?limit=1000").ok()?;
            (0..4)
                .all(|k| {
                    txs.iter()
                        .any(|t| t.payload == format!("key{k}=value{k}") && t.code == 0)
                })
                .then_some(())
        });
        let list = ok(&["transactions", "--limit", "1000", "--config", cfg]);
        assert!(list.contains("key0=value0") && list.contains("key3=value3"), "{list}");
        assert_eq!(ok(&["query", "key2", "--config", cfg]).trim(), "value2");
    }

    // Queries go through Application::query: a missing key, an unknown path, and the key a
    // joining node published with its governance transaction (what add-validator read).
    refused(&["query", "nokey", "--config", &cfgs[0]], "key `nokey` is not set");
    refused(&["query", "x", "--path", "nope", "--config", &cfgs[0]], "code 2");
    let q: QueryView = rpc::get_json(
        rpc_addr(ports[0]),
        &format!("/query?path=tendr%2Fvalidator_request&data={}", addrs[3]),
    )
    .unwrap();
    let text = std::fs::read_to_string(s.path("machine4/validator_key.json")).unwrap();
    assert!(q.code == 0 && text.contains(q.value.as_deref().unwrap()), "{q:?}");

    // kill -9 one validator, keep going without it, restart it: it catches up.
    s.kill(3);
    ok(&["tx", "while=down", "--config", &cfgs[0], "--wait"]);
    let target = status(ports[0]).unwrap().latest_height;
    spawn(&mut s, 3, &["start", "--config", &cfgs[2]]);
    wait_for(&s, "the restarted node to catch up", 40, || {
        status(ports[2]).filter(|st| st.latest_height > target && st.peers.len() == 3)
    });
    assert_eq!(ok(&["query", "while", "--config", &cfgs[2]]).trim(), "down");

    // All nodes hold identical blocks at every height.
    let top = ports.iter().map(|p| status(*p).unwrap().latest_height).min().unwrap();
    for h in 1..=top {
        let ids: Vec<String> = ports
            .iter()
            .map(|p| {
                let b: BlockView = rpc::get_json(rpc_addr(*p), &format!("/tendr/block?height={h}")).unwrap();
                b.id
            })
            .collect();
        assert!(ids.iter().all(|id| *id == ids[0]), "height {h}: {ids:?}");
    }
    wait_for(&s, "metrics to show 3 peers and the height", 10, || {
        let m = rpc::request(rpc_addr(ports[0]), "GET", "/metrics", b"").ok()?;
        (m.body.contains("tendr_peers 3") && m.body.contains("tendr_height ")).then_some(())
    });
    eprintln!("identical blocks at heights 1..={top} on 4 nodes");
}

/// Every file under `dir` with its mode and contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let meta = std::fs::metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p.clone());
                out.insert(p, (meta.permissions().mode(), Vec::new()));
            } else {
                out.insert(p.clone(), (meta.permissions().mode(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

/// Runs `args` expecting a refusal naming `want`, and checks nothing under `dir` changed.
fn refused_unchanged(dir: &Path, args: &[&str], want: &str) {
    let before = snapshot(dir);
    refused(args, want);
    assert_eq!(snapshot(dir), before, "tendr {args:?} changed files on disk");
}

#[test]
fn bad_inputs_give_clear_errors_and_change_nothing() {
    let s = Scratch::new("bad");
    let d = s.path("n");
    std::fs::create_dir_all(&d).unwrap();
    let cfg = d.join("tendermint_config.json");
    let c = cfg.to_str().unwrap();
    let port = base_port() + 7;

    let configs = [
        (
            r#"{"node_id": "n", "port": 70000}"#,
            "field `port`: 70000 is not a valid port (1-65535)",
        ),
        (
            r#"{"node_id": "n", "port": "8001"}"#,
            "field `port`: \"8001\" is not a valid port: expected a number 1-65535",
        ),
        (
            r#"{"node_id": "n", "port": 8001, "colour": "red"}"#,
            "unknown field `colour`",
        ),
        (
            r#"{"node_id": "n", "port": 8001, "is_validator": "yes"}"#,
            "field `is_validator`",
        ),
        (
            r#"{"node_id": "n", "port": 8001, "seed_nodes": [{"host": "10.0.0.1"}]}"#,
            "field `seed_nodes[0]`: missing field `port`",
        ),
        (
            r#"{"node_id": "n", "port": 8001, "target_block_time": "fast"}"#,
            "field `target_block_time`",
        ),
        (
            r#"{"node_id": "n", "port": 8001, "log_level": "chatty"}"#,
            "field `log_level`",
        ),
        (r#"{"node_id": "n", "port": 8001,"#, "EOF"),
    ];
    for (text, want) in configs {
        std::fs::write(&cfg, text).unwrap();
        let e = refused(&["init", "--config", c], want);
        assert!(e.contains(c), "the message names the file: {e}");
        let only_config = std::fs::read_dir(&d).unwrap().count();
        assert_eq!(only_config, 1, "a refused init wrote files");
    }
    refused(
        &["start", "--config", s.path("missing.json").to_str().unwrap()],
        "cannot read it",
    );

    // A good config: init once; a second init is refused and changes nothing.
    std::fs::write(&cfg, guide_config(1, port, port)).unwrap();
    ok(&["init", "--config", c]);
    refused_unchanged(&d, &["init", "--config", c], "already initialised");

    // Key files: wrong permissions, wrong contents, missing.
    let vk = d.join("validator_key.json");
    std::fs::set_permissions(&vk, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused_unchanged(&d, &["start", "--config", c], "chmod 600");
    std::fs::set_permissions(&vk, std::fs::Permissions::from_mode(0o600)).unwrap();
    let good = std::fs::read(&vk).unwrap();
    std::fs::write(&vk, r#"{"address": "0x12", "pub_key": "00", "priv_key": "zz"}"#).unwrap();
    refused_unchanged(&d, &["start", "--config", c], "field `priv_key`");
    std::fs::write(&vk, &good).unwrap();
    let nk = d.join("node_key.json");
    let node_key = std::fs::read(&nk).unwrap();
    std::fs::remove_file(&nk).unwrap();
    refused_unchanged(&d, &["start", "--config", c], "node key file");
    std::fs::write(&nk, node_key).unwrap();
    std::fs::set_permissions(&nk, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Malformed genesis files given to `join` on a fresh machine: refused, nothing written.
    let j = s.path("j");
    std::fs::create_dir_all(&j).unwrap();
    let jcfg = j.join("tendermint_config.json");
    std::fs::write(&jcfg, guide_config(2, port + 1, port + 2)).unwrap();
    let jc = jcfg.to_str().unwrap();
    let genesis = std::fs::read_to_string(d.join("genesis.json")).unwrap();
    let bad_genesis = [
        (genesis.replace("\"power\": 10", "\"power\": 0"), "zero voting power"),
        (
            genesis.replace("\"admission_policy\"", "\"admission\""),
            "unknown field `admission`",
        ),
        (
            genesis.replace("\"chain_id\": \"", "\"chain_id\": \"x"),
            "field `app_hash`",
        ),
        (
            genesis.replace("\"genesis_time\": \"", "\"genesis_time\": \"x"),
            "field `genesis_time`",
        ),
        (
            genesis.replace("\"pub_key\": \"0", "\"pub_key\": \"1"),
            "field `validators[0].pub_key`",
        ),
        ("{".to_string(), "EOF"),
    ];
    for (i, (text, want)) in bad_genesis.iter().enumerate() {
        let g = s.path(&format!("bad-genesis-{i}.json"));
        std::fs::write(&g, text).unwrap();
        refused_unchanged(&j, &["join", "--config", jc, "--genesis", g.to_str().unwrap()], want);
    }
    // A node that already belongs to one chain refuses another's genesis.
    let other = s.path("o");
    std::fs::create_dir_all(&other).unwrap();
    let ocfg = other.join("tendermint_config.json");
    std::fs::write(&ocfg, guide_config(3, port + 3, port + 3)).unwrap();
    ok(&["init", "--config", ocfg.to_str().unwrap()]);
    refused_unchanged(
        &d,
        &[
            "join",
            "--config",
            c,
            "--genesis",
            other.join("genesis.json").to_str().unwrap(),
        ],
        "belongs to another network",
    );
    // Read commands against a node that is not running fail clearly (not bad input: exit 1).
    let o = tendr(&["status", "--config", c]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach the node's RPC"));
}

#[test]
fn testnet_survives_repeated_kill_9_without_double_signing() {
    let mut s = Scratch::new("kill");
    let base = base_port() + 5_000;
    let out = s.path("net");
    let text = ok(&[
        "testnet",
        "--validators",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--base-port",
        &base.to_string(),
        "--target-block-time",
        "0.2",
    ]);
    assert!(text.contains("node4"), "{text}");
    let cfgs: Vec<String> = (1..=4)
        .map(|i| {
            let c = out.join(format!("node{i}/tendermint_config.json"));
            let t = std::fs::read_to_string(&c).unwrap().replace(
                "\"log_level\": \"info\"",
                "\"log_level\": \"info\", \"timeouts\": {\"propose_ms\": 800, \"prevote_ms\": 400, \"precommit_ms\": 400, \"delta_ms\": 200, \"rebroadcast_ms\": 400}",
            );
            std::fs::write(&c, t).unwrap();
            c.to_string_lossy().into_owned()
        })
        .collect();
    let ports: Vec<u16> = (0..4).map(|i| base + i).collect();
    for (i, c) in cfgs.iter().enumerate() {
        spawn(&mut s, i + 1, &["start", "--config", c]);
    }
    wait_for(&s, "the testnet to produce blocks", 30, || {
        status(ports[0]).filter(|st| st.latest_height >= 3)
    });
    // Kill node 2 at uneven moments (its votes are in flight), restart it at once.
    let mut rng = std::process::id() as u64;
    for round in 0..5 {
        rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        std::thread::sleep(Duration::from_millis(200 + (rng >> 33) % 1200));
        s.kill(2);
        let _ = tendr(&["tx", &format!("round{round}=x"), "--config", &cfgs[0]]);
        spawn(&mut s, 2, &["start", "--config", &cfgs[1]]);
        wait_for(&s, "the restarted node's RPC", 10, || status(ports[1]));
    }
    // An observer joins late, catches up over the whole chain and follows without voting.
    let obs = s.path("observer");
    std::fs::create_dir_all(&obs).unwrap();
    let ocfg = obs.join("tendermint_config.json");
    let obs_port = base + 4;
    std::fs::write(
        &ocfg,
        guide_config(5, obs_port, base).replace("\"is_validator\": true", "\"is_validator\": false"),
    )
    .unwrap();
    spawn(
        &mut s,
        5,
        &[
            "join",
            "--config",
            ocfg.to_str().unwrap(),
            "--genesis",
            out.join("node1/genesis.json").to_str().unwrap(),
        ],
    );
    let ports: Vec<u16> = ports.into_iter().chain([obs_port]).collect();
    let target = status(ports[0]).unwrap().latest_height + 3;
    wait_for(&s, "every node past the last restart", 60, || {
        ports
            .iter()
            .all(|p| status(*p).is_some_and(|st| st.latest_height >= target))
            .then_some(())
    });
    for h in 1..=target {
        let blocks: Vec<BlockView> = ports
            .iter()
            .map(|p| rpc::get_json(rpc_addr(*p), &format!("/tendr/block?height={h}")).unwrap())
            .collect();
        assert!(blocks.iter().all(|b| b.id == blocks[0].id), "height {h} differs");
    }
    let logs = s.logs();
    assert!(!logs.contains("evidence"), "a validator double-signed:\n{logs}");
    let full: String = std::fs::read_dir(&s.dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(!full.contains("evidence:"), "a validator double-signed");
    let o = status(obs_port).unwrap();
    assert!(o.validator_address.is_none() && !o.in_validator_set, "{o:?}");
    assert!(
        !obs.join("validator_key.json").exists(),
        "an observer got a validator key"
    );
    assert!(obs.join("node_key.json").exists());
    let text = ok(&["status", "--config", ocfg.to_str().unwrap()]);
    assert!(text.contains("role       observer"), "{text}");
    eprintln!("5 kill -9 and restarts; identical blocks at heights 1..={target} on 4 validators and an observer");
}

/// Issue 18, item 3: a transaction accepted just before a `kill -9` is lost with the mempool.
/// `tx --wait` says so (and to resubmit) once blocks go by without it, instead of waiting 60 s
/// and then asking whether blocks are being produced.
#[test]
fn a_transaction_lost_in_a_crash_is_reported_as_lost() {
    use std::io::BufRead;
    let mut s = Scratch::new("lost-tx");
    let port = base_port() + 6_000;
    let out = s.path("net");
    let args = ["testnet", "--validators", "1", "--out", out.to_str().unwrap()];
    ok(&[
        &args[..],
        &["--base-port", &port.to_string(), "--target-block-time", "1.5"],
    ]
    .concat());
    let cfg = out.join("node1/tendermint_config.json").to_string_lossy().into_owned();
    spawn(&mut s, 1, &["start", "--config", &cfg]);
    let h = wait_for(&s, "blocks", 30, || status(port).filter(|st| st.latest_height >= 2)).latest_height;
    // Submit just after a block: the next one is built 1.5 s later, long after the kill.
    wait_for(&s, "the next block", 10, || {
        status(port).filter(|st| st.latest_height > h)
    });
    let started = Instant::now();
    let mut waiting = Command::new(TENDR)
        .args(["tx", "lost=1", "--wait", "--config", &cfg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(waiting.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    s.kill(1);
    assert!(line.starts_with("submitted "), "{line}");
    spawn(&mut s, 1, &["start", "--config", &cfg]);
    let o = wait_for(&s, "`tx --wait` to give up", 40, || waiting.try_wait().unwrap());
    assert_eq!(o.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut waiting.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("no longer in the node's mempool") && err.contains("submit it again"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "it did not wait the full 60 s"
    );
    let hash = line["submitted ".len()..].trim();
    assert!(rpc::get_json::<TxView>(rpc_addr(port), &format!("/tendr/tx?hash={hash}")).is_err());
}

/// Issue 18, item 7: a JSON-RPC body sent to `POST /tx` is refused with a pointer to the right
/// use (it was stored as a key-value transaction), and an overlong URL gets 414 (431 when it
/// does not even fit the request-head buffer) without its echo.
#[test]
fn rpc_refuses_json_rpc_bodies_and_overlong_urls() {
    let mut s = Scratch::new("rpc-odds");
    let port = base_port() + 6_005;
    let out = s.path("net");
    let args = ["testnet", "--validators", "1", "--out", out.to_str().unwrap()];
    ok(&[
        &args[..],
        &["--base-port", &port.to_string(), "--target-block-time", "0.2"],
    ]
    .concat());
    let cfg = out.join("node1/tendermint_config.json").to_string_lossy().into_owned();
    spawn(&mut s, 1, &["start", "--config", &cfg]);
    wait_for(&s, "blocks", 30, || status(port).filter(|st| st.latest_height >= 1));
    let addr = rpc_addr(port);
    let call = br#"{"jsonrpc":"2.0","id":1,"method":"broadcast_tx_commit","params":{"tx":"color=red"}}"#;
    let r = rpc::request(addr, "POST", "/tx", call).unwrap();
    assert_eq!(r.code, 400, "{}", r.body);
    assert!(r.body.contains("JSON-RPC") && r.body.contains("POST /tx"), "{}", r.body);
    // A JSON value that is not a call, and an ordinary transaction, are still transactions.
    let r = rpc::request(addr, "POST", "/tx", br#"{"a":1}=x"#).unwrap();
    assert_eq!(r.code, 200, "{}", r.body);
    // A URL over the limit is refused with 414 and not echoed.
    let long = format!("/status?{}", "x".repeat(10_000));
    let r = rpc::request(addr, "GET", &long, b"").unwrap();
    assert_eq!(r.code, 414, "{}", &r.body[..r.body.len().min(200)]);
    assert!(r.body.len() < 300 && !r.body.contains("xxxx"), "{}", r.body);
    // A 1 MB URL does not fit the request-head buffer: 431 (or the connection is closed
    // before the client finished sending), never an echo.
    let long = format!("/status?{}", "x".repeat(1 << 20));
    if let Ok(r) = rpc::request(addr, "GET", &long, b"") {
        assert!(matches!(r.code, 414 | 431), "{}", &r.body[..r.body.len().min(200)]);
        assert!(!r.body.contains("xxxx"));
    }
    let r = rpc::request(addr, "GET", "/status?ok=1", b"").unwrap();
    assert_eq!(r.code, 200, "an ordinary URL is still answered");
    // JSON-RPC goes to `POST /`.
    let r = rpc::request(addr, "POST", "/", br#"{"jsonrpc":"2.0","id":7,"method":"health"}"#).unwrap();
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v, serde_json::json!({"jsonrpc": "2.0", "id": 7, "result": {}}));
}

/// Issue 18, items 8 and 9: the README documents itself (never `../shared`, which users do not
/// have), points at the architecture in the repository, and answers the operators' questions:
/// how much an offline validator slows the chain, and how to compare hosts when the RPC
/// listens on loopback.
#[test]
fn the_readme_documents_itself_and_the_operators_questions() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        !readme.contains("../shared"),
        "the README points outside the repository"
    );
    assert!(readme.contains("docs/ARCHITECTURE.md"));
    let arch = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    for part in [
        "## The crates",
        "message flows",
        "transaction flows",
        "## Boundaries",
        "tendr-kv",
        "governance",
    ] {
        assert!(arch.contains(part), "docs/ARCHITECTURE.md lacks {part:?}");
    }
    assert!(!arch.contains("../shared"));
    assert!(readme.contains("every Nth height") && readme.contains("propose_ms"));
    assert!(readme.contains("/block?height=N") && readme.contains("on **each host**"));
}
