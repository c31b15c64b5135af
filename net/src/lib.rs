//! `tendr-net`: the real-world [`Network`](tendr_core::traits::Network) of tendr — QUIC between
//! processes and machines, for the same `Node` driver and engine the simulator runs.
//!
//! What it does: quinn endpoints over TLS 1.3 (rustls, ring); a node-key identity proven on
//! every connection by a k256 signature over the TLS exporter of that very session; chain id,
//! genesis hash and protocol version checked in a hello; length-prefixed frames with a hard
//! maximum, decoded by one fallible function; bounded per-peer send queues with consensus
//! messages on their own higher-priority stream; deduplication and relay of consensus messages
//! so that a partial mesh still delivers votes everywhere; seed nodes, peer exchange, reconnect
//! with exponential backoff and jitter, one connection per pair of peers, a peer cap; per-peer
//! rate limits and bans. [`runtime`] runs a core `Node` on tokio against this transport.
//!
//! What it does not do: consensus-level catch-up (the engine asks for decided blocks with
//! `RequestDecided`, the node answers from storage; this crate only carries the messages),
//! storage, the application, RPC. No plaintext mode exists.
//!
//! Memory bounds, per node: each peer holds at most one QUIC receive window (16 MiB) and one
//! frame buffer per stream (two streams, frames of at most `MAX_MESSAGE_BYTES` + 1, allocated
//! only after the length is checked), and at most `Limits::queue_bytes` in its send queues;
//! towards the driver wait at most `incoming_queue` small messages (16 KiB each at most: 64 MiB
//! in the worst case, a few hundred KiB of votes in practice), `bulk_inbox` large ones (8 MiB
//! each at most) and `tx_inbox_bytes` of transactions (16 MiB); the dedup set, the address
//! book, the ban lists and the far-future claims have fixed caps. Peers are capped by
//! `max_peers`, handshakes in progress by a constant. The `attacks` integration test measures
//! the process's peak RSS while hundreds of MiB of floods arrive.
//!
//! How to use it: [`Transport::start`] binds the endpoint and starts dialing the seeds; give
//! [`Transport::handle`] to the `Node` as its network, and feed the returned receiver of
//! [`Incoming`] to [`runtime::drive`].
#![forbid(unsafe_code)]

pub mod claims;
mod conn;
pub mod limit;
pub mod runtime;
pub mod shaping;
pub mod tls;
pub mod wire;

pub use limit::Limits;

use bytes::Bytes;
use limit::{BanList, Jitter, SeenSet};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tendr_core::{Address, Hash, Message, PeerId, PrivateKey};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wire::{HelloBody, PexEntry};

/// How a node takes part in the network.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Bind address (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Node identity; `PeerId = node_key.address()`.
    pub node_key: PrivateKey,
    pub chain_id: String,
    /// Peers with another genesis hash are refused.
    pub genesis_hash: Hash,
    pub seeds: Vec<SocketAddr>,
    pub max_peers: usize,
    /// Advertised role; observers don't vote.
    pub is_validator: bool,
    /// Address announced in peer exchange (NAT); default: the bound address.
    pub advertise: Option<SocketAddr>,
    /// Test links: latency, jitter, loss, duplication and reordering added to what this node
    /// sends ([`shaping`]); `None` sends through the plain socket.
    pub link_shaping: Option<shaping::LinkShaping>,
    /// The proof that this node runs for a validator ([`wire::ValidatorProof::sign`] with its
    /// key), shown in the hello so that peers do not relay its own votes and proposals back
    /// towards it; `None` for observers.
    pub validator_proof: Option<wire::ValidatorProof>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub id: PeerId,
    /// Where the peer can be reached (its advertised address).
    pub addr: SocketAddr,
    pub is_validator: bool,
    /// The validator it proved to run for (its votes and proposals are authored by it).
    pub validator: Option<Address>,
    /// Whether we dialed it.
    pub outbound: bool,
}

/// A message from a peer, for the driver.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub from: PeerId,
    pub msg: Message,
    /// For a transaction, its SHA-256 (computed once, for deduplication, and handed on to the
    /// node's mempool).
    pub tx_hash: Option<Hash>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot listen on UDP {addr}: {source}; choose a free port or another address for `listen`")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("network config: field `{field}`: {detail}")]
    Config { field: &'static str, detail: String },
}

/// The two receivers besides the main one; see [`NetHandle::take_side_inboxes`].
#[derive(Debug)]
pub struct SideInboxes {
    pub txs: mpsc::Receiver<Incoming>,
    pub bulk: mpsc::Receiver<Incoming>,
}

/// Counters for tests, metrics and the memory-bound checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    pub peers: usize,
    pub seen_entries: usize,
    pub known_addrs: usize,
    /// Bytes waiting in all per-peer send queues.
    pub queued_bytes: usize,
    /// Frames dropped because a peer's send queue was full.
    pub dropped_frames: u64,
    /// Votes, proposals and evidence of others forwarded to peers (one per peer sent to).
    pub relayed_frames: u64,
    /// Peers disconnected for misbehaviour (protocol errors, limits, penalties).
    pub peers_banned: u64,
    /// Messages waiting for the driver in the three inboxes (consensus, bulk, transactions).
    pub inbox_queued: usize,
    /// Bytes of gossiped transactions among them.
    pub tx_inbox_bytes: usize,
    /// Peers asked to back far-future messages with the decided block of our height, and
    /// how many of them did (see [`claims`]).
    pub far_future_challenges: u64,
    pub far_future_answered: u64,
    /// Addresses recognised as this node's own (never dialled), and the dials that found one.
    pub own_addrs: usize,
    pub self_dials: u64,
}

/// The validator that signed a consensus message (peers whose node key is their validator
/// key are recognised as the author).
pub(crate) fn author(msg: &Message) -> Option<PeerId> {
    match msg {
        Message::Vote(v) => Some(v.validator),
        Message::Proposal(p) => Some(p.block.header.proposer),
        _ => None,
    }
}

/// Heights a peer asked for that are remembered until served.
pub(crate) const MAX_REQUESTED: usize = 128;

/// QUIC application error codes used when closing a connection.
pub(crate) mod codes {
    pub const SHUTDOWN: u32 = 0;
    pub const REFUSED: u32 = 1;
    pub const PROTOCOL: u32 = 2;
    pub const DUPLICATE: u32 = 3;
    pub const PENALIZED: u32 = 4;
    /// Refused for another chain id or genesis hash: both sides record the reason (see
    /// [`crate::Transport::genesis_refusals`]), the refused one from this code.
    pub const OTHER_GENESIS: u32 = 5;
    /// The dialer reached this very node (its own address in `seed_nodes`, or learnt from
    /// peers): the dialer stops dialling that address.
    pub const OURSELVES: u32 = 6;
}

/// Addresses recognised as this node's own, kept so that peer exchange does not bring them
/// back (a node has few addresses; beyond this many, they are only dropped from the book).
const MAX_OWN_ADDRS: usize = 16;

pub(crate) struct Peer {
    info: PeerInfo,
    conn: quinn::Connection,
    conn_id: u64,
    consensus: mpsc::Sender<Bytes>,
    txs: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
    /// The peer's own peers, from its last peer exchange (for relay decisions).
    neighbors: HashSet<PeerId>,
    /// Height of the last vote or proposal it sent us, and the last height it asked for.
    last: Option<tendr_core::Height>,
    /// The heights it asked for and was not yet sent (a few: the engine and the far-future
    /// challenge may both ask, for successive heights, before the first answer leaves).
    requested: std::collections::VecDeque<tendr_core::Height>,
}

impl Peer {
    /// Whether the peer has, or is directly linked to, the author `a` of a vote or proposal
    /// (by node id, or by the validator a node proved to run for): it needs no relay of it.
    fn linked_to(&self, a: Address) -> bool {
        self.info.id == a || self.info.validator == Some(a) || self.neighbors.contains(&a)
    }
}

#[derive(Debug, Clone)]
struct AddrEntry {
    id: Option<PeerId>,
    seed: bool,
    fails: u32,
    next_try: Instant,
}

pub(crate) struct State {
    peers: HashMap<PeerId, Peer>,
    seen: SeenSet<wire::Digest, tendr_core::mempool::ByDigest>,
    /// Digests of the consensus messages relayed within `limits.relay_ttl`.
    relayed: SeenSet<wire::Digest, tendr_core::mempool::ByDigest>,
    bans: BanList<PeerId>,
    /// Addresses of banned peers: a banned node cannot come back with a fresh key from the
    /// same address. The IPs of configured seeds are never banned this way.
    ip_bans: BanList<IpAddr>,
    book: HashMap<SocketAddr, AddrEntry>,
    /// Addresses that reach this node itself: never dialled (see [`Shared::found_own_addr`]).
    own_addrs: HashSet<SocketAddr>,
    /// Dials that reached this node itself (one per own address, once recognised).
    self_dials: u64,
    dialing: HashSet<SocketAddr>,
    jitter: Jitter,
    dropped_frames: u64,
    relayed_frames: u64,
    peers_banned: u64,
}

/// Everything the transport's tasks share.
pub(crate) struct Shared {
    local_id: PeerId,
    key: PrivateKey,
    hello: HelloBody,
    max_peers: usize,
    limits: Limits,
    endpoint: quinn::Endpoint,
    incoming: mpsc::Sender<Incoming>,
    /// Gossiped transactions travel apart from consensus messages, so that a vote never waits
    /// behind thousands of transactions at the driver. [`runtime::drive`] takes the receiver.
    tx_inbox: mpsc::Sender<Incoming>,
    /// Large consensus messages (proposals, decided blocks) travel apart too, in a short
    /// queue, so that the bytes waiting for the driver stay bounded.
    bulk_inbox: mpsc::Sender<Incoming>,
    side_inboxes: Mutex<Option<SideInboxes>>,
    /// Bytes of the transactions waiting in `tx_inbox` (capped by `Limits::tx_inbox_bytes`).
    tx_inbox_bytes: AtomicUsize,
    /// IPs of the configured seeds (the operator vouches for them): never banned by address.
    seed_ips: HashSet<IpAddr>,
    far_challenges: AtomicU64,
    far_answered: AtomicU64,
    /// Why the latest peers were refused for running another chain or genesis (at most
    /// [`MAX_GENESIS_REFUSALS`], newest last).
    genesis_refusals: Mutex<VecDeque<String>>,
    state: Mutex<State>,
    next_conn_id: AtomicU64,
    stopping: AtomicBool,
}

/// Owns the quinn endpoint and the peer tasks. Drop or [`Transport::shutdown`] to stop.
pub struct Transport {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// A cheap handle for sending; implements the core's `Network` without blocking (frames go
/// into bounded per-peer queues and are dropped when a queue is full).
#[derive(Clone)]
pub struct NetHandle {
    shared: Arc<Shared>,
    /// The peer whose transaction the driver is handling right now (see
    /// [`NetHandle::set_tx_origin`]); the node's re-broadcast of it skips that peer's links.
    tx_origin: Option<PeerId>,
}

fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(2u32.into())
        .max_concurrent_bidi_streams(1u32.into())
        .keep_alive_interval(Some(Duration::from_secs(1)))
        .stream_receive_window((10u32 * 1024 * 1024).into())
        .receive_window((16u32 * 1024 * 1024).into())
        .send_window(16 * 1024 * 1024);
    if let Ok(idle) = Duration::from_secs(10).try_into() {
        t.max_idle_timeout(Some(idle));
    }
    t
}

/// Socket buffers asked for: a 2 MB proposal sent to several peers at once must not overflow
/// the kernel's default (~200 KB) receive buffer, or the losses collapse QUIC's congestion
/// window. The kernel caps the request at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Reasons kept by [`Transport::genesis_refusals`].
pub const MAX_GENESIS_REFUSALS: usize = 16;

fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!("cannot enlarge the UDP receive buffer: {e}");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!("cannot enlarge the UDP send buffer: {e}");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The quinn endpoint on `socket`, under [`shaping::ShapedSocket`] when the config asks.
fn endpoint(
    socket: std::net::UdpSocket,
    server: quinn::ServerConfig,
    shaping: Option<shaping::LinkShaping>,
) -> std::io::Result<quinn::Endpoint> {
    let runtime = Arc::new(quinn::TokioRuntime);
    let config = quinn::EndpointConfig::default();
    let Some(shaping) = shaping else {
        return quinn::Endpoint::new(config, Some(server), socket, runtime);
    };
    tracing::warn!(
        "link shaping on (test links): latency {} ms, jitter {} ms, loss {}, duplicate {}, reorder {}, seed {}",
        shaping.latency_ms,
        shaping.jitter_ms,
        shaping.loss,
        shaping.duplicate,
        shaping.reorder,
        shaping.seed
    );
    let inner = quinn::Runtime::wrap_udp_socket(&*runtime, socket)?;
    let shaped = Arc::new(shaping::ShapedSocket::new(inner, shaping)?);
    quinn::Endpoint::new_with_abstract_socket(config, Some(server), shaped, runtime)
}

fn check_config(cfg: &NetConfig) -> Result<(), NetError> {
    if cfg.chain_id.is_empty() || cfg.chain_id.len() > tendr_core::limits::MAX_CHAIN_ID_BYTES {
        return Err(NetError::Config {
            field: "chain_id",
            detail: format!(
                "`{}` has {} bytes; use 1 to {} bytes",
                cfg.chain_id,
                cfg.chain_id.len(),
                tendr_core::limits::MAX_CHAIN_ID_BYTES
            ),
        });
    }
    if cfg.max_peers == 0 {
        return Err(NetError::Config {
            field: "max_peers",
            detail: "0 would refuse every peer; use at least 1".into(),
        });
    }
    if let Some(e) = cfg.link_shaping.as_ref().and_then(|s| s.check().err()) {
        return Err(NetError::Config {
            field: "link_shaping",
            detail: e.to_string(),
        });
    }
    Ok(())
}

impl Transport {
    /// Binds the endpoint, starts accepting and dialing the seeds. Must run inside tokio.
    pub async fn start(cfg: NetConfig) -> Result<(Transport, mpsc::Receiver<Incoming>), NetError> {
        Self::start_with(cfg, Limits::default()).await
    }

    /// [`Transport::start`] with explicit limits (tests use short bans and low rates).
    pub async fn start_with(cfg: NetConfig, limits: Limits) -> Result<(Transport, mpsc::Receiver<Incoming>), NetError> {
        check_config(&cfg)?;
        let (server, client) = tls::configs(Arc::new(transport_config())).map_err(NetError::Tls)?;
        let bind_err = |source| NetError::Bind {
            addr: cfg.listen,
            source,
        };
        let socket = udp_socket(cfg.listen).map_err(bind_err)?;
        let mut endpoint = endpoint(socket, server, cfg.link_shaping.clone()).map_err(bind_err)?;
        endpoint.set_default_client_config(client);
        let local = endpoint.local_addr().map_err(|source| NetError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let local_id = cfg.node_key.address();
        let now = Instant::now();
        let seed = now.elapsed().as_nanos() as u64 ^ u64::from_le_bytes(local_id.0[..8].try_into().expect("8 bytes"));
        let mut book = HashMap::new();
        for s in &cfg.seeds {
            book.insert(
                *s,
                AddrEntry {
                    id: None,
                    seed: true,
                    fails: 0,
                    next_try: now,
                },
            );
        }
        let (tx, rx) = mpsc::channel(limits.incoming_queue.max(1));
        let (txs_tx, txs_rx) = mpsc::channel(limits.tx_inbox.max(1));
        let (bulk_tx, bulk_rx) = mpsc::channel(limits.bulk_inbox.max(1));
        let shared = Arc::new(Shared {
            local_id,
            hello: HelloBody {
                chain_id: cfg.chain_id.clone(),
                genesis_hash: cfg.genesis_hash,
                public_key: cfg.node_key.public_key(),
                is_validator: cfg.is_validator,
                advertise: cfg.advertise.unwrap_or(local),
                validator: cfg.validator_proof,
            },
            key: cfg.node_key,
            max_peers: cfg.max_peers,
            state: Mutex::new(State {
                peers: HashMap::new(),
                seen: SeenSet::new(limits.seen_entries, limits.seen_ttl),
                relayed: SeenSet::new(limits.seen_entries, limits.relay_ttl),
                bans: BanList::new(limits.banned_entries),
                ip_bans: BanList::new(limits.banned_entries),
                book,
                own_addrs: HashSet::new(),
                self_dials: 0,
                dialing: HashSet::new(),
                jitter: Jitter::new(seed ^ std::process::id() as u64),
                dropped_frames: 0,
                relayed_frames: 0,
                peers_banned: 0,
            }),
            limits,
            endpoint,
            incoming: tx,
            tx_inbox: txs_tx,
            bulk_inbox: bulk_tx,
            side_inboxes: Mutex::new(Some(SideInboxes {
                txs: txs_rx,
                bulk: bulk_rx,
            })),
            seed_ips: cfg.seeds.iter().map(|s| s.ip().to_canonical()).collect(),
            tx_inbox_bytes: AtomicUsize::new(0),
            far_challenges: AtomicU64::new(0),
            far_answered: AtomicU64::new(0),
            genesis_refusals: Mutex::new(VecDeque::new()),
            next_conn_id: AtomicU64::new(1),
            stopping: AtomicBool::new(false),
        });
        tracing::info!(id = %local_id, addr = %local, "tendr-net listening");
        for s in &cfg.seeds {
            if *s == cfg.listen || *s == local || Some(*s) == cfg.advertise {
                shared.found_own_addr(*s, "it is this node's listen or advertised address");
            }
        }
        let tasks = vec![
            tokio::spawn(conn::accept_loop(shared.clone())),
            tokio::spawn(conn::dial_loop(shared.clone())),
        ];
        Ok((Transport { shared, tasks }, rx))
    }

    pub fn handle(&self) -> NetHandle {
        NetHandle {
            shared: self.shared.clone(),
            tx_origin: None,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.shared.endpoint.local_addr().unwrap_or(self.shared.hello.advertise)
    }

    pub fn local_id(&self) -> PeerId {
        self.shared.local_id
    }

    pub fn peers(&self) -> Vec<PeerInfo> {
        self.shared.peers()
    }

    pub fn stats(&self) -> NetStats {
        self.shared.stats()
    }

    /// Why peers were refused for running another chain or genesis: at most
    /// [`MAX_GENESIS_REFUSALS`] reasons, newest last (`join` refuses a foreign genesis on
    /// these; `status` warns with the newest).
    pub fn genesis_refusals(&self) -> Vec<String> {
        self.shared.genesis_refusals()
    }

    /// Closes every connection (peers see a clean close) and the endpoint.
    /// When it returns, the UDP port is free again (a restart may bind it at once), unless
    /// some [`NetHandle`] is still alive elsewhere.
    /// Every wait below ends on its condition; the deadlines only matter on a machine so
    /// loaded that tasks do not get to run for seconds.
    pub async fn shutdown(mut self) {
        let addr = self.local_addr();
        self.stop();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.shared.endpoint.wait_idle()).await;
        // Connection tasks end once their connections are closed; the socket closes with the
        // last endpoint handle, which the shared state holds.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.shared) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let endpoint = self.shared.endpoint.clone();
        drop(self);
        drop(endpoint);
        // The socket closes when quinn's endpoint driver finds no handle and no connection
        // left: connections caught in a handshake with a node that is gone drain for up to
        // about 3 s (no RTT sample yet), and under load the driver may run late. Wait until
        // the port can be bound again.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            tokio::task::yield_now().await;
            if std::net::UdpSocket::bind(addr).is_ok() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let peers: Vec<Peer> = self.shared.lock().peers.drain().map(|(_, p)| p).collect();
        for p in peers {
            p.conn.close(codes::SHUTDOWN.into(), b"node shutting down");
        }
        self.shared
            .endpoint
            .close(codes::SHUTDOWN.into(), b"node shutting down");
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            self.stop();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock must not take the transport down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self.lock().peers.values().map(|p| p.info.clone()).collect();
        v.sort_by_key(|p| p.id);
        v
    }

    fn genesis_refusals(&self) -> Vec<String> {
        let r = self.genesis_refusals.lock().unwrap_or_else(|e| e.into_inner());
        r.iter().cloned().collect()
    }

    /// A peer runs another chain or genesis: remembered for [`Transport::genesis_refusals`].
    pub(crate) fn record_genesis_refusal(&self, why: &str) {
        let mut r = self.genesis_refusals.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() >= MAX_GENESIS_REFUSALS {
            r.pop_front();
        }
        r.push_back(why.to_string());
    }

    fn stats(&self) -> NetStats {
        let st = self.lock();
        NetStats {
            peers: st.peers.len(),
            seen_entries: st.seen.len(),
            known_addrs: st.book.len(),
            queued_bytes: st.peers.values().map(|p| p.queued.load(Ordering::Relaxed)).sum(),
            dropped_frames: st.dropped_frames,
            relayed_frames: st.relayed_frames,
            peers_banned: st.peers_banned,
            inbox_queued: [&self.incoming, &self.bulk_inbox, &self.tx_inbox]
                .iter()
                .map(|q| q.max_capacity() - q.capacity())
                .sum(),
            tx_inbox_bytes: self.tx_inbox_bytes.load(Ordering::Relaxed),
            far_future_challenges: self.far_challenges.load(Ordering::Relaxed),
            far_future_answered: self.far_answered.load(Ordering::Relaxed),
            own_addrs: st.own_addrs.len(),
            self_dials: st.self_dials,
        }
    }

    /// Puts a frame into a peer's queue unless the queue is full (then the frame is dropped:
    /// a slow peer loses messages, it never stalls the sender).
    fn enqueue(&self, st: &mut State, to: &PeerId, frame: &Bytes, is_tx: bool) {
        let Some(p) = st.peers.get(to) else { return };
        if !self.try_enqueue(p, frame, is_tx) {
            st.dropped_frames += 1;
        }
    }

    /// False when the frame was dropped.
    fn try_enqueue(&self, p: &Peer, frame: &Bytes, is_tx: bool) -> bool {
        let len = frame.len();
        if p.queued.load(Ordering::Relaxed) + len > self.limits.queue_bytes {
            return false;
        }
        let q = if is_tx { &p.txs } else { &p.consensus };
        if q.try_send(frame.clone()).is_err() {
            return false;
        }
        p.queued.fetch_add(len, Ordering::Relaxed);
        true
    }

    /// Sends `msg` to every peer. A transaction that came from peer `origin` was also gossiped
    /// by it to all of its peers (the node re-broadcasts each new transaction once): it goes
    /// only where the origin's last peer exchange shows no link, and in a full mesh nowhere,
    /// without even being encoded. Each transaction crosses each link once.
    fn broadcast(&self, msg: &Message, origin: Option<PeerId>, tx_hash: Option<&Hash>) {
        let is_tx = matches!(msg, Message::Tx(_));
        let origin = origin.filter(|_| is_tx);
        let skip = |st: &State, id: &PeerId| {
            origin.is_some_and(|o| *id == o || st.peers.get(&o).is_some_and(|p| p.neighbors.contains(id)))
        };
        if origin.is_some() {
            let st = self.lock();
            if st.peers.keys().all(|id| skip(&st, id)) {
                return;
            }
        }
        let (frame, digest) = match tx_hash {
            Some(h) if is_tx => (wire::message_frame_only(msg), wire::Digest::Tx(*h)),
            _ => wire::message_frame(msg),
        };
        let mut st = self.lock();
        if origin.is_none() {
            st.seen.insert(digest, Instant::now()); // (a relayed one was noted when it came in)
        }
        let mut dropped = 0;
        for (id, p) in &st.peers {
            if !skip(&st, id) && !self.try_enqueue(p, &frame, is_tx) {
                dropped += 1;
            }
        }
        st.dropped_frames += dropped;
    }

    fn send(&self, to: PeerId, msg: &Message) {
        if let Message::Decided { block, .. } = msg {
            // The engine serves a decided block to any peer whose message is for an older
            // height. When that message is a vote of the very height the peer is deciding
            // right now (typically the last precommit, arriving after the quorum), the peer
            // decides on its own within moments; a whole block for it is wasted bandwidth.
            // A peer that really is behind asks with `RequestDecided`, which is always served.
            let mut st = self.lock();
            if let Some(p) = st.peers.get_mut(&to) {
                let h = block.height();
                if let Some(i) = p.requested.iter().position(|r| *r == h) {
                    p.requested.remove(i);
                } else if p.last == Some(h) {
                    return;
                }
            }
            drop(st);
        }
        let frame = wire::message_frame_only(msg);
        let mut st = self.lock();
        self.enqueue(&mut st, &to, &frame, matches!(msg, Message::Tx(_)));
    }

    /// Forwards a verified consensus message to the peers that may not have it: every peer
    /// except the one it came from, its author, and peers whose last peer exchange shows a
    /// direct link to its author (in a full mesh nothing is relayed).
    fn relay(&self, from: PeerId, msg: &Message) {
        let targets = self.relay_targets(from, msg);
        if targets.is_empty() {
            return;
        }
        let (frame, digest) = wire::message_frame(msg);
        let mut st = self.lock();
        if !st.relayed.insert(digest, Instant::now()) {
            return; // relayed already: a copy of it came back, or its author re-broadcast it
        }
        st.relayed_frames += targets.len() as u64;
        for id in targets {
            self.enqueue(&mut st, &id, &frame, false);
        }
    }

    fn relay_targets(&self, from: PeerId, msg: &Message) -> Vec<PeerId> {
        if !matches!(msg, Message::Vote(_) | Message::Proposal(_) | Message::Evidence(_)) {
            return Vec::new();
        }
        let author = author(msg);
        self.lock()
            .peers
            .values()
            .filter(|p| p.info.id != from)
            .filter(|p| author.is_none_or(|a| !p.linked_to(a)))
            .map(|p| p.info.id)
            .collect()
    }

    /// Disconnects a peer and keeps it out for `limits.ban`, by node id and by the IP address
    /// it connected from (unless that is a seed's).
    fn ban(&self, id: PeerId, reason: &str, code: u32) {
        let now = Instant::now();
        let mut st = self.lock();
        let until = now + self.limits.ban;
        st.bans.ban(id, until, reason.to_string(), now);
        if let Some(p) = st.peers.remove(&id) {
            st.peers_banned += 1;
            let ip = p.conn.remote_address().ip().to_canonical();
            let by_ip = !self.seed_ips.contains(&ip);
            if by_ip {
                st.ip_bans
                    .ban(ip, until, format!("node {id} from there: {reason}"), now);
            }
            let also = if by_ip {
                format!(" (and its address {ip})")
            } else {
                String::new()
            };
            tracing::warn!(peer = %id, addr = %p.info.addr, "disconnected and banned{also} for {}s: {reason}", self.limits.ban.as_secs());
            let mut r = reason.as_bytes().to_vec();
            r.truncate(200);
            p.conn.close(code.into(), &r);
        }
    }

    fn pex_entries(&self, st: &State) -> Vec<PexEntry> {
        st.peers
            .values()
            .take(wire::MAX_PEX_ENTRIES)
            .map(|p| PexEntry {
                id: p.info.id,
                addr: p.info.addr,
                is_validator: p.info.is_validator,
                validator: p.info.validator,
            })
            .collect()
    }

    fn broadcast_pex(&self) {
        let mut st = self.lock();
        let frame = wire::peers_frame(&self.pex_entries(&st));
        let ids: Vec<PeerId> = st.peers.keys().copied().collect();
        for id in ids {
            self.enqueue(&mut st, &id, &frame, false);
        }
    }

    /// Learns a peer's neighbours and new addresses from its peer exchange.
    fn on_pex(&self, from: PeerId, entries: Vec<PexEntry>) {
        let now = Instant::now();
        let mut st = self.lock();
        let cap = self.limits.known_addrs;
        for e in &entries {
            if e.id == self.local_id || e.addr == self.hello.advertise || st.own_addrs.contains(&e.addr) {
                continue;
            }
            if let Some(a) = st.book.get_mut(&e.addr) {
                a.id.get_or_insert(e.id);
            } else if st.book.len() < cap {
                st.book.insert(
                    e.addr,
                    AddrEntry {
                        id: Some(e.id),
                        seed: false,
                        fails: 0,
                        next_try: now,
                    },
                );
            }
        }
        if let Some(p) = st.peers.get_mut(&from) {
            // Node ids and the validators they run for: a relay skips a peer linked to the
            // author either way.
            p.neighbors = entries
                .into_iter()
                .flat_map(|e| [Some(e.id), e.validator])
                .flatten()
                .collect();
        }
    }

    /// `addr` reaches this node itself: forget it as a peer address, never dial it again, and
    /// say so once (at info: a node listed in its own `seed_nodes` is ordinary in the guide).
    pub(crate) fn found_own_addr(&self, addr: SocketAddr, why: &str) {
        let mut st = self.lock();
        st.book.remove(&addr);
        st.self_dials += u64::from(st.dialing.contains(&addr));
        if st.own_addrs.len() < MAX_OWN_ADDRS && st.own_addrs.insert(addr) {
            tracing::info!("{addr} is this node's own address ({why}); not dialling it");
        }
    }

    /// Addresses due for a dial now (marked as being dialed).
    fn due_dials(&self) -> Vec<SocketAddr> {
        let now = Instant::now();
        let mut st = self.lock();
        if st.peers.len() >= self.max_peers {
            return Vec::new();
        }
        let connected: HashSet<SocketAddr> = st.peers.values().map(|p| p.info.addr).collect();
        let due: Vec<SocketAddr> = st
            .book
            .iter()
            .filter(|(addr, e)| {
                e.next_try <= now
                    && !st.dialing.contains(*addr)
                    && !connected.contains(*addr)
                    && **addr != self.hello.advertise
                    && !st.own_addrs.contains(*addr)
                    && st.ip_bans.banned(&addr.ip().to_canonical(), now).is_none()
                    && e.id.is_none_or(|id| {
                        id != self.local_id && !st.peers.contains_key(&id) && st.bans.banned(&id, now).is_none()
                    })
            })
            .map(|(a, _)| *a)
            .take(8)
            .collect();
        for a in &due {
            st.dialing.insert(*a);
        }
        due
    }

    /// A dial or handshake to `addr` failed: back off exponentially, with jitter.
    fn dial_failed(&self, addr: SocketAddr) {
        let now = Instant::now();
        let mut st = self.lock();
        st.dialing.remove(&addr);
        let (min, max) = (self.limits.backoff_min, self.limits.backoff_max);
        let Some(e) = st.book.get(&addr).cloned() else { return };
        let fails = e.fails.saturating_add(1);
        if !e.seed && fails > 10 {
            st.book.remove(&addr);
            return;
        }
        let delay = min.saturating_mul(1u32 << fails.min(16)).min(max);
        let delay = st.jitter.spread(delay);
        if let Some(e) = st.book.get_mut(&addr) {
            e.fails = fails;
            e.next_try = now + delay;
        }
    }

    /// Why a connection from `ip` is refused, if that address is banned.
    fn ip_banned(&self, ip: IpAddr) -> Option<String> {
        let ip = ip.to_canonical();
        let st = self.lock();
        let (left, why) = st.ip_bans.banned(&ip, Instant::now())?;
        Some(format!(
            "address {ip} is banned for {}s more: {why}",
            left.as_secs() + 1
        ))
    }

    /// Checks before registering: not ourselves, not banned, room for one more peer.
    fn admit(&self, id: PeerId) -> Result<(), String> {
        if id == self.local_id {
            return Err("connection to ourselves (same node key); remove our own address from `seed_nodes`".into());
        }
        let st = self.lock();
        if let Some((left, why)) = st.bans.banned(&id, Instant::now()) {
            return Err(format!("peer {id} is banned for {}s more: {why}", left.as_secs() + 1));
        }
        if !st.peers.contains_key(&id) && st.peers.len() >= self.max_peers {
            return Err(format!(
                "peer limit reached ({} peers, max_peers = {}); raise max_peers to accept more",
                st.peers.len(),
                self.max_peers
            ));
        }
        Ok(())
    }
}

impl NetHandle {
    /// Disconnects `peer` and keeps it out for a while (the driver calls this when a peer's
    /// messages are rejected repeatedly).
    pub fn penalize(&self, peer: PeerId, reason: &str) {
        self.shared.ban(peer, reason, codes::PENALIZED);
    }

    pub fn peers(&self) -> Vec<PeerInfo> {
        self.shared.peers()
    }

    /// Whether [`NetHandle::relay`] of this message would send it anywhere.
    pub fn would_relay(&self, from: PeerId, msg: &Message) -> bool {
        !self.shared.relay_targets(from, msg).is_empty()
    }

    /// Forwards a message the engine accepted to peers that may not have it yet.
    pub fn relay(&self, from: PeerId, msg: &Message) {
        self.shared.relay(from, msg);
    }

    pub fn stats(&self) -> NetStats {
        self.shared.stats()
    }

    /// Why peers were refused for running another chain or genesis: at most
    /// [`MAX_GENESIS_REFUSALS`] reasons, newest last (`join` refuses a foreign genesis on
    /// these; `status` warns with the newest).
    pub fn genesis_refusals(&self) -> Vec<String> {
        self.shared.genesis_refusals()
    }

    /// The receivers of gossiped transactions and of large consensus messages (proposals and
    /// decided blocks of more than [`wire::BULK_FRAME_BYTES`]); the `Incoming` receiver of
    /// [`Transport::start`] carries the rest (votes, small proposals, requests, evidence).
    /// Taken once, by [`runtime::drive`]. Until they are taken and read, transactions beyond
    /// `Limits::tx_inbox` are dropped and large messages wait (the peer's stream stalls).
    pub fn take_side_inboxes(&self) -> Option<SideInboxes> {
        self.shared
            .side_inboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Tells the handle that the transaction the driver is about to hand to the node came
    /// from `origin` (`None` afterwards), so that the node's re-broadcast of it is not sent
    /// back over links that already carry it.
    pub fn set_tx_origin(&mut self, origin: Option<PeerId>) {
        self.tx_origin = origin;
    }

    /// Whether connections from `ip` are currently refused.
    pub fn is_ip_banned(&self, ip: IpAddr) -> bool {
        self.shared.ip_banned(ip).is_some()
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    /// The driver took a transaction out of the transaction inbox.
    pub(crate) fn tx_taken(&self, inc: &Incoming) {
        if let Message::Tx(t) = &inc.msg {
            self.shared.tx_inbox_bytes.fetch_sub(t.len(), Ordering::Relaxed);
        }
    }

    pub(crate) fn note_far_future(&self, answered: bool) {
        let c = if answered {
            &self.shared.far_answered
        } else {
            &self.shared.far_challenges
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `peer` is currently banned.
    pub fn is_banned(&self, peer: &PeerId) -> bool {
        self.shared.lock().bans.banned(peer, Instant::now()).is_some()
    }

    pub fn local_id(&self) -> PeerId {
        self.shared.local_id
    }
}

impl tendr_core::traits::Network for NetHandle {
    fn broadcast(&mut self, msg: &Message) {
        self.shared.broadcast(msg, self.tx_origin, None);
    }
    fn broadcast_tx(&mut self, msg: &Message, tx_hash: &Hash) {
        self.shared.broadcast(msg, self.tx_origin, Some(tx_hash));
    }
    fn send(&mut self, to: PeerId, msg: &Message) {
        self.shared.send(to, msg);
    }
}
