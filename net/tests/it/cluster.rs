//! A cluster of real nodes on loopback, each with its own QUIC endpoint, inside one test
//! process; an in-memory `Storage` that outlives its node (restarts); a raw QUIC client for
//! misbehaving peers.

#![allow(dead_code)] // helpers shared by the test modules; not every one uses all of them

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tendr_core::chain::ChainState;
use tendr_core::crypto::sha256;
use tendr_core::traits::*;
use tendr_core::*;
use tendr_kv::KvApp;
use tendr_net::runtime::{drive, Command, NodeView, SystemClock};
use tendr_net::{Limits, NetConfig, NetHandle, Transport};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub const CHAIN: &str = "net-test";

/// Storage shared across restarts of one node.
pub type MemStore = MemStorage;

pub fn keys(n: usize) -> Vec<PrivateKey> {
    (0..n)
        .map(|i| PrivateKey::from_seed(format!("net-validator-{i}").as_bytes()))
        .collect()
}

pub fn genesis(chain: &str, keys: &[PrivateKey]) -> ChainState {
    let vs = ValidatorSet::new(keys.iter().map(|k| (k.public_key(), VotingPower(1))).collect()).unwrap();
    ChainState::genesis(chain, vs, KvApp::new(chain).initial_app_hash(), TimeMs(0))
}

pub fn genesis_hash(g: &ChainState) -> Hash {
    sha256(&codec::encode(&(g.chain_id.as_str(), g.validators.hash(), g.app_hash)))
}

pub fn timeouts(commit_ms: u64) -> TimeoutConfig {
    TimeoutConfig {
        propose_ms: 400,
        propose_delta_ms: 100,
        prevote_ms: 200,
        prevote_delta_ms: 100,
        precommit_ms: 200,
        precommit_delta_ms: 100,
        commit_ms,
        rebroadcast_ms: 300,
        sync_retry_ms: 100,
    }
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

pub struct Spec {
    pub node_key: PrivateKey,
    /// Validator key given to the engine (`None`: observer).
    pub validator_key: Option<PrivateKey>,
    pub genesis: ChainState,
    pub genesis_hash: Hash,
    pub listen: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    pub commit_ms: u64,
    /// Engine timeouts; default: [`timeouts`] with `commit_ms`.
    pub timeouts: Option<TimeoutConfig>,
    pub limits: Limits,
    pub store: MemStore,
    pub max_peers: usize,
    /// Latency, loss, ... added to what this node sends (benchmarks).
    pub link_shaping: Option<tendr_net::shaping::LinkShaping>,
    /// Whether a node whose node key is not its validator key shows the validator's proof
    /// in its hello (as real nodes do).
    pub prove_validator: bool,
}

impl Spec {
    pub fn validator(key: &PrivateKey, genesis: &ChainState, seeds: Vec<SocketAddr>) -> Spec {
        Spec {
            node_key: key.clone(),
            validator_key: Some(key.clone()),
            genesis_hash: genesis_hash(genesis),
            genesis: genesis.clone(),
            listen: loopback(),
            seeds,
            commit_ms: 10,
            timeouts: None,
            limits: test_limits(),
            store: MemStore::default(),
            max_peers: 32,
            link_shaping: None,
            prove_validator: true,
        }
    }
}

pub fn test_limits() -> Limits {
    Limits {
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(2),
        pex_interval: Duration::from_millis(500),
        dial_interval: Duration::from_millis(100),
        ..Limits::default()
    }
}

pub type OnEvent = Box<dyn FnMut(&NodeEvent) + Send>;

pub struct TestNode {
    pub id: PeerId,
    pub addr: SocketAddr,
    pub store: MemStore,
    pub transport: Option<Transport>,
    pub net: NetHandle,
    pub cmd: mpsc::Sender<Command>,
    pub driver: JoinHandle<()>,
}

pub async fn start(spec: Spec, on_event: Option<OnEvent>) -> TestNode {
    let cfg = NetConfig {
        listen: spec.listen,
        node_key: spec.node_key.clone(),
        chain_id: spec.genesis.chain_id.clone(),
        genesis_hash: spec.genesis_hash,
        seeds: spec.seeds,
        max_peers: spec.max_peers,
        is_validator: spec.validator_key.is_some(),
        advertise: None,
        link_shaping: spec.link_shaping.clone(),
        validator_proof: spec
            .validator_key
            .as_ref()
            .filter(|_| spec.prove_validator)
            .map(|k| tendr_net::wire::ValidatorProof::sign(k, &spec.genesis.chain_id, &spec.node_key.public_key())),
    };
    let (transport, incoming) = start_transport(cfg, spec.limits).await;
    let net = transport.handle();
    let (clock, timers) = SystemClock::new();
    let t = spec.timeouts.unwrap_or_else(|| timeouts(spec.commit_ms));
    let ecfg = EngineConfig::new(&spec.genesis.chain_id, t);
    let node = Node::new(
        ecfg,
        spec.validator_key,
        spec.genesis.clone(),
        clock,
        net.clone(),
        spec.store.clone(),
        KvApp::new(&spec.genesis.chain_id),
        Box::new(CachingVerifier::new()),
    )
    .expect("node builds from its store");
    let (cmd, commands) = mpsc::channel(1024);
    let mut on_event = on_event.unwrap_or_else(|| Box::new(|_| {}));
    let driver = tokio::spawn(drive(node, incoming, timers, commands, move |e| on_event(e)));
    TestNode {
        id: spec.node_key.address(),
        addr: transport.local_addr(),
        store: spec.store,
        transport: Some(transport),
        net,
        cmd,
        driver,
    }
}

/// Starts a transport; a restart on a given port waits for the port (another process may hold
/// it for a moment on a busy machine) and takes a fresh one after 10 s.
async fn start_transport(mut cfg: NetConfig, limits: Limits) -> (Transport, mpsc::Receiver<tendr_net::Incoming>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match Transport::start_with(cfg.clone(), limits.clone()).await {
            Ok(x) => return x,
            Err(tendr_net::NetError::Bind { addr, source }) if addr.port() != 0 => {
                if tokio::time::Instant::now() > deadline {
                    eprintln!("port of {addr} still taken ({source}); restarting on a fresh port");
                    cfg.listen.set_port(0);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("transport starts: {e}"),
        }
    }
}

impl TestNode {
    pub fn height(&self) -> u64 {
        self.store.height()
    }

    /// Stops driver and transport; returns the store and address for a restart.
    pub async fn stop(self) -> (MemStore, SocketAddr) {
        let TestNode {
            store,
            addr,
            transport,
            net,
            cmd,
            driver,
            ..
        } = self;
        let _ = cmd.send(Command::Shutdown).await;
        let _ = driver.await;
        drop(net); // the socket is released with the last handle
        if let Some(t) = transport {
            t.shutdown().await;
        }
        (store, addr)
    }

    pub async fn submit(&self, tx: Vec<u8>) -> Result<Hash, String> {
        let (reply, rx) = oneshot::channel();
        self.cmd
            .send(Command::SubmitTx(tx, reply))
            .await
            .map_err(|e| e.to_string())?;
        rx.await.map_err(|e| e.to_string())?
    }

    /// Runs `f` on the node inside its driver task.
    pub async fn query<T: Send + 'static>(&self, f: impl FnOnce(&dyn NodeView) -> T + Send + 'static) -> T {
        let (tx, rx) = oneshot::channel();
        let q = Box::new(move |v: &dyn NodeView| {
            let _ = tx.send(f(v));
        });
        self.cmd.send(Command::Query(q)).await.expect("driver alive");
        rx.await.expect("driver answers")
    }
}

/// Waits until `f` holds, polling; panics with `what` after `secs`.
pub async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts `n` validators; node `i > 0` has node 0 as its only seed (peer exchange does the rest).
pub async fn cluster(n: usize) -> (Vec<TestNode>, Vec<PrivateKey>, ChainState) {
    let keys = keys(n);
    let g = genesis(CHAIN, &keys);
    let first = start(Spec::validator(&keys[0], &g, vec![]), None).await;
    let seed = first.addr;
    let mut nodes = vec![first];
    for k in &keys[1..] {
        nodes.push(start(Spec::validator(k, &g, vec![seed]), None).await);
    }
    (nodes, keys, g)
}

/// Resident set size of this process, in KiB (Linux).
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TENDR_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// Runs the test `path` alone in a child process (this test binary, `--exact`), so that a
/// measurement of the process (RSS) sees that test's nodes only, not the tests running beside
/// it. Returns true in the parent, after asserting the child passed (its output is printed);
/// false in the child, which then runs the test body.
pub fn run_alone(path: &str) -> bool {
    const CHILD: &str = "TENDR_NET_TEST_ALONE";
    if std::env::var_os(CHILD).is_some() {
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([path, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("the test binary runs");
    eprintln!(
        "--- {path} in a child process:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{path} failed in its child process ({})",
        out.status
    );
    let ran = String::from_utf8_lossy(&out.stdout).contains("1 passed");
    assert!(ran, "the child process did not run {path}");
    true
}

/// The peak RSS of this process (KiB) over the life of the returned sampler.
pub struct RssPeak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssPeak {
    pub fn start() -> RssPeak {
        let peak = Arc::new(AtomicU64::new(rss_kib()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        RssPeak {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed).max(rss_kib())
    }
}
