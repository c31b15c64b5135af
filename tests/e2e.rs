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

#[path = "e2e/bench_hosts.rs"]
mod bench_hosts;
/// A Byzantine validator on real QUIC (issue 16); only with `--features byzantine`.
#[cfg(feature = "byzantine")]
#[path = "e2e/byzantine.rs"]
mod byzantine;
/// The fuzz targets replayed on their corpora and regressions (issue 16).
#[path = "e2e/fuzz_corpus.rs"]
mod fuzz_corpus;
#[path = "e2e/guide_on_hosts.rs"]
mod guide_on_hosts;
/// Test hosts in network namespaces, and the guide on four of them (issue 15).
#[path = "e2e/hosts.rs"]
mod hosts;

/// A scratch folder and the node processes started in it; both cleaned up on drop.
struct Scratch {
    dir: PathBuf,
    children: BTreeMap<usize, Child>,
    /// Processes started so far: each gets a log of its own (a restarted node's earlier logs
    /// are kept, so checks of the whole logs see every run).
    started: usize,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("tendr-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch {
            dir,
            children: BTreeMap::new(),
            started: 0,
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
    /// Every node log, whole.
    fn full_logs(&self) -> String {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect()
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
    let mut cmd = Command::new(TENDR);
    cmd.args(args);
    spawn_command(s, i, cmd);
}

/// Starts `cmd` as node `i` of `s`, its output in a log of its own.
fn spawn_command(s: &mut Scratch, i: usize, mut cmd: Command) {
    s.started += 1;
    let log = std::fs::File::create(s.path(&format!("node{i}-{:04}.log", s.started))).unwrap();
    let child = cmd
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    s.children.insert(i, child);
}

/// A one-validator testnet in `s` on `port` with the given block time; returns its config path
/// (not started).
fn one_node_testnet(s: &Scratch, port: u16, block_time: &str) -> PathBuf {
    let out = s.path("net");
    let out_s = out.to_string_lossy().into_owned();
    let port_s = port.to_string();
    ok(&[
        "testnet",
        "--validators",
        "1",
        "--out",
        &out_s,
        "--base-port",
        &port_s,
        "--target-block-time",
        block_time,
    ]);
    out.join("node1/tendermint_config.json")
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
    let cfgs = short_timeout_testnet(&out, 4, base);
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
    reach_and_agree(&s, &ports, target, 60, "every node past the last restart");
    let logs = s.logs();
    assert!(!logs.contains("evidence"), "a validator double-signed:\n{logs}");
    let full = s.full_logs();
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

/// An `n`-validator testnet in `out` on ports from `base`, with 0.2 s blocks and short
/// timeouts (a restarted or misbehaving validator costs rounds of 1 s, not 3 s); the configs.
fn short_timeout_testnet(out: &Path, n: usize, base: u16) -> Vec<String> {
    let text = testnet(out, n, base, "0.2");
    assert!(text.contains(&format!("node{n}")), "{text}");
    (1..=n)
        .map(|i| {
            let c = out.join(format!("node{i}/tendermint_config.json"));
            let t = std::fs::read_to_string(&c).unwrap().replace(
                "\"log_level\": \"info\"",
                "\"log_level\": \"info\", \"timeouts\": {\"propose_ms\": 800, \"prevote_ms\": 400, \"precommit_ms\": 400, \"delta_ms\": 200, \"rebroadcast_ms\": 400}",
            );
            std::fs::write(&c, t).unwrap();
            c.to_string_lossy().into_owned()
        })
        .collect()
}

/// The height every node on `ports` has reached (the lowest); `None` while one does not answer.
fn lowest_height(ports: &[u16]) -> Option<u64> {
    ports
        .iter()
        .map(|p| status(*p).map(|st| st.latest_height))
        .min()
        .flatten()
}

/// Waits until every node on `ports` has decided `target`, then checks that they all hold the
/// same blocks up to it.
fn reach_and_agree(s: &Scratch, ports: &[u16], target: u64, secs: u64, what: &str) {
    wait_for(s, what, secs, || lowest_height(ports).filter(|h| *h >= target));
    assert_same_blocks(ports, 1..=target);
}

/// Every node on `ports` holds the same block at each height of `heights`.
fn assert_same_blocks(ports: &[u16], heights: std::ops::RangeInclusive<u64>) {
    for h in heights {
        let blocks: Vec<BlockView> = ports
            .iter()
            .map(|p| rpc::get_json(rpc_addr(*p), &format!("/tendr/block?height={h}")).unwrap())
            .collect();
        assert!(blocks.iter().all(|b| b.id == blocks[0].id), "height {h} differs");
    }
}

/// The committed transactions of duplicate-vote evidence against `culprit` in the history of
/// the node on `port`.
fn committed_evidence(port: u16, culprit: &str) -> Vec<TxView> {
    let txs: Vec<TxView> = rpc::get_json(rpc_addr(port), "/tendr/transactions?limit=100000").unwrap_or_default();
    txs.into_iter()
        .filter(|t| t.payload.starts_with("evidence:") && t.code == 0 && t.log.contains(culprit))
        .collect()
}

/// Every node on `ports` holds the committed evidence transaction `ev` at the same height.
fn assert_evidence_everywhere(ports: &[u16], culprit: &str, ev: &TxView) {
    for p in ports {
        let all = committed_evidence(*p, culprit);
        assert!(
            all.iter().any(|t| (t.height, &t.hash) == (ev.height, &ev.hash)),
            "node on {p} lacks the evidence of height {}: {all:?}",
            ev.height
        );
    }
}

/// Issue 16: the double-sign guard keeps one machine from signing twice, but cannot stop the
/// same validator key running on two machines. Node 4's key runs in a second process (its
/// "twin", with a node key of its own): when the key proposes, the twins propose different
/// blocks and prevote for their own, so the honest nodes see two conflicting votes; the
/// evidence is submitted and committed in a block, and the chain goes on with one history.
#[test]
fn the_same_validator_key_on_two_machines_is_caught_and_committed_as_evidence() {
    let mut s = Scratch::new("twins");
    let base = base_port() + 8_500;
    let out = s.path("net");
    let mut cfgs = short_timeout_testnet(&out, 4, base);
    // The twin: node 4's config, genesis and validator key; its own node key and port.
    let twin = s.path("twin");
    std::fs::create_dir_all(&twin).unwrap();
    for f in ["genesis.json", "validator_key.json"] {
        std::fs::copy(out.join("node4").join(f), twin.join(f)).unwrap();
    }
    testnet(&s.path("spare"), 1, base + 7, "0.2");
    std::fs::copy(s.path("spare/node1/node_key.json"), twin.join("node_key.json")).unwrap();
    let t = std::fs::read_to_string(&cfgs[3])
        .unwrap()
        .replace(&format!("\"port\": {}", base + 3), &format!("\"port\": {}", base + 4))
        .replace("\"node4\"", "\"node4-twin\"");
    std::fs::write(twin.join("tendermint_config.json"), t).unwrap();
    cfgs.push(twin.join("tendermint_config.json").to_string_lossy().into_owned());
    for (i, c) in cfgs.iter().enumerate() {
        spawn(&mut s, i + 1, &["start", "--config", c]);
    }
    let culprit = validator_address(&out.join("node4"));
    let honest: Vec<u16> = (0..3).map(|i| base + i).collect();
    let ev = wait_for(&s, "the twins' evidence committed in a block", 120, || {
        committed_evidence(honest[0], &culprit).pop()
    });
    let after = ev.height + 5;
    reach_and_agree(&s, &honest, after, 60, "the honest nodes past the evidence");
    assert_evidence_everywhere(&honest, &culprit, &ev);
    eprintln!(
        "twins of {culprit}: first evidence committed at height {} ({}); {} evidence transactions by height {after}; \
         3 honest nodes identical up to {after}",
        ev.height,
        ev.log,
        committed_evidence(honest[0], &culprit).len()
    );
}

/// A seeded stream for the crash loops (a 64-bit LCG's high bits).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Submits `crash<n>=<n>` transactions to the node on `port` until `stop`, and returns those
/// the RPC acknowledged as committed (found by hash in a decided block), with their heights.
fn load_until(port: u16, stop: &std::sync::atomic::AtomicBool) -> Vec<(String, u64)> {
    let (mut pending, mut committed) = (Vec::<String>::new(), Vec::new());
    let (mut n, mut after_stop) = (0u64, 0);
    // After `stop`, look for the pending ones a little longer (100 x 40 ms).
    while after_stop < 100 && !(after_stop > 0 && pending.is_empty()) {
        n += 1;
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            after_stop += 1;
        } else if let Ok(v) =
            rpc::post_json::<serde_json::Value>(rpc_addr(port), "/tendr/tx", format!("crash{n}={n}").as_bytes())
        {
            pending.extend(v["hash"].as_str().map(str::to_string));
        }
        if n % 5 == 0 {
            pending.retain(
                |h| match rpc::get_json::<TxView>(rpc_addr(port), &format!("/tendr/tx?hash={h}")) {
                    Ok(t) => {
                        committed.push((h.clone(), t.height));
                        false
                    }
                    Err(_) => true,
                },
            );
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    committed
}

/// Issue 16: `kill -9` of a validator at random moments under transaction load, over and over
/// (`CRASH_LOOPS`, 100 by default; seeded by `CRASH_SEED`). Node 1 takes the load and is never
/// killed; one of nodes 2-4, drawn by the seed, is killed after a random 0-0.8 s and restarted
/// at once. After each restart the node must serve its RPC again and hold every block it had
/// decided before the kill; at the end every node holds the same blocks and every transaction
/// acknowledged as committed, no evidence of a double sign exists and the guard never had to
/// refuse a signature.
#[test]
fn crash_loops_under_load_lose_nothing_and_never_double_sign() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let loops: u32 = std::env::var("CRASH_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(std::process::id() as u64);
    eprintln!("crash loops: {loops}, seed {seed} (replay: CRASH_LOOPS={loops} CRASH_SEED={seed})");
    let mut s = Scratch::new("crash-loops");
    let base = base_port() + 9_500;
    let cfgs = short_timeout_testnet(&s.path("net"), 4, base);
    let ports: Vec<u16> = (0..4).map(|i| base + i).collect();
    for (i, c) in cfgs.iter().enumerate() {
        spawn(&mut s, i + 1, &["start", "--config", c]);
    }
    wait_for(&s, "blocks", 30, || status(ports[0]).filter(|st| st.latest_height >= 3));
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, port) = (stop.clone(), ports[0]);
        std::thread::spawn(move || load_until(port, &stop))
    };
    let mut rng = Lcg(seed);
    let started = Instant::now();
    for round in 0..loops {
        let victim = 2 + rng.below(3) as usize;
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        let had = status(ports[victim - 1]).map_or(0, |st| st.latest_height);
        s.kill(victim);
        spawn(&mut s, victim, &["start", "--config", &cfgs[victim - 1]]);
        let back = wait_for(&s, &format!("node {victim} back after kill {round}"), 30, || {
            status(ports[victim - 1])
        });
        assert!(
            back.latest_height >= had,
            "kill {round} (seed {seed}): node {victim} had decided {had} blocks and restarted with {}",
            back.latest_height
        );
        if round % 100 == 99 {
            eprintln!(
                "{} kills in {:.0} s, height {}",
                round + 1,
                started.elapsed().as_secs_f64(),
                back.latest_height
            );
        }
    }
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let committed = load.join().unwrap();
    let target = status(ports[0]).unwrap().latest_height + 2;
    reach_and_agree(&s, &ports, target, 120, "every node past the last kill");
    for (hash, height) in &committed {
        for p in &ports {
            let t: TxView = rpc::get_json(rpc_addr(*p), &format!("/tendr/tx?hash={hash}"))
                .unwrap_or_else(|e| panic!("seed {seed}: committed transaction {hash} missing on node {p}: {e}"));
            assert_eq!(t.height, *height, "seed {seed}: transaction {hash}");
        }
    }
    let full = s.full_logs();
    for bad in ["evidence:", "refused to sign", "panicked"] {
        assert!(!full.contains(bad), "seed {seed}: `{bad}` in the logs");
    }
    assert!(
        committed.len() as u64 > target / 4,
        "too little load: {} transactions",
        committed.len()
    );
    eprintln!(
        "{loops} kill -9 in {:.0} s (seed {seed}); {} transactions acknowledged as committed, all on 4 nodes; \
         identical blocks 1..={target}; no evidence, no refused signature",
        took.as_secs_f64(),
        committed.len()
    );
}

/// Starts node `i` of `s` with its clock `offset` off (libfaketime preloaded, `FAKETIME` e.g.
/// `+300s`); timers (the monotonic clock) are left alone. The child is `tendr` itself (not the
/// `faketime` wrapper, which would outlive a kill and leave the node running).
fn spawn_with_clock(s: &mut Scratch, i: usize, cfg: &str, offset: &str) {
    let lib = ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| PathBuf::from(format!("/usr/lib/{arch}/faketime/libfaketime.so.1")))
        .chain([PathBuf::from("/usr/local/lib/faketime/libfaketime.so.1")])
        .find(|p| p.exists())
        .expect("this test needs libfaketime (Debian: apt-get install faketime; .ci/run installs it)");
    let mut cmd = Command::new(TENDR);
    cmd.args(["start", "--config", cfg])
        .env("LD_PRELOAD", lib)
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    spawn_command(s, i, cmd);
}

/// The status warning of the node on `port` that mentions `what`, if any.
fn warning_about(port: u16, what: &str) -> Option<String> {
    status(port)?.warnings.into_iter().find(|w| w.contains(what))
}

/// Issue 16: clocks off by minutes on real nodes (libfaketime). Node 3's clock is 5 minutes
/// behind from the start; node 4's is 5 minutes ahead and it joins once the chain runs. The
/// four keep one history and go on deciding (consensus does not depend on clocks; node 4 drags
/// the block times ahead, which only have to increase). The status and log of node 3 say its
/// own clock is behind; those of node 1 name node 4 as the validator whose clock is ahead.
#[test]
fn clocks_off_by_minutes_keep_safety_and_the_status_names_the_wrong_clock() {
    let mut s = Scratch::new("clocks");
    let base = base_port() + 8_000;
    let out = s.path("net");
    let cfgs = short_timeout_testnet(&out, 4, base);
    let ports: Vec<u16> = (0..4).map(|i| base + i).collect();
    spawn(&mut s, 1, &["start", "--config", &cfgs[0]]);
    spawn(&mut s, 2, &["start", "--config", &cfgs[1]]);
    spawn_with_clock(&mut s, 3, &cfgs[2], "-300s");
    wait_for(&s, "blocks", 30, || status(ports[0]).filter(|st| st.latest_height >= 5));
    spawn_with_clock(&mut s, 4, &cfgs[3], "+300s");
    let behind = wait_for(&s, "node 3 told its clock is behind", 60, || {
        warning_about(ports[2], "this machine's clock is about")
    });
    assert!(
        behind.contains("behind the other validators'") && behind.contains("NTP"),
        "{behind}"
    );
    let ahead = validator_address(&out.join("node4"));
    let named = wait_for(&s, "node 1 naming node 4's clock", 60, || {
        warning_about(ports[0], &ahead)
    });
    assert!(named.contains("ahead of this machine's"), "{named}");
    let target = lowest_height(&ports).unwrap_or(0) + 20;
    reach_and_agree(&s, &ports, target, 60, "all four deciding with the clocks off");
    let text = ok(&["status", "--config", &cfgs[2]]);
    assert!(text.contains("this machine's clock is about"), "{text}");
    let full = s.full_logs();
    assert!(
        full.contains("clock: this machine's clock is about"),
        "not in node 3's log"
    );
    assert!(full.contains("clock: the clocks of validators proposing blocks are off"));
    for bad in ["evidence:", "panicked"] {
        assert!(!full.contains(bad), "`{bad}` in the logs");
    }
    eprintln!(
        "clocks -300 s and +300 s: 4 nodes identical up to {target}; node 3: {behind}; node 1: {named}; node 4: {:?}",
        warning_about(ports[3], "clock")
    );
}

/// Issue 18, item 3: a transaction accepted just before a `kill -9` is lost with the mempool.
/// `tx --wait` says so (and to resubmit) once blocks go by without it, instead of waiting 60 s
/// and then asking whether blocks are being produced.
#[test]
fn a_transaction_lost_in_a_crash_is_reported_as_lost() {
    use std::io::BufRead;
    let mut s = Scratch::new("lost-tx");
    let port = base_port() + 6_000;
    let cfg = one_node_testnet(&s, port, "1.5").to_string_lossy().into_owned();
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
    let cfg = one_node_testnet(&s, port, "0.2").to_string_lossy().into_owned();
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

// ---- Issue 16: storage faults and key safety ----

/// `tendr testnet` of `n` validators in `out` from port `base`; its output.
fn testnet(out: &Path, n: usize, base: u16, block_time: &str) -> String {
    ok(&[
        "testnet",
        "--validators",
        &n.to_string(),
        "--out",
        out.to_str().unwrap(),
        "--base-port",
        &base.to_string(),
        "--target-block-time",
        block_time,
    ])
}

/// A one-validator testnet in `s`, started, with at least `height` blocks; its config path.
fn one_validator(s: &mut Scratch, port: u16, block_time: &str, height: u64) -> String {
    let out = s.path("net");
    testnet(&out, 1, port, block_time);
    let cfg = out.join("node1/tendermint_config.json").to_string_lossy().into_owned();
    spawn(s, 1, &["start", "--config", &cfg]);
    wait_for(s, "blocks", 60, || status(port).filter(|st| st.latest_height >= height));
    cfg
}

/// Starts `tendr start` on `cfg` and waits until it either exits (its code and output) or
/// serves its RPC (`None`; it is killed after a second more, and must still be running).
fn start_or_exit(s: &Scratch, cfg: &str, port: u16, extra: &[&str]) -> Option<(Option<i32>, String)> {
    let log = s.path("start-or-exit.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(TENDR)
        .args([&["start", "--config", cfg][..], extra].concat())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let result = loop {
        if let Some(code) = child.try_wait().unwrap() {
            break Some((code.code(), std::fs::read_to_string(&log).unwrap()));
        }
        if status(port).is_some() {
            std::thread::sleep(Duration::from_secs(1));
            let still = child.try_wait().unwrap().is_none();
            let text = std::fs::read_to_string(&log).unwrap();
            assert!(
                still && !text.contains("panicked"),
                "the node died after starting:\n{text}"
            );
            break None;
        }
        assert!(Instant::now() < deadline, "neither started nor exited");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Issue 16: 4 KiB of random bytes in `data/tendr.redb` at 10%, 25% and 40% of its length
/// and over its last 32 KiB. Before: the node panicked inside redb (`entered unreachable
/// code`, exit 101). Now it refuses with what is damaged and what to do (or, where the bytes
/// hit space not in use, runs); the intact store runs again afterwards.
#[test]
fn a_damaged_store_is_refused_with_the_way_out_never_a_panic() {
    let mut s = Scratch::new("damaged");
    let port = base_port() + 7_000;
    let cfg = one_validator(&mut s, port, "0.02", 200);
    s.kill(1);
    let db = s.path("net/node1/data/tendr.redb");
    let good = std::fs::read(&db).unwrap();
    let len = good.len();
    let mut rng = std::process::id() as u64 | 1;
    let mut refused = 0;
    for (name, at) in [
        ("10%", len / 10),
        ("25%", len / 4),
        ("40%", len * 2 / 5),
        ("last 32 KiB", len - (32 << 10)),
    ] {
        let mut bad = good.clone();
        for b in &mut bad[at..at + 4096] {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *b = rng as u8;
        }
        std::fs::write(&db, &bad).unwrap();
        if let Some((code, text)) = start_or_exit(&s, &cfg, port, &[]) {
            refused += 1;
            assert!(!text.contains("panicked"), "{name}: {text}");
            assert_eq!(code, Some(1), "{name}: {text}");
            assert!(
                text.contains("is damaged") && text.contains("re-syncs the chain from its peers"),
                "{name}: {text}"
            );
            assert!(!text.contains("another `tendr` process"), "{name}: {text}");
        }
    }
    assert!(refused > 0, "no damage was noticed");
    std::fs::write(&db, &good).unwrap();
    assert!(
        start_or_exit(&s, &cfg, port, &[]).is_none(),
        "the intact store does not start"
    );
    eprintln!("damaged store of {len} bytes: {refused} of 4 refused with the way out, none panicked");
}

/// Issue 16: the double-sign guard lives beside the key, not in `data/`. A missing
/// `validator_state.json` next to a chain is refused (and `--rebuild-signing-state` rebuilds
/// it); wiping `data/` makes the node start over at height 1, where its guard refuses to sign
/// anything (before: it re-created block 1 and signed a second, conflicting chain).
#[test]
fn a_wiped_data_folder_cannot_make_a_validator_sign_again() {
    let mut s = Scratch::new("wiped");
    let port = base_port() + 7_500;
    let cfg = one_validator(&mut s, port, "0.2", 3);
    s.kill(1);
    let node = s.path("net/node1");
    let state_file = node.join("validator_state.json");
    let moved = node.join("validator_state.json.moved");
    std::fs::rename(&state_file, &moved).unwrap();
    let (code, text) = start_or_exit(&s, &cfg, port, &[]).expect("started without the signing state");
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("validator_state.json` is missing") && text.contains("--rebuild-signing-state"),
        "{text}"
    );
    assert!(start_or_exit(&s, &cfg, port, &["--rebuild-signing-state"]).is_none());
    let rebuilt = tendr_node::signing::read_state(&state_file).unwrap().unwrap();
    assert!(rebuilt.height >= 3, "{rebuilt:?}");
    // Run on, then wipe the data folder.
    spawn(&mut s, 1, &["start", "--config", &cfg]);
    let before = wait_for(&s, "more blocks", 30, || {
        status(port).filter(|st| st.latest_height >= 6)
    })
    .latest_height;
    s.kill(1);
    let signed = std::fs::read_to_string(&state_file).unwrap();
    // The issue's 0-byte store first, then no data folder at all.
    for wipe in ["a 0-byte tendr.redb", "no data folder"] {
        if wipe == "no data folder" {
            std::fs::remove_dir_all(node.join("data")).unwrap();
        } else {
            std::fs::write(node.join("data/tendr.redb"), b"").unwrap();
        }
        spawn(&mut s, 1, &["start", "--config", &cfg]);
        let st = wait_for(&s, "a refusal to sign", 30, || {
            status(port).filter(|st| st.warnings.iter().any(|w| w.contains("refused to sign")))
        });
        std::thread::sleep(Duration::from_secs(3));
        let st2 = status(port).unwrap();
        assert_eq!(st2.latest_height, 0, "{wipe}: the validator built a new chain: {st:?}");
        assert_eq!(std::fs::read_to_string(&state_file).unwrap(), signed, "{wipe}");
        let text = ok(&["status", "--config", &cfg]);
        assert!(text.contains("refused to sign at height 1"), "{wipe}: {text}");
        assert!(s.logs().contains("not signing"), "{}", s.logs());
        let full = s.full_logs();
        assert!(full.contains("emptied, wiped or replaced"), "{wipe}: not said at start");
        s.kill(1);
    }
    eprintln!(
        "validator at height {before}, store emptied or wiped: refuses to sign at height 1, state file unchanged"
    );
}

/// A small tmpfs mounted over `dir` (its files kept), unmounted on drop; `None` (with the
/// reason printed) where mounting is not permitted.
struct Tmpfs(PathBuf, PathBuf);

impl Tmpfs {
    fn over(dir: &Path, size: &str) -> Option<Tmpfs> {
        let keep = dir.with_extension("files");
        std::fs::rename(dir, &keep).unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output();
        let mounted = matches!(&o, Ok(o) if o.status.success());
        if !mounted {
            let why = match o {
                Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            eprintln!("SKIPPED: cannot mount a tmpfs ({why}); run as root to test a full disk");
        }
        for e in std::fs::read_dir(&keep).unwrap().flatten() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        mounted.then(|| Tmpfs(dir.to_path_buf(), dir.join("filler")))
    }

    fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(&self.1).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(&self.1).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Issue 16: a validator whose disk fills up. Before: it stayed at its height while `/health`
/// said ok, banned its honest peers ("did not serve the decided block of our height") and
/// did not recover until restarted. Now: it stops signing, says why in its log, `status` and
/// `/health` (503), bans nobody, and resumes by itself once space is freed; the others go on.
#[test]
fn a_full_disk_stops_signing_blames_no_peer_and_resumes() {
    let mut s = Scratch::new("full");
    let base = base_port() + 8_000;
    let out = s.path("net");
    testnet(&out, 4, base, "0.2");
    let Some(fs) = Tmpfs::over(&out.join("node4"), "24m") else {
        return;
    };
    let cfgs: Vec<String> = (1..=4)
        .map(|i| {
            out.join(format!("node{i}/tendermint_config.json"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let ports: Vec<u16> = (0..4).map(|i| base + i).collect();
    for (i, c) in cfgs.iter().enumerate() {
        spawn(&mut s, i + 1, &["start", "--config", c]);
    }
    wait_for(&s, "every node deciding", 60, || {
        ports
            .iter()
            .all(|p| status(*p).is_some_and(|st| st.latest_height >= 3))
            .then_some(())
    });
    fs.fill();
    let st = wait_for(&s, "node 4 to report its full disk", 60, || {
        status(ports[3]).filter(|st| st.unhealthy.is_some())
    });
    let why = st.unhealthy.clone().unwrap();
    assert!(why.contains("cannot write") && why.contains("does not sign"), "{why}");
    let health = rpc::request(rpc_addr(ports[3]), "GET", "/tendr/health", b"").unwrap();
    assert_eq!(health.code, 503, "{}", health.body);
    assert!(health.body.contains("not healthy"), "{}", health.body);
    // CometBFT's /health answers an error too (its clients and load balancers read it).
    let comet = rpc::request(rpc_addr(ports[3]), "GET", "/health", b"").unwrap();
    assert_ne!(comet.code, 200, "{}", comet.body);
    assert!(comet.body.contains("not healthy"), "{}", comet.body);
    let text = ok(&["status", "--config", &cfgs[3]]);
    assert!(text.contains("NOT HEALTHY"), "{text}");
    // The other three go on without it.
    let h1 = status(ports[0]).unwrap().latest_height;
    wait_for(&s, "the others to go on", 60, || {
        status(ports[0]).filter(|st| st.latest_height >= h1 + 10)
    });
    fs.free();
    let target = status(ports[0]).unwrap().latest_height;
    wait_for(&s, "node 4 to recover by itself", 90, || {
        status(ports[3]).filter(|st| st.unhealthy.is_none() && st.latest_height >= target)
    });
    let health = rpc::request(rpc_addr(ports[3]), "GET", "/tendr/health", b"").unwrap();
    assert_eq!(health.code, 200, "{}", health.body);
    let node4_log = || -> String {
        std::fs::read_dir(&s.dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("node4"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect()
    };
    wait_for(&s, "node 4 to sign again", 30, || {
        node4_log().contains("signing again").then_some(())
    });
    let full = s.full_logs();
    assert!(
        full.contains("cannot write") && full.contains("writes succeed again"),
        "{}",
        s.logs()
    );
    assert!(
        !full.contains("disconnected and banned"),
        "a peer was banned:\n{}",
        s.logs()
    );
    assert!(!full.contains("evidence:"), "a validator double-signed");
    assert!(!full.contains("panicked"), "{}", s.logs());
    s.kill(4);
    eprintln!(
        "node 4's disk full while the others decided {} blocks; it recovered by itself",
        target - h1
    );
}

/// Adds fields to a generated config (its closing brace replaced).
/// Writes the config of an observer `name` (not a validator) listening on `port`, whose seeds
/// are the nodes on `seeds`, in its own folder under `root`; the config's path.
fn observer_config(root: &Path, name: &str, port: u16, seeds: &[u16]) -> String {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("tendermint_config.json").to_string_lossy().into_owned();
    let seeds: Vec<String> = seeds
        .iter()
        .map(|p| format!(r#"{{"host": "127.0.0.1", "port": {p}}}"#))
        .collect();
    std::fs::write(
        &cfg,
        format!(
            r#"{{"node_id": "{name}", "host": "127.0.0.1", "port": {port}, "is_validator": false,
                "seed_nodes": [{}], "log_level": "info"}}"#,
            seeds.join(", ")
        ),
    )
    .unwrap();
    cfg
}

/// `tendr join` of a new node (number `i`) that state-syncs from the block it trusts:
/// `height` and `hash` as an operator reads them from a node's status.
fn join_trusting(s: &mut Scratch, i: usize, cfg: &str, genesis: &str, height: &str, hash: &str) {
    let args = [
        "join",
        "--config",
        cfg,
        "--genesis",
        genesis,
        "--trust-height",
        height,
        "--trust-hash",
        hash,
    ];
    spawn(s, i, &args);
}

fn with_fields(cfg: &str, fields: &str) {
    let text = std::fs::read_to_string(cfg).unwrap();
    let end = text.rfind('}').expect("a JSON object");
    let body = text[..end].trim_end().trim_end_matches(',');
    std::fs::write(cfg, format!("{body},\n  {fields}\n}}\n")).unwrap();
}

/// Issue 17: a validator that prunes (a snapshot every 20 heights, 30 blocks kept below it), and
/// a new node that joins with a trusted height and hash from its status: it restores the
/// snapshot (state from before the pruned heights included), block-syncs to the tip, and
/// follows the chain. A wrong trust hash restores nothing.
#[test]
fn a_new_node_state_syncs_past_pruned_blocks() {
    let mut s = Scratch::new("statesync");
    let port = base_port() + 7;
    let out = s.path("net");
    testnet(&out, 1, port, "0.5");
    let cfg1 = out.join("node1/tendermint_config.json").to_string_lossy().into_owned();
    with_fields(&cfg1, r#""snapshot_interval": 20, "retain_blocks": 30"#);
    spawn(&mut s, 1, &["start", "--config", &cfg1]);
    let early = wait_for(&s, "first blocks", 60, || {
        status(port).filter(|st| st.latest_height >= 2)
    });
    ok(&["tx", "early=before-the-pruned-heights", "--config", &cfg1, "--wait"]);
    let st = wait_for(&s, "pruned heights", 90, || {
        status(port).filter(|st| st.latest_height >= 40)
    });
    let call = rpc::get_json::<serde_json::Value>(rpc_addr(port), "/block?height=1");
    let text = format!("{call:?}");
    assert!(text.contains("is not available, lowest height is"), "{text}");

    // A node that joins without a trusted height cannot block-sync: the validator pruned
    // height 1. It answers with its snapshot, so the new node tells its operator to state-sync,
    // and keeps the validator as a peer (it used to ban it for not serving the block).
    {
        let p0 = port + 3;
        let cfg0 = observer_config(&s.dir, "node0", p0, &[port]);
        let genesis = out.join("node1/genesis.json").to_string_lossy().into_owned();
        spawn(&mut s, 0, &["join", "--config", &cfg0, "--genesis", &genesis]);
        let told = wait_for(&s, "the advice to state-sync", 30, || {
            status(p0).filter(|st| st.warnings.iter().any(|w| w.contains("--trust-height")))
        });
        assert_eq!(told.latest_height, 0, "{told:?}");
        std::thread::sleep(Duration::from_secs(5));
        let later = status(p0).unwrap();
        assert_eq!(later.peers.len(), 1, "the validator is still a peer: {later:?}");
        s.kill(0);
        assert!(
            !s.full_logs().contains("banned"),
            "nobody banned anybody: {}",
            s.full_logs()
        );
    }

    // A trusted block older than every snapshot offered proves none of them: the node says
    // so, and which height to trust instead.
    {
        let p4 = port + 4;
        let cfg4 = observer_config(&s.dir, "node4", p4, &[port]);
        let genesis = out.join("node1/genesis.json").to_string_lossy().into_owned();
        let (h, id) = (early.latest_height.to_string(), early.latest_block_id.clone().unwrap());
        join_trusting(&mut s, 4, &cfg4, &genesis, &h, &id);
        let told = wait_for(&s, "the advice to trust a newer block", 30, || {
            status(p4).filter(|st| {
                st.sync
                    .state_sync
                    .as_deref()
                    .is_some_and(|x| x.contains("newer trusted block"))
            })
        });
        assert_eq!(told.latest_height, 0, "{told:?}");
        s.kill(4);
    }

    // A node with a wrong trust hash restores nothing (every snapshot fails the check).
    let genesis = out.join("node1/genesis.json").to_string_lossy().into_owned();
    let root = s.dir.clone();
    let observer = |name: &str, p: u16| observer_config(&root, name, p, &[port]);
    let (port2, port3) = (port + 1, port + 2);
    let cfg2 = observer("node2", port2);
    let right = st.latest_block_id.clone().expect("a block id");
    let wrong = format!("{}{}", if right.starts_with('0') { "1" } else { "0" }, &right[1..]);
    let trust_height = st.latest_height.to_string();
    join_trusting(&mut s, 2, &cfg2, &genesis, &trust_height, &wrong);
    wait_for(&s, "the lying trust hash tried", 30, || {
        status(port2)
            .filter(|st| st.sync.state_sync.as_deref().is_some_and(|x| x.contains("looking")) && !st.peers.is_empty())
    });
    std::thread::sleep(Duration::from_secs(3));
    let still = status(port2).unwrap();
    assert_eq!(
        still.latest_height, 0,
        "nothing restored with a wrong trust hash: {still:?}"
    );
    s.kill(2);

    // The right hash, of a height read just now (as an operator would): restored, then block
    // sync to the tip, then the chain followed.
    let cfg3 = observer("node3", port3);
    let st = status(port).unwrap();
    let trust_height = st.latest_height.to_string();
    let right = st.latest_block_id.clone().expect("a block id");
    join_trusting(&mut s, 3, &cfg3, &genesis, &trust_height, &right);
    let port2 = port3;
    let cfg2 = cfg3;
    let synced = wait_for(&s, "state sync", 60, || {
        status(port2).filter(|st| st.sync.state_sync.as_deref().is_some_and(|x| x.starts_with("restored")))
    });
    assert!(synced.latest_height >= 30, "{synced:?}");
    let tip = status(port).unwrap().latest_height;
    wait_for(&s, "the tip", 60, || {
        status(port2).filter(|st| st.latest_height >= tip + 5)
    });
    assert_eq!(
        ok(&["query", "early", "--config", &cfg2]).trim(),
        "before-the-pruned-heights",
        "state from before the pruned heights came with the snapshot"
    );
    let (a, b) = (status(port).unwrap(), status(port2).unwrap());
    let h = a.latest_height.min(b.latest_height);
    let id = |p: u16| rpc::get_json::<serde_json::Value>(rpc_addr(p), &format!("/block?height={h}")).unwrap();
    let (x, y) = (id(port), id(port2));
    assert!(x["result"]["block_id"]["hash"].is_string(), "{x}");
    assert_eq!(
        x["result"]["block_id"], y["result"]["block_id"],
        "same block at height {h}"
    );
}

/// Issue 17: a validator offline for longer than its peers keep blocks (a snapshot every 20
/// heights, 20 blocks kept below it) cannot block-sync back; restarted with a trusted height and
/// hash from another validator, it restores a snapshot, catches up and votes again (its
/// precommit is in later commits).
#[test]
fn a_validator_offline_longer_than_peers_keep_rejoins_through_state_sync_and_votes() {
    let mut s = Scratch::new("rejoin");
    let base = base_port() + 3_000;
    let out = s.path("net");
    testnet(&out, 4, base, "0.3");
    let cfgs: Vec<String> = (1..=4)
        .map(|i| {
            let c = out
                .join(format!("node{i}/tendermint_config.json"))
                .to_string_lossy()
                .into_owned();
            with_fields(
                &c,
                r#""snapshot_interval": 20, "retain_blocks": 20,
  "timeouts": {"propose_ms": 800, "prevote_ms": 400, "precommit_ms": 400, "delta_ms": 200, "rebroadcast_ms": 400}"#,
            );
            c
        })
        .collect();
    let ports: Vec<u16> = (0..4).map(|i| base + i).collect();
    for (i, c) in cfgs.iter().enumerate() {
        spawn(&mut s, i + 1, &["start", "--config", c]);
    }
    wait_for(&s, "blocks", 60, || status(ports[0]).filter(|st| st.latest_height >= 3));
    s.kill(4);
    let down_at = status(ports[0]).unwrap().latest_height;
    wait_for(&s, "peers to prune what node 4 misses", 120, || {
        status(ports[0]).filter(|st| st.latest_height >= down_at + 70)
    });
    let st = status(ports[0]).unwrap();
    let (h, id) = (st.latest_height.to_string(), st.latest_block_id.clone().unwrap());
    spawn(
        &mut s,
        4,
        &["start", "--config", &cfgs[3], "--trust-height", &h, "--trust-hash", &id],
    );
    let back = wait_for(&s, "node 4 restored", 60, || {
        status(ports[3]).filter(|st| st.sync.state_sync.as_deref().is_some_and(|x| x.starts_with("restored")))
    });
    assert!(back.latest_height > down_at + 40, "{back:?}");
    let me = validator_address(&out.join("node4"))
        .trim_start_matches("0x")
        .to_uppercase();
    let from = status(ports[0]).unwrap().latest_height + 1;
    wait_for(&s, "node 4's precommit in a commit", 60, || {
        let tip = status(ports[0])?.latest_height;
        (from..=tip).find(|h| {
            let c = rpc::get_json::<serde_json::Value>(rpc_addr(ports[0]), &format!("/commit?height={h}"));
            c.ok().is_some_and(|c| {
                let sigs = &c["result"]["signed_header"]["commit"]["signatures"];
                sigs.as_array().is_some_and(|a| {
                    a.iter().any(|x| {
                        x["validator_address"]
                            .as_str()
                            .is_some_and(|v| v.eq_ignore_ascii_case(&me))
                    })
                })
            })
        })
    });
}
