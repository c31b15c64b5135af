//! Link shaping of our own, under the QUIC socket: added latency, jitter, loss, duplication and
//! reordering of the datagrams this node sends, drawn from a seeded ChaCha rng.
//!
//! It exists for tests and benchmarks on machines without `netem`: [`ShapedSocket`] wraps
//! quinn's socket and is put in only when a node's config has a `link_shaping` section; without
//! it the transport binds the plain socket and none of this code runs.
//!
//! What it does and does not do:
//! - It shapes what this node *sends* (like `netem` on egress). Between two shaped nodes a
//!   round trip grows by twice `latency_ms`.
//! - Each datagram is, in this order: dropped with probability `loss`; otherwise sent after
//!   `latency_ms` plus a uniform draw in `[-jitter_ms, +jitter_ms]` (never below zero); held
//!   back a further [`ShapedSocket::reorder_hold`] with probability `reorder` (so datagrams
//!   sent after it overtake it); and sent a second time, 1 ms later, with probability
//!   `duplicate`.
//! - The rng is seeded from `seed` and the node's bound address, so each node draws its own
//!   sequence and the same config draws the same sequence again. The draws are repeatable; the
//!   datagrams they fall on depend on the real scheduling of the process, as on any real link.
//! - Delayed datagrams wait in one bounded queue ([`MAX_HELD_DATAGRAMS`]); past it they are
//!   dropped, as a full router queue would. A send that the kernel refuses when the delay is
//!   over is dropped too (it is UDP; QUIC retransmits).

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Datagrams waiting for their delay at most; more are dropped.
pub const MAX_HELD_DATAGRAMS: usize = 65_536;
/// The largest delay accepted for `latency_ms` and `jitter_ms` each (one minute).
pub const MAX_DELAY_MS: u64 = 60_000;

/// The `link_shaping` section of a node's config.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkShaping {
    /// Added to every datagram sent, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Uniform spread around `latency_ms`, in milliseconds.
    #[serde(default)]
    pub jitter_ms: u64,
    /// Fraction of datagrams dropped, 0 to 1.
    #[serde(default)]
    pub loss: f64,
    /// Fraction of datagrams sent twice, 0 to 1.
    #[serde(default)]
    pub duplicate: f64,
    /// Fraction of datagrams held back so that later ones overtake them, 0 to 1.
    #[serde(default)]
    pub reorder: f64,
    /// Seeds the rng (mixed with the node's bound address).
    #[serde(default)]
    pub seed: u64,
}

/// A field of [`LinkShaping`] out of range: the field, the value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `link_shaping.{field}`: {value} is out of range ({allowed})")]
pub struct ShapingError {
    pub field: &'static str,
    pub value: String,
    pub allowed: &'static str,
}

impl LinkShaping {
    /// Checks every field; the first one out of range is the error.
    pub fn check(&self) -> Result<(), ShapingError> {
        for (field, v) in [("latency_ms", self.latency_ms), ("jitter_ms", self.jitter_ms)] {
            if v > MAX_DELAY_MS {
                return Err(ShapingError {
                    field,
                    value: v.to_string(),
                    allowed: "0-60000 milliseconds",
                });
            }
        }
        for (field, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if !(p.is_finite() && (0.0..=1.0).contains(&p)) {
                return Err(ShapingError {
                    field,
                    value: p.to_string(),
                    allowed: "a fraction from 0 to 1, e.g. 0.01 for 1%",
                });
            }
        }
        Ok(())
    }

    /// Whether any datagram can be delayed (otherwise sends go straight through).
    fn delays(&self) -> bool {
        self.latency_ms > 0 || self.jitter_ms > 0 || self.reorder > 0.0 || self.duplicate > 0.0
    }
}

/// What happens to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    /// `None`: dropped. Otherwise the delay before it is sent.
    pub delay: Option<Duration>,
    /// A second copy, sent this long after the send.
    pub copy: Option<Duration>,
}

/// The seeded decisions, apart from any socket (unit-tested on its own).
pub struct Shaper {
    cfg: LinkShaping,
    rng: ChaCha8Rng,
}

impl fmt::Debug for Shaper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shaper").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// A uniform draw in [0, 1).
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// FNV-1a over the address text: a stable per-node mix for the seed.
fn mix(seed: u64, local: SocketAddr) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in local.to_string().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    seed ^ h
}

impl Shaper {
    pub fn new(cfg: LinkShaping, local: SocketAddr) -> Shaper {
        let rng = ChaCha8Rng::seed_from_u64(mix(cfg.seed, local));
        Shaper { cfg, rng }
    }

    /// Draws the fate of the next datagram. Every draw is made whatever the earlier ones gave,
    /// so one datagram's fate does not shift the sequence of the next ones.
    pub fn draw(&mut self) -> Fate {
        let lost = unit(&mut self.rng) < self.cfg.loss;
        let spread = unit(&mut self.rng);
        let held = unit(&mut self.rng) < self.cfg.reorder;
        let doubled = unit(&mut self.rng) < self.cfg.duplicate;
        if lost {
            return Fate {
                delay: None,
                copy: None,
            };
        }
        let jitter = self.cfg.jitter_ms as f64;
        let ms = (self.cfg.latency_ms as f64 + (spread * 2.0 - 1.0) * jitter).max(0.0);
        let mut delay = Duration::from_micros((ms * 1000.0) as u64);
        if held {
            delay += ShapedSocket::reorder_hold(&self.cfg);
        }
        let copy = doubled.then(|| delay + Duration::from_millis(1));
        Fate {
            delay: Some(delay),
            copy,
        }
    }
}

/// One datagram waiting for its time.
struct Held {
    at: Instant,
    seq: u64,
    destination: SocketAddr,
    src_ip: Option<IpAddr>,
    contents: Vec<u8>,
}

impl PartialEq for Held {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Held {}
impl PartialOrd for Held {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Held {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Counters, for tests and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShapingStats {
    pub sent: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delayed: u64,
}

struct State {
    shaper: Shaper,
    seq: u64,
    held: usize,
    stats: ShapingStats,
}

/// quinn's socket with [`LinkShaping`] applied to what it sends. Receiving is untouched.
///
/// Drive it as quinn does any socket; it must be made inside a tokio runtime (it spawns the
/// task that sends delayed datagrams, which ends when the socket is dropped).
pub struct ShapedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    state: Arc<Mutex<State>>,
    queue: mpsc::UnboundedSender<Held>,
    delays: bool,
}

impl fmt::Debug for ShapedSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShapedSocket")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl ShapedSocket {
    /// Wraps `inner`; `cfg` must have passed [`LinkShaping::check`].
    pub fn new(inner: Arc<dyn AsyncUdpSocket>, cfg: LinkShaping) -> io::Result<ShapedSocket> {
        assert!(cfg.check().is_ok(), "link shaping not checked: {cfg:?}");
        let local = inner.local_addr()?;
        let delays = cfg.delays();
        let state = Arc::new(Mutex::new(State {
            shaper: Shaper::new(cfg, local),
            seq: 0,
            held: 0,
            stats: ShapingStats::default(),
        }));
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(release(inner.clone(), state.clone(), rx));
        Ok(ShapedSocket {
            inner,
            state,
            queue,
            delays,
        })
    }

    /// How long a reordered datagram is held back beyond its delay: half the latency plus
    /// 5 ms, enough for the datagrams sent just after it to overtake it.
    pub fn reorder_hold(cfg: &LinkShaping) -> Duration {
        Duration::from_millis(cfg.latency_ms / 2 + 5)
    }

    pub fn stats(&self) -> ShapingStats {
        self.lock().stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shapes one datagram (quinn hands us one at a time: see `max_transmit_segments`).
    fn shape(&self, t: &Transmit) -> io::Result<()> {
        let now = Instant::now();
        let mut st = self.lock();
        let fate = st.shaper.draw();
        let Some(delay) = fate.delay else {
            st.stats.dropped += 1;
            return Ok(());
        };
        if !self.delays {
            st.stats.sent += 1;
            drop(st);
            return self.inner.try_send(t);
        }
        for (i, d) in [Some(delay), fate.copy].into_iter().flatten().enumerate() {
            if st.held >= MAX_HELD_DATAGRAMS {
                st.stats.dropped += 1;
                continue;
            }
            st.held += 1;
            st.seq += 1;
            st.stats.delayed += 1;
            if i > 0 {
                st.stats.duplicated += 1;
            }
            let held = Held {
                at: now + d,
                seq: st.seq,
                destination: t.destination,
                src_ip: t.src_ip,
                contents: t.contents.to_vec(),
            };
            if self.queue.send(held).is_err() {
                return Err(io::Error::other("the link shaping task has stopped"));
            }
        }
        Ok(())
    }
}

/// Sends the held datagrams when their time comes; ends when the socket is dropped.
async fn release(inner: Arc<dyn AsyncUdpSocket>, state: Arc<Mutex<State>>, mut rx: mpsc::UnboundedReceiver<Held>) {
    let mut heap: BinaryHeap<Reverse<Held>> = BinaryHeap::new();
    let mut writable = inner.clone().create_io_poller();
    loop {
        let next = heap.peek().map(|Reverse(h)| h.at);
        tokio::select! {
            got = rx.recv() => match got {
                Some(h) => heap.push(Reverse(h)),
                None => return,
            },
            _ = async { tokio::time::sleep_until(next.expect("guarded")).await }, if next.is_some() => {
                let now = Instant::now();
                while heap.peek().is_some_and(|Reverse(h)| h.at <= now) {
                    let Reverse(h) = heap.pop().expect("peeked");
                    let sent = send(&*inner, &mut writable, &h).await;
                    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
                    st.held -= 1;
                    if sent {
                        st.stats.sent += 1;
                    } else {
                        st.stats.dropped += 1;
                    }
                }
            }
        }
    }
}

/// Sends one held datagram, waiting while the socket's buffer is full (a `WouldBlock` clears
/// the socket's readiness: without the wait every later send would fail too). False when the
/// kernel refused it.
async fn send(inner: &dyn AsyncUdpSocket, writable: &mut Pin<Box<dyn UdpPoller>>, h: &Held) -> bool {
    let t = Transmit {
        destination: h.destination,
        ecn: None,
        contents: &h.contents,
        segment_size: None,
        src_ip: h.src_ip,
    };
    loop {
        match inner.try_send(&t) {
            Ok(()) => return true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if std::future::poll_fn(|cx| writable.as_mut().poll_writable(cx))
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            Err(e) => {
                tracing::debug!("link shaping: a delayed datagram to {} was refused: {e}", h.destination);
                return false;
            }
        }
    }
}

impl AsyncUdpSocket for ShapedSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        self.shape(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// One datagram per send, so each one gets its own fate.
    fn max_transmit_segments(&self) -> usize {
        1
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(latency_ms: u64, jitter_ms: u64, loss: f64, duplicate: f64, reorder: f64) -> LinkShaping {
        LinkShaping {
            latency_ms,
            jitter_ms,
            loss,
            duplicate,
            reorder,
            seed: 7,
        }
    }

    fn local() -> SocketAddr {
        "10.77.0.1:26656".parse().unwrap()
    }

    #[test]
    fn check_names_the_field_and_the_range() {
        assert!(cfg(100, 5, 0.01, 0.0, 0.0).check().is_ok());
        let e = cfg(0, 0, 1.5, 0.0, 0.0).check().unwrap_err();
        assert_eq!(
            e.to_string(),
            "field `link_shaping.loss`: 1.5 is out of range (a fraction from 0 to 1, e.g. 0.01 for 1%)"
        );
        assert_eq!(cfg(0, 0, 0.0, -0.1, 0.0).check().unwrap_err().field, "duplicate");
        assert_eq!(cfg(0, 0, 0.0, 0.0, f64::NAN).check().unwrap_err().field, "reorder");
        assert_eq!(cfg(60_001, 0, 0.0, 0.0, 0.0).check().unwrap_err().field, "latency_ms");
        assert_eq!(cfg(0, 70_000, 0.0, 0.0, 0.0).check().unwrap_err().field, "jitter_ms");
    }

    #[test]
    fn the_same_seed_draws_the_same_fates_and_another_address_others() {
        let c = cfg(100, 20, 0.1, 0.1, 0.1);
        let run = |addr: SocketAddr| {
            let mut s = Shaper::new(c.clone(), addr);
            (0..1000).map(|_| s.draw()).collect::<Vec<_>>()
        };
        assert_eq!(run(local()), run(local()));
        assert_ne!(run(local()), run("10.77.0.2:26656".parse().unwrap()));
    }

    #[test]
    fn fractions_and_delays_match_the_config() {
        let c = cfg(100, 5, 0.01, 0.02, 0.05);
        let mut s = Shaper::new(c.clone(), local());
        let n = 200_000;
        let fates: Vec<Fate> = (0..n).map(|_| s.draw()).collect();
        let lost = fates.iter().filter(|f| f.delay.is_none()).count() as f64 / n as f64;
        let copies = fates.iter().filter(|f| f.copy.is_some()).count() as f64 / n as f64;
        let hold = ShapedSocket::reorder_hold(&c);
        let held = fates
            .iter()
            .filter(|f| f.delay.is_some_and(|d| d > Duration::from_millis(105)))
            .count() as f64
            / n as f64;
        assert!((lost - 0.01).abs() < 0.002, "loss {lost}");
        assert!((copies - 0.02 * 0.99).abs() < 0.003, "duplicates {copies}");
        assert!((held - 0.05 * 0.99).abs() < 0.005, "reordered {held}");
        for f in &fates {
            let Some(d) = f.delay else { continue };
            let base = if d > Duration::from_millis(105) { d - hold } else { d };
            assert!(
                (Duration::from_millis(95)..=Duration::from_millis(105)).contains(&base),
                "{d:?}"
            );
            if let Some(c) = f.copy {
                assert_eq!(c, d + Duration::from_millis(1));
            }
        }
        let mut quiet = Shaper::new(cfg(0, 0, 0.0, 0.0, 0.0), local());
        assert!((0..1000).all(|_| quiet.draw()
            == Fate {
                delay: Some(Duration::ZERO),
                copy: None
            }));
    }

    /// Through real sockets on loopback: delays, loss, copies and order as configured.
    #[tokio::test]
    async fn the_socket_delays_drops_and_duplicates_datagrams() {
        let rt: Arc<dyn quinn::Runtime> = Arc::new(quinn::TokioRuntime);
        let recv = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = recv.local_addr().unwrap();
        recv.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        let send = |c: LinkShaping| {
            let inner = rt
                .wrap_udp_socket(std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
                .unwrap();
            ShapedSocket::new(inner, c).unwrap()
        };
        fn datagram(to: SocketAddr, bytes: &[u8]) -> Transmit<'_> {
            Transmit {
                destination: to,
                ecn: None,
                contents: bytes,
                segment_size: None,
                src_ip: None,
            }
        }
        let transmit = |bytes: &'static [u8]| datagram(to, bytes);
        let recv = tokio::task::spawn_blocking(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while let Ok(n) = recv.recv(&mut buf) {
                got.push((std::time::Instant::now(), buf[..n].to_vec()));
            }
            got
        });
        // 80 ms latency: nothing arrives early; a second socket duplicates everything.
        let slow = send(cfg(80, 0, 0.0, 0.0, 0.0));
        let started = std::time::Instant::now();
        for i in 0..20u8 {
            slow.try_send(&datagram(to, &[1, i])).unwrap();
        }
        let twice = send(cfg(0, 0, 0.0, 1.0, 0.0));
        twice.try_send(&transmit(&[2, 0])).unwrap();
        let lossy = send(cfg(0, 0, 1.0, 0.0, 0.0));
        for i in 0..20u8 {
            lossy.try_send(&datagram(to, &[3, i])).unwrap();
        }
        let got = recv.await.unwrap();
        let slow_got: Vec<_> = got.iter().filter(|(_, b)| b[0] == 1).collect();
        assert_eq!(slow_got.len(), 20);
        assert!(slow_got.iter().all(|(t, _)| *t - started >= Duration::from_millis(79)));
        let order: Vec<u8> = slow_got.iter().map(|(_, b)| b[1]).collect();
        assert_eq!(order, (0..20).collect::<Vec<_>>(), "equal delays keep the order");
        assert_eq!(got.iter().filter(|(_, b)| b[0] == 2).count(), 2);
        assert_eq!(got.iter().filter(|(_, b)| b[0] == 3).count(), 0);
        assert_eq!(lossy.stats().dropped, 20);
        assert_eq!(twice.stats().duplicated, 1);
        assert_eq!(slow.stats().sent, 20);
    }
}
