//! Connection tasks: accepting, dialing, the hello exchange, registration, and one reader per
//! incoming stream and one writer per outgoing stream of each peer.

use crate::limit::Bucket;
use crate::wire::{self, Frame, Hello, ReadError, Side};
use crate::{codes, Incoming, Peer, PeerInfo, Shared};
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tendr_core::limits::MAX_TX_BYTES;
use tendr_core::{Message, PeerId};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;

/// Handshakes in progress at once; more incoming connections are refused.
const MAX_PENDING_HANDSHAKES: usize = 64;
/// Incoming unidirectional streams a peer may open over a connection's life (we use two).
const MAX_STREAMS_PER_CONNECTION: u32 = 8;

pub(crate) async fn accept_loop(shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    while let Some(incoming) = shared.endpoint.accept().await {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(addr = %incoming.remote_address(), "refused: too many handshakes in progress");
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match timeout(shared.limits.handshake, incoming).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    tracing::debug!(addr = %remote, "incoming QUIC handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(addr = %remote, "incoming QUIC handshake timed out");
                    return;
                }
            };
            drop(permit);
            run_connection(shared, conn, None).await;
        });
    }
}

pub(crate) async fn dial_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.limits.dial_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_pex = Instant::now();
    loop {
        tick.tick().await;
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        for addr in shared.due_dials() {
            tokio::spawn(dial(shared.clone(), addr));
        }
        if last_pex.elapsed() >= shared.limits.pex_interval {
            shared.broadcast_pex();
            last_pex = Instant::now();
        }
    }
}

async fn dial(shared: Arc<Shared>, addr: SocketAddr) {
    let connecting = match shared.endpoint.connect(addr, crate::tls::SERVER_NAME) {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%addr, "cannot dial: {e}");
            shared.dial_failed(addr);
            return;
        }
    };
    match timeout(shared.limits.handshake, connecting).await {
        Ok(Ok(conn)) => run_connection(shared, conn, Some(addr)).await,
        Ok(Err(e)) => {
            tracing::debug!(%addr, "dial failed: {e}");
            shared.dial_failed(addr);
        }
        Err(_) => {
            tracing::debug!(%addr, "dial timed out");
            shared.dial_failed(addr);
        }
    }
}

/// The reason the other side gave when it closed the connection, if it did.
fn close_reason(conn: &quinn::Connection) -> Option<String> {
    match conn.close_reason()? {
        quinn::ConnectionError::ApplicationClosed(c) => Some(String::from_utf8_lossy(&c.reason).into_owned()),
        e => Some(e.to_string()),
    }
}

/// Why a handshake failed, with the close code that says what kind of refusal it was (on
/// either side): [`codes::OTHER_GENESIS`], [`codes::OURSELVES`] or [`codes::REFUSED`].
pub(crate) struct Refusal {
    reason: String,
    code: u32,
}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal {
            reason,
            code: codes::REFUSED,
        }
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        reason.to_string().into()
    }
}

fn stream_error(conn: &quinn::Connection, what: &str, e: impl std::fmt::Display) -> Refusal {
    let code = match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(c))
            if c.error_code == codes::OTHER_GENESIS.into() || c.error_code == codes::OURSELVES.into() =>
        {
            u32::try_from(c.error_code.into_inner()).unwrap_or(codes::REFUSED)
        }
        _ => codes::REFUSED,
    };
    let reason = match close_reason(conn) {
        Some(r) if code == codes::OTHER_GENESIS => format!("the peer refused this node's genesis: {r}"),
        Some(r) => format!("the peer closed the connection during {what}: {r}"),
        None => format!("{what}: {e}"),
    };
    Refusal { reason, code }
}

/// Exchanges and verifies hellos. The dialer speaks first; the listener answers only after it
/// has accepted the dialer, so a refused dialer learns nothing but the reason.
async fn hello_exchange(shared: &Shared, conn: &quinn::Connection, outbound: bool) -> Result<(Hello, PeerId), Refusal> {
    let exporter = wire::exporter(conn)?;
    let (mine, theirs) = if outbound {
        (Side::Dialer, Side::Listener)
    } else {
        (Side::Listener, Side::Dialer)
    };
    let frame = wire::hello_frame(&Hello::sign(&shared.key, mine, &exporter, shared.hello.clone()));
    let (mut send, mut recv) = if outbound {
        conn.open_bi().await
    } else {
        conn.accept_bi().await
    }
    .map_err(|e| stream_error(conn, "the hello", e))?;
    if outbound {
        send.write_chunk(frame.clone())
            .await
            .map_err(|e| stream_error(conn, "sending the hello", e))?;
    }
    let bytes = match wire::read_frame(&mut recv).await {
        Ok(Some(b)) => b,
        Ok(None) => return Err("the peer closed its hello stream without a hello".into()),
        Err(ReadError::Wire(e)) => return Err(format!("hello: {e}").into()),
        Err(ReadError::Stream(e)) => return Err(stream_error(conn, "reading the hello", e)),
    };
    let hello = match wire::decode_frame(&bytes) {
        Ok(Frame::Hello(h)) => h,
        Ok(_) => return Err("the first frame is not a hello".into()),
        Err(e) => return Err(format!("hello: {e}").into()),
    };
    let id = hello.verify(theirs, &exporter)?;
    check_peer_hello(shared, &hello, id)?;
    if id == shared.local_id {
        return Err(Refusal {
            reason: "connection to ourselves (same node key)".into(),
            code: codes::OURSELVES,
        });
    }
    shared.admit(id)?;
    if !outbound {
        send.write_chunk(frame)
            .await
            .map_err(|e| stream_error(conn, "sending the hello", e))?;
    }
    let _ = send.finish();
    Ok((hello, id))
}

/// Refuses a peer of another chain or genesis.
fn check_peer_hello(shared: &Shared, hello: &Hello, id: PeerId) -> Result<(), Refusal> {
    let (ours, theirs) = (&shared.hello, &hello.body);
    let why = if theirs.chain_id != ours.chain_id {
        format!(
            "peer {id} runs chain `{}`, this node runs `{}`; check the peer's genesis file",
            theirs.chain_id, ours.chain_id
        )
    } else if theirs.genesis_hash != ours.genesis_hash {
        format!(
            "peer {id} has genesis hash {}, this node has {}; both must use the same genesis file",
            theirs.genesis_hash.to_hex(),
            ours.genesis_hash.to_hex()
        )
    } else {
        return Ok(());
    };
    Err(Refusal {
        reason: why,
        code: codes::OTHER_GENESIS,
    })
}

struct Registered {
    conn_id: u64,
    consensus: mpsc::Receiver<Bytes>,
    txs: mpsc::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// Where a peer can be reached: its advertised address, with the IP we see when it
/// advertises an unspecified one (it listens on 0.0.0.0).
fn reachable(advertise: SocketAddr, remote: SocketAddr) -> SocketAddr {
    if advertise.ip().is_unspecified() {
        SocketAddr::new(remote.ip(), advertise.port())
    } else {
        advertise
    }
}

/// Of two connections between the same pair, the one dialed by the lower id survives; both
/// ends compute the same answer whatever order the handshakes completed in.
fn replaces_existing(local: PeerId, remote: PeerId, existing_outbound: bool, new_outbound: bool) -> bool {
    let preferred_outbound = local < remote; // we dialed it iff we are the lower id
    existing_outbound != preferred_outbound && new_outbound == preferred_outbound
}

/// Adds the peer, resolving a second connection between the same pair deterministically:
/// the connection dialed by the lower id wins, on both ends.
fn register(
    shared: &Shared,
    conn: &quinn::Connection,
    hello: &Hello,
    id: PeerId,
    dialed: Option<SocketAddr>,
) -> Result<Registered, (String, bool)> {
    let now = Instant::now();
    let mut st = shared.lock();
    if let Some((left, why)) = st.bans.banned(&id, now) {
        return Err((
            format!("peer {id} is banned for {}s more: {why}", left.as_secs() + 1),
            true,
        ));
    }
    let outbound = dialed.is_some();
    if let Some(existing) = st.peers.get(&id) {
        if !replaces_existing(shared.local_id, id, existing.info.outbound, outbound) {
            return Err((
                "duplicate connection between the same pair; keeping the other one".into(),
                false,
            ));
        }
        existing.conn.close(
            codes::DUPLICATE.into(),
            b"duplicate connection; keeping the one dialed by the lower id",
        );
        st.peers.remove(&id);
    } else if st.peers.len() >= shared.max_peers {
        return Err((format!("peer limit reached (max_peers = {})", shared.max_peers), true));
    }
    let addr = dialed.unwrap_or_else(|| reachable(hello.body.advertise, conn.remote_address()));
    if let Some(a) = dialed {
        st.dialing.remove(&a);
    }
    let e = st.book.entry(addr).or_insert(crate::AddrEntry {
        id: Some(id),
        seed: false,
        fails: 0,
        next_try: now,
    });
    e.id = Some(id);
    e.fails = 0;
    let (ctx, crx) = mpsc::channel(shared.limits.consensus_queue.max(1));
    let (ttx, trx) = mpsc::channel(shared.limits.tx_queue.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    let conn_id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
    let info = PeerInfo {
        id,
        addr,
        is_validator: hello.body.is_validator,
        validator: hello.validator(),
        outbound,
    };
    st.peers.insert(
        id,
        Peer {
            info,
            conn: conn.clone(),
            conn_id,
            consensus: ctx,
            txs: ttx,
            queued: queued.clone(),
            neighbors: Default::default(),
            last: None,
            requested: Default::default(),
        },
    );
    Ok(Registered {
        conn_id,
        consensus: crx,
        txs: trx,
        queued,
    })
}

fn unregister(shared: &Shared, id: PeerId, conn_id: u64, dialed: Option<SocketAddr>) {
    let now = Instant::now();
    let mut st = shared.lock();
    if st.peers.get(&id).is_some_and(|p| p.conn_id == conn_id) {
        st.peers.remove(&id);
    }
    // Reconnect soon (with jitter); repeated failures back off in `dial_failed`.
    let delay = shared.limits.backoff_min;
    let delay = st.jitter.spread(delay);
    if let Some(a) = dialed {
        st.dialing.remove(&a);
        if let Some(e) = st.book.get_mut(&a) {
            e.next_try = now + delay;
        }
    }
}

async fn run_connection(shared: Arc<Shared>, conn: quinn::Connection, dialed: Option<SocketAddr>) {
    let remote = conn.remote_address();
    let outbound = dialed.is_some();
    if let Some(reason) = shared.ip_banned(remote.ip()) {
        return refuse(&shared, &conn, dialed, remote, &reason, codes::REFUSED);
    }
    let (hello, id) = match timeout(shared.limits.handshake, hello_exchange(&shared, &conn, outbound)).await {
        Ok(Ok(x)) => x,
        Ok(Err(r)) => {
            // Either side of a genesis mismatch remembers it: `join` and `status` report it.
            if r.code == codes::OTHER_GENESIS {
                shared.record_genesis_refusal(&r.reason);
            }
            // The dialing side of a connection to ourselves learns which address is ours.
            if let (codes::OURSELVES, Some(a)) = (r.code, dialed) {
                shared.found_own_addr(a, "dialling it reached this node itself");
            }
            return refuse(&shared, &conn, dialed, remote, &r.reason, r.code);
        }
        Err(_) => {
            return refuse(
                &shared,
                &conn,
                dialed,
                remote,
                "hello not completed in time",
                codes::REFUSED,
            )
        }
    };
    let reg = match register(&shared, &conn, &hello, id, dialed) {
        Ok(r) => r,
        Err((reason, loud)) => {
            if loud {
                tracing::warn!(peer = %id, addr = %remote, "refused: {reason}");
            } else {
                tracing::debug!(peer = %id, addr = %remote, "closing: {reason}");
            }
            conn.close(codes::REFUSED.into(), reason.as_bytes());
            if let Some(a) = dialed {
                shared.lock().dialing.remove(&a);
            }
            return;
        }
    };
    tracing::info!(peer = %id, addr = %remote, outbound, validator = hello.body.is_validator, "peer connected");
    tokio::spawn(writer(conn.clone(), reg.consensus, reg.queued.clone(), 1));
    tokio::spawn(writer(conn.clone(), reg.txs, reg.queued, 0));
    shared.broadcast_pex();
    match read_loop(&shared, &conn, id).await {
        Some(reason) => {
            shared.ban(id, &reason, codes::PROTOCOL);
        }
        None => {
            let why = close_reason(&conn).unwrap_or_else(|| "closed".into());
            tracing::info!(peer = %id, addr = %remote, "peer disconnected: {why}");
        }
    }
    unregister(&shared, id, reg.conn_id, dialed);
}

fn refuse(
    shared: &Shared,
    conn: &quinn::Connection,
    dialed: Option<SocketAddr>,
    remote: SocketAddr,
    reason: &str,
    code: u32,
) {
    if reason.contains("duplicate connection") || code == codes::OURSELVES {
        // The other end kept its other connection to us (simultaneous dials), or the other
        // end is us (`found_own_addr` says so once, at info): not a refusal worth a warning.
        tracing::debug!(addr = %remote, "closed: {reason}");
    } else {
        tracing::warn!(addr = %remote, "peer refused: {reason}");
    }
    let mut r = reason.as_bytes().to_vec();
    r.truncate(400);
    conn.close(code.into(), &r);
    if let Some(a) = dialed {
        shared.dial_failed(a);
    }
}

async fn writer(conn: quinn::Connection, mut rx: mpsc::Receiver<Bytes>, queued: Arc<AtomicUsize>, priority: i32) {
    let Ok(mut s) = conn.open_uni().await else { return };
    let _ = s.set_priority(priority);
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 64).await > 0 {
        let n: usize = batch.iter().map(|b| b.len()).sum();
        queued.fetch_sub(n, Ordering::Relaxed);
        if s.write_all_chunks(&mut batch).await.is_err() {
            return;
        }
        batch.clear();
    }
}

/// Per-peer rate limits, shared by the peer's streams.
struct Rate {
    msgs: Bucket,
    bytes: Bucket,
}

/// Reads every stream the peer opens. Returns the peer's offence, or `None` when the
/// connection simply ended.
async fn read_loop(shared: &Arc<Shared>, conn: &quinn::Connection, id: PeerId) -> Option<String> {
    let l = &shared.limits;
    let rate = Arc::new(Mutex::new(Rate {
        msgs: Bucket::new(l.msgs_per_sec as f64, 2.0 * l.msgs_per_sec as f64),
        bytes: Bucket::new(
            l.bytes_per_sec as f64,
            2.0 * l.bytes_per_sec as f64 + wire::MAX_FRAME_BYTES as f64,
        ),
    }));
    let mut streams = JoinSet::new();
    let mut opened = 0u32;
    loop {
        tokio::select! {
            s = conn.accept_uni() => match s {
                Ok(s) => {
                    opened += 1;
                    if opened > MAX_STREAMS_PER_CONNECTION {
                        return Some(format!("opened more than {MAX_STREAMS_PER_CONNECTION} streams"));
                    }
                    streams.spawn(read_stream(shared.clone(), id, s, rate.clone()));
                }
                Err(_) => return None,
            },
            Some(done) = streams.join_next() => {
                if let Ok(Some(reason)) = done {
                    return Some(reason);
                }
            }
        }
    }
}

async fn read_stream(
    shared: Arc<Shared>,
    id: PeerId,
    mut s: quinn::RecvStream,
    rate: Arc<Mutex<Rate>>,
) -> Option<String> {
    loop {
        let t0 = Instant::now();
        let bytes = match wire::read_frame(&mut s).await {
            Ok(Some(b)) => b,
            Ok(None) | Err(ReadError::Stream(_)) => return None,
            Err(ReadError::Wire(e)) => return Some(e.to_string()),
        };
        {
            let now = Instant::now();
            let mut r = rate.lock().unwrap_or_else(|e| e.into_inner());
            if !r.msgs.take(1.0, now) {
                return Some(format!(
                    "message flood: over {} messages per second",
                    shared.limits.msgs_per_sec
                ));
            }
            if !r.bytes.take(bytes.len() as f64, now) {
                return Some(format!(
                    "byte flood: over {} bytes per second",
                    shared.limits.bytes_per_sec
                ));
            }
        }
        let frame = wire::decode_frame(&bytes);
        if bytes.len() > 1 << 20 {
            let kind = match &frame {
                Ok(Frame::Message(m, _)) => m.kind(),
                _ => "other",
            };
            let ms = t0.elapsed().as_millis() as u64;
            tracing::debug!(peer = %id, bytes = bytes.len(), kind, ms, "large frame read");
        }
        match frame {
            Err(e) => return Some(e.to_string()),
            Ok(Frame::Hello(_)) => return Some("a second hello after the handshake".into()),
            Ok(Frame::Peers(list)) => shared.on_pex(id, list),
            Ok(Frame::Message(msg, digest)) => {
                // Relayed copies are deduplicated; what the author itself sends (its periodic
                // re-broadcasts) always goes through, as do point-to-point catch-up messages.
                let first = {
                    let mut st = shared.lock();
                    if let Some(p) = st.peers.get_mut(&id) {
                        match &msg {
                            Message::RequestDecided(h) if !p.requested.contains(h) => {
                                if p.requested.len() >= crate::MAX_REQUESTED {
                                    p.requested.pop_front();
                                }
                                p.requested.push_back(*h);
                            }
                            Message::Vote(_) | Message::Proposal(_) => p.last = msg.height(),
                            _ => {}
                        }
                    }
                    st.seen.insert(digest, Instant::now())
                };
                let exempt = crate::author(&msg) == Some(id)
                    || matches!(
                        msg,
                        Message::RequestDecided(_)
                            | Message::Decided { .. }
                            | Message::RequestSnapshot
                            | Message::SnapshotOffer { .. }
                            | Message::RequestChunk { .. }
                            | Message::SnapshotChunk { .. }
                    );
                if !first && !exempt {
                    continue;
                }
                if let Message::Tx(tx) = &msg {
                    if tx.len() > MAX_TX_BYTES {
                        return Some(format!(
                            "transaction of {} bytes exceeds the limit of {MAX_TX_BYTES} bytes",
                            tx.len()
                        ));
                    }
                }
                let inc = Incoming {
                    from: id,
                    msg,
                    tx_hash: digest.tx_hash(),
                };
                let queue = if let Message::Tx(tx) = &inc.msg {
                    // Transactions are best effort: a busy driver drops them, never a vote.
                    let (n, held) = (tx.len(), &shared.tx_inbox_bytes);
                    if held.fetch_add(n, Ordering::Relaxed) + n > shared.limits.tx_inbox_bytes
                        || shared.tx_inbox.try_send(inc).is_err()
                    {
                        held.fetch_sub(n, Ordering::Relaxed);
                    }
                    continue;
                } else if bytes.len() > wire::BULK_FRAME_BYTES {
                    &shared.bulk_inbox
                } else {
                    &shared.incoming
                };
                if queue.send(inc).await.is_err() {
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of X (dialed by the lower id) and Y (dialed by the higher) an end keeps, given
    /// which handshake it completed first.
    fn kept(local: PeerId, remote: PeerId, x_first: bool) -> &'static str {
        let x_outbound = local < remote;
        let (first, second) = if x_first { ("X", "Y") } else { ("Y", "X") };
        let (first_out, second_out) = if x_first {
            (x_outbound, !x_outbound)
        } else {
            (!x_outbound, x_outbound)
        };
        if replaces_existing(local, remote, first_out, second_out) {
            second
        } else {
            first
        }
    }

    #[test]
    fn duplicate_connections_resolve_the_same_way_on_both_ends() {
        let (lo, hi) = (PeerId::default(), tendr_core::Address([1; 20]));
        for lo_x_first in [true, false] {
            for hi_x_first in [true, false] {
                assert_eq!(kept(lo, hi, lo_x_first), "X");
                assert_eq!(kept(hi, lo, hi_x_first), "X");
            }
        }
        // A second dial in the same direction never replaces the first.
        assert!(!replaces_existing(lo, hi, true, true));
        assert!(!replaces_existing(hi, lo, false, false));
    }
}
