//! Issue 14: tendr's RPC checked from outside, by CometBFT's own Rust client
//! (`tendermint-rpc`, crates.io) against four validators on loopback; and the RPC under
//! hostile clients (a stalled body, 2,000 idle connections, an oversized body, a 1 MB URL)
//! still serving everyone else promptly, with bounded memory.

use super::*;
use futures_util::StreamExt;
use std::io::{Read, Write};
use std::net::TcpStream;
use tendermint::block::Height as TmHeight;
use tendermint_rpc::client::CompatMode;
use tendermint_rpc::event::EventData;
use tendermint_rpc::query::EventType;
use tendermint_rpc::{Client, HttpClient, HttpClientUrl, Paging, SubscriptionClient, WebSocketClient};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn client(port: u16) -> HttpClient {
    let url: HttpClientUrl = format!("http://{}", rpc_addr(port)).parse().unwrap();
    HttpClient::builder(url).compat_mode(CompatMode::V0_38).build().unwrap()
}

fn h(n: u64) -> TmHeight {
    TmHeight::try_from(n).unwrap()
}

/// Starts an `n`-validator testnet at `port`; returns the config paths.
fn start_testnet(s: &mut Scratch, n: usize, port: u16, block_time: &str) -> Vec<String> {
    let out = s.path("net");
    let args = [
        "testnet",
        "--validators",
        &n.to_string(),
        "--out",
        out.to_str().unwrap(),
    ];
    ok(&[
        &args[..],
        &["--base-port", &port.to_string(), "--target-block-time", block_time],
    ]
    .concat());
    let cfgs: Vec<String> = (1..=n)
        .map(|i| {
            out.join(format!("node{i}/tendermint_config.json"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for (i, cfg) in cfgs.iter().enumerate() {
        spawn(s, i + 1, &["start", "--config", cfg]);
    }
    cfgs
}

#[test]
fn cometbft_client_reads_and_writes_four_validators() {
    let mut s = Scratch::new("cometbft");
    let base = base_port() + 7_000;
    let ports: Vec<u16> = (0..4).map(|i| base + i).collect();
    start_testnet(&mut s, 4, base, "0.3");
    for p in &ports {
        wait_for(&s, "blocks on every node", 60, || {
            status(*p).filter(|st| st.latest_height >= 3 && st.peers.len() == 3)
        });
    }
    let rt = runtime();
    let c = client(ports[0]);
    rt.block_on(async {
        c.health().await.expect("health");
        let st = c.status().await.expect("status");
        let ours = status(ports[0]).unwrap();
        assert_eq!(st.node_info.network.as_str(), ours.chain_id);
        assert!(st.sync_info.latest_block_height.value() >= 3);
        assert!(!st.sync_info.catching_up);
        assert_eq!(st.validator_info.power.value(), 10);
        assert!(st.validator_info.pub_key.secp256k1().is_some(), "a secp256k1 key");

        let net = c.net_info().await.expect("net_info");
        assert_eq!(net.n_peers, 3);
        assert_eq!(net.peers.len(), 3);

        // The vote sets of the height being decided, read by the client's own parser of
        // CometBFT's vote summaries. A height holds votes only from its proposal to its
        // decision, a few milliseconds on loopback (the 0.3 s between blocks is spent waiting
        // for the next height, with no votes yet, as in CometBFT): ask often, for up to 10 s.
        let mut votes = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let cs = c.consensus_state().await.expect("consensus_state");
            votes = cs
                .round_state
                .height_vote_set
                .iter()
                .flat_map(|r| r.prevotes.iter().chain(&r.precommits))
                .filter_map(|v| match v {
                    tendermint_rpc::endpoint::consensus_state::RoundVote::Vote(s) => Some(s.clone()),
                    tendermint_rpc::endpoint::consensus_state::RoundVote::Nil => None,
                })
                .collect();
            if !votes.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(
            !votes.is_empty(),
            "consensus_state shows no vote of the height being decided"
        );
        assert!(votes.iter().all(|v| (0..4).contains(&v.validator_index)), "{votes:?}");

        let latest = c.latest_block().await.expect("latest block");
        let top = latest.block.header.height.value();
        assert!(top >= 3);
        let vals = c.validators(h(top), Paging::All).await.expect("validators");
        assert_eq!(vals.validators.len(), 4);
        assert_eq!(vals.total, 4);
        assert!(vals.validators.iter().all(|v| v.power.value() == 10));
        let paged = c
            .validators(
                h(top),
                Paging::Specific {
                    page_number: 2usize.into(),
                    per_page: 3u8.into(),
                },
            )
            .await
            .expect("validators, page 2 of 3 per page");
        assert_eq!(paged.validators.len(), 1);

        // The chain links: block h+1 names block h, and the commit of h is for block h.
        let b2 = c.block(h(2)).await.expect("block 2");
        let b3 = c.block(h(3)).await.expect("block 3");
        assert_eq!(b3.block.header.last_block_id.unwrap().hash, b2.block_id.hash);
        assert_eq!(b2.block.header.height.value(), 2);
        let commit = c.commit(h(2)).await.expect("commit 2");
        assert_eq!(commit.signed_header.commit.block_id.hash, b2.block_id.hash);
        assert!(commit.signed_header.commit.signatures.len() >= 3, "a quorum of 4 signs");
        assert_eq!(commit.signed_header.header.height.value(), 2);

        let chain = c.blockchain(h(1), h(3)).await.expect("blockchain");
        let heights: Vec<u64> = chain.block_metas.iter().map(|m| m.header.height.value()).collect();
        assert_eq!(heights, vec![3, 2, 1]);
        assert_eq!(chain.block_metas[1].block_id.hash, b2.block_id.hash);

        // A transaction through node 1, committed, then read back everywhere.
        let done = c
            .broadcast_tx_commit(b"cometbft=yes".to_vec())
            .await
            .expect("broadcast_tx_commit");
        assert!(done.check_tx.code.is_ok(), "{:?}", done.check_tx);
        assert!(done.tx_result.code.is_ok(), "{:?}", done.tx_result);
        let at = done.height.value();
        assert!(at > 0);
        let found = c.tx(done.hash, false).await.expect("tx");
        assert_eq!(found.height.value(), at);
        assert_eq!(found.tx, b"cometbft=yes".to_vec());
        for p in &ports {
            let other = client(*p);
            let mut tries = 0;
            let q = loop {
                let q = other
                    .abci_query(None, b"cometbft".to_vec(), None, false)
                    .await
                    .expect("abci_query");
                if q.code.is_ok() || tries > 50 {
                    break q;
                }
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            assert!(q.code.is_ok(), "node at {p}: {q:?}");
            assert_eq!(q.value, b"yes".to_vec(), "node at {p}");
            assert!(q.height.value() >= at);
        }
        let sync = c
            .broadcast_tx_sync(b"second=tx".to_vec())
            .await
            .expect("broadcast_tx_sync");
        assert!(sync.code.is_ok());
        let refused = c
            .broadcast_tx_sync(b"no equals sign".to_vec())
            .await
            .expect("broadcast_tx_sync");
        assert!(refused.code.is_err(), "the application refuses it: {refused:?}");
        let info = c.abci_info().await.expect("abci_info");
        assert!(info.last_block_height.value() >= at);
        let g = c.genesis::<serde_json::Value>().await.expect("genesis");
        assert_eq!(g.validators.len(), 4);

        // Events: a NewBlock subscription on node 2 receives consecutive heights, and a Tx
        // subscription the transaction sent to node 3.
        let url = format!("ws://{}/websocket", rpc_addr(ports[1])).parse().unwrap();
        let (ws, driver) = WebSocketClient::builder(url)
            .compat_mode(CompatMode::V0_38)
            .build()
            .await
            .expect("websocket");
        let driving = tokio::spawn(driver.run());
        let mut blocks = ws
            .subscribe(EventType::NewBlock.into())
            .await
            .expect("subscribe NewBlock");
        // Only the transaction sent below: `second=tx` may also be committed meanwhile.
        let want = tendr_core::crypto::sha256(b"event=seen").to_hex().to_uppercase();
        let query = tendermint_rpc::query::Query::from(EventType::Tx).and_eq("tx.hash", want);
        let mut txs = ws.subscribe(query).await.expect("subscribe Tx with tx.hash");
        let sent = client(ports[2])
            .broadcast_tx_sync(b"event=seen".to_vec())
            .await
            .unwrap();
        assert!(sent.code.is_ok());
        let (mut heights, mut ids) = (Vec::new(), Vec::new());
        while heights.len() < 4 {
            let ev = tokio::time::timeout(Duration::from_secs(20), blocks.next())
                .await
                .expect("a NewBlock event within 20 s")
                .expect("the subscription is open")
                .expect("an event");
            match ev.data {
                EventData::NewBlock {
                    block: Some(b),
                    block_id,
                    ..
                } => {
                    heights.push(b.header.height.value());
                    ids.push(block_id.hash);
                }
                other => panic!("not a NewBlock: {other:?}"),
            }
        }
        assert!(heights.windows(2).all(|w| w[1] == w[0] + 1), "{heights:?}");
        let same = c.block(h(heights[0])).await.unwrap();
        assert_eq!(same.block_id.hash, ids[0], "the event's block is the chain's");
        let ev = tokio::time::timeout(Duration::from_secs(20), txs.next())
            .await
            .expect("a Tx event within 20 s")
            .unwrap()
            .unwrap();
        match ev.data {
            EventData::Tx { tx_result } => assert_eq!(tx_result.tx, b"event=seen".to_vec()),
            other => panic!("not a Tx: {other:?}"),
        }
        ws.close().unwrap();
        let _ = driving.await;
    });
    // CometBFT's metric names, with the chain id; mempool bytes are real.
    let chain = status(ports[0]).unwrap().chain_id;
    let m = rpc::request(rpc_addr(ports[0]), "GET", "/metrics", b"").unwrap().body;
    let label = format!("{{chain_id=\"{chain}\"}}");
    for name in [
        "consensus_height",
        "consensus_validators",
        "consensus_total_txs",
        "consensus_block_interval_seconds_count",
        "p2p_peers",
        "mempool_size_bytes",
    ] {
        assert!(
            m.contains(&format!("cometbft_{name}{label}")),
            "no cometbft_{name} in:\n{m}"
        );
    }
    assert!(m.contains(&format!("cometbft_consensus_validators{label} 4")), "{m}");
    assert!(m.contains(&format!("cometbft_p2p_peers{label} 3")), "{m}");
    assert!(m.contains("tendr_commit_latency_seconds_count"), "{m}");
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    memory_kib(pid, "VmRSS")
}

/// A memory figure of process `pid` from `/proc/<pid>/status` (`VmRSS`, or `VmHWM`: the peak
/// of the resident set), in KiB.
pub(crate) fn memory_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// How long one `GET /status` takes, or what went wrong.
fn served_in(addr: SocketAddr) -> Result<Duration, String> {
    let t0 = Instant::now();
    let r = rpc::request(addr, "GET", "/status", b"")?;
    if r.code != 200 {
        return Err(format!("status {}: {}", r.code, r.body));
    }
    Ok(t0.elapsed())
}

/// A client connection from 127.0.0.2: its ephemeral port is taken on that address, so the
/// 2,000 of them cannot take a port another test's node is about to listen on at 127.0.0.1.
fn connect(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into()).unwrap();
    s.connect(&addr.into()).unwrap();
    let c: TcpStream = s.into();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c
}

/// The status line of the answer on `c` (empty when the server closed without one).
fn answer(c: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let _ = c.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).lines().next().unwrap_or("").to_string()
}

#[test]
fn hostile_clients_cannot_stop_the_rpc() {
    let mut s = Scratch::new("rpc-hostile");
    let port = base_port() + 7_005;
    // A connection limit just above the 2,000 idle connections below.
    let cfg = one_node_testnet(&s, port, "0.2");
    let mut c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c["rpc_limits"] = serde_json::json!({"max_open_connections": 2_020});
    std::fs::write(&cfg, c.to_string()).unwrap();
    spawn(&mut s, 1, &["start", "--config", cfg.to_str().unwrap()]);
    wait_for(&s, "blocks", 30, || status(port).filter(|st| st.latest_height >= 1));
    let addr = rpc_addr(port);
    let pid = s.children[&1].id();
    let before = rss_kib(pid);
    let quick = Duration::from_secs(1);

    // A client that promises a body and stalls.
    let mut stalled = connect(addr);
    stalled
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n{")
        .unwrap();
    assert!(served_in(addr).unwrap() < quick, "served despite the stalled client");

    // 2,000 idle connections.
    let idle: Vec<TcpStream> = (0..2_000).map(|_| connect(addr)).collect();
    let during_idle = served_in(addr).unwrap();
    assert!(
        during_idle < quick,
        "served beside 2,000 idle connections: {during_idle:?}"
    );
    let rss_idle = rss_kib(pid);

    // Beyond the connection limit: refused at once with 503, not queued.
    let extra: Vec<TcpStream> = (0..40).map(|_| connect(addr)).collect();
    let mut refused = 0;
    for mut c in &extra {
        c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut b = [0u8; 64];
        if matches!(c.read(&mut b), Ok(n) if String::from_utf8_lossy(&b[..n]).contains(" 503 ")) {
            refused += 1;
        }
    }
    assert!(
        refused >= 15,
        "only {refused} of 40 connections beyond the limit got 503"
    );
    drop(extra);
    std::thread::sleep(Duration::from_millis(200));

    // An oversized body is refused from its Content-Length, before it is sent.
    let mut big = connect(addr);
    big.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
        .unwrap();
    let line = answer(&mut big);
    assert!(line.contains(" 413 "), "{line}");
    // One that lies about its length is cut at the limit.
    let mut chunked = connect(addr);
    chunked
        .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for _ in 0..40 {
        let chunk = vec![b'a'; 32 << 10];
        let head = format!("{:x}\r\n", chunk.len());
        if chunked.write_all(head.as_bytes()).is_err()
            || chunked.write_all(&chunk).is_err()
            || chunked.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let line = answer(&mut chunked);
    assert!(line.is_empty() || line.contains(" 413 "), "{line}");

    // A 1 MB URL: refused (431: it does not fit the head buffer), not echoed.
    let mut long = connect(addr);
    let url = format!("GET /status?{} HTTP/1.1\r\nHost: x\r\n\r\n", "x".repeat(1 << 20));
    let _ = long.write_all(url.as_bytes());
    let line = answer(&mut long);
    assert!(
        line.is_empty() || line.contains(" 431 ") || line.contains(" 414 "),
        "{line}"
    );

    let during = served_in(addr).unwrap();
    assert!(during < quick, "served during all of it: {during:?}");
    let rss_during = rss_kib(pid);

    // The stalled body times out with 408; idle connections are closed by the server.
    let line = answer(&mut stalled);
    assert!(line.contains(" 408 "), "{line}");
    let mut one_idle = idle.into_iter().next().unwrap();
    let mut b = [0u8; 1];
    assert_eq!(
        one_idle.read(&mut b).unwrap_or(0),
        0,
        "the server closes idle connections"
    );
    drop(one_idle);
    std::thread::sleep(Duration::from_secs(1));
    let after = served_in(addr).unwrap();
    let rss_after = rss_kib(pid);
    eprintln!(
        "RPC under hostile clients: RSS before {before} KiB, with 2,000 idle connections {rss_idle} KiB, \
         during {rss_during} KiB, after {rss_after} KiB; /status answered in {during_idle:?} (idle), \
         {during:?} (during), {after:?} (after)"
    );
    assert!(
        rss_during < before + 100 * 1024,
        "RSS grew from {before} to {rss_during} KiB"
    );
}

/// `kvstore-rs`, the key-value ABCI application of the `tendermint-abci` crate: `$KVSTORE_RS`,
/// or where `.ci/run` installs it. Missing, the test fails and says how to get it.
fn kvstore_rs() -> PathBuf {
    let path = std::env::var_os("KVSTORE_RS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/abci-tools/bin/kvstore-rs"));
    assert!(
        path.is_file(),
        "kvstore-rs not found at {}: install it with `cargo install tendermint-abci --version 0.41.0 \
         --features binary,client,kvstore-app --locked --root target/abci-tools` (as .ci/run does), \
         or set KVSTORE_RS to its path",
        path.display()
    );
    path
}

/// Starts `kvstore-rs` on `port` as child `key` of `s`, and waits until it listens.
fn start_kvstore(s: &mut Scratch, key: usize, port: u16) {
    let log = std::fs::File::create(s.path(&format!("kvstore{key}-{}.log", s.children.len()))).unwrap();
    let child = Command::new(kvstore_rs())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    s.children.insert(key, child);
    wait_for(s, "kvstore-rs to listen", 10, || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
}

/// Polls `abci_query` of `key` on the node at `port` until it finds `want`.
async fn query_until(port: u16, key: &[u8], want: &[u8]) -> u64 {
    let c = client(port);
    for _ in 0..150 {
        let q = c.abci_query(None, key.to_vec(), None, false).await.expect("abci_query");
        if q.code.is_ok() && q.value == want {
            return q.height.value();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "node at {port}: `{}` never read `{}`",
        String::from_utf8_lossy(key),
        String::from_utf8_lossy(want)
    );
}

/// Issue 14, item 3: four validators, each running its own `kvstore-rs` (the ABCI application of
/// the `tendermint-abci` crate, a separate process) as its application; a transaction broadcast
/// on one node is queryable on all. Then one node's application dies: that node says so and
/// stalls while the other three go on; with a fresh application and a restart it replays its
/// stored blocks into it and catches up.
#[test]
fn four_validators_run_the_kvstore_rs_abci_application() {
    let mut s = Scratch::new("abci");
    let base = base_port() + 8_500;
    let app_base = base_port() + 8_600;
    let ports: Vec<u16> = (0..4).map(|i| base + i).collect();
    let out = s.path("net");
    ok(&[
        "testnet",
        "--validators",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--base-port",
        &base.to_string(),
        "--target-block-time",
        "0.3",
        "--proxy-app-base-port",
        &app_base.to_string(),
    ]);
    let cfgs: Vec<String> = (1..=4)
        .map(|i| {
            out.join(format!("node{i}/tendermint_config.json"))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for i in 0..4 {
        start_kvstore(&mut s, 11 + i, app_base + i as u16);
    }
    for (i, cfg) in cfgs.iter().enumerate() {
        spawn(&mut s, i + 1, &["start", "--config", cfg]);
    }
    for p in &ports {
        wait_for(&s, "blocks on every node", 60, || {
            status(*p).filter(|st| st.latest_height >= 3 && st.peers.len() == 3)
        });
    }
    let rt = runtime();
    rt.block_on(async {
        let c = client(ports[0]);
        let done = c
            .broadcast_tx_commit(b"abci=works".to_vec())
            .await
            .expect("broadcast_tx_commit");
        assert!(done.check_tx.code.is_ok(), "{:?}", done.check_tx);
        assert!(done.tx_result.code.is_ok(), "{:?}", done.tx_result);
        let at = done.height.value();
        for p in &ports {
            assert!(query_until(*p, b"abci", b"works").await >= at, "node at {p}");
            let info = client(*p).abci_info().await.expect("abci_info");
            assert_eq!(
                info.data, "kvstore-rs",
                "node at {p} answers with its application's Info"
            );
            assert!(info.last_block_height.value() >= at, "node at {p}: {info:?}");
        }
        let sync = client(ports[2]).broadcast_tx_sync(b"second=tx".to_vec()).await.unwrap();
        assert!(sync.code.is_ok(), "{sync:?}");
        query_until(ports[0], b"second", b"tx").await;
    });

    // Node 4's application dies: node 4 names it in its log and stops at its height; the
    // other three (3/4 of the power) go on.
    s.kill(14);
    let stuck = wait_for(&s, "node 4 to notice its application is gone", 30, || {
        s.full_logs()
            .contains(&format!("proxy_app `tcp://127.0.0.1:{}`", app_base + 3))
            .then(|| status(ports[3]))
            .flatten()
    });
    let h4 = stuck.latest_height;
    wait_for(&s, "the other three to go on", 30, || {
        status(ports[0]).filter(|st| st.latest_height >= h4 + 5)
    });
    std::thread::sleep(Duration::from_secs(1));
    let still = status(ports[3]).unwrap().latest_height;
    assert!(
        still <= h4 + 1,
        "node 4 went on from {h4} to {still} without its application"
    );

    // A fresh application (height 0) and a restart: node 4 replays its stored blocks into it,
    // catches up and serves the state written before the application died.
    s.kill(4);
    start_kvstore(&mut s, 14, app_base + 3);
    spawn(&mut s, 4, &["start", "--config", &cfgs[3]]);
    let top = status(ports[0]).unwrap().latest_height;
    wait_for(&s, "node 4 to catch up", 60, || {
        status(ports[3]).filter(|st| st.latest_height >= top)
    });
    rt.block_on(async {
        query_until(ports[3], b"abci", b"works").await;
        let sent = client(ports[3])
            .broadcast_tx_sync(b"after=restart".to_vec())
            .await
            .unwrap();
        assert!(sent.code.is_ok(), "{sent:?}");
        for p in &ports {
            query_until(*p, b"after", b"restart").await;
        }
    });
}
