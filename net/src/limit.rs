//! Small bounded helpers: a token bucket, a bounded seen-set, a bounded ban list.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

/// Tuning of the transport. Every queue and map is bounded by one of these.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Messages a peer may send per second (sustained); bursts up to twice that.
    pub msgs_per_sec: u32,
    /// Bytes a peer may send per second (sustained); bursts up to twice that plus one maximal frame.
    pub bytes_per_sec: u64,
    /// Frames queued for one peer on the consensus stream.
    pub consensus_queue: usize,
    /// Frames queued for one peer on the transaction stream.
    pub tx_queue: usize,
    /// Bytes queued for one peer on both streams together.
    pub queue_bytes: usize,
    /// How long a penalized or misbehaving peer is kept out.
    pub ban: Duration,
    /// First and largest reconnect delay (before jitter).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Handshake deadline.
    pub handshake: Duration,
    /// Digests of recently seen messages kept for deduplication, and for how long.
    pub seen_entries: usize,
    pub seen_ttl: Duration,
    /// A consensus message is relayed at most once in this time, however often it arrives.
    /// The dedup window above is short (the authors' periodic re-broadcasts must reach the
    /// engine), so on links slower than it copies came back as new and were relayed again: on
    /// 100 ms links with jitter and loss that relay storm filled the congestion window and
    /// stalled consensus.
    pub relay_ttl: Duration,
    /// Addresses remembered from seeds and peer exchange.
    pub known_addrs: usize,
    /// Peers banned at once.
    pub banned_entries: usize,
    /// Period of peer exchange and of the dialer's look at its address book.
    pub pex_interval: Duration,
    pub dial_interval: Duration,
    /// Capacity of the channels towards the driver: small consensus messages (at most
    /// `wire::BULK_FRAME_BYTES` each), large ones (proposals, decided blocks), transactions
    /// (at most `MAX_TX_BYTES` each).
    pub incoming_queue: usize,
    pub bulk_inbox: usize,
    pub tx_inbox: usize,
    /// Bytes of transactions waiting in the transaction inbox (beyond, gossiped transactions
    /// are dropped): `tx_inbox` maximal transactions would be 512 MiB.
    pub tx_inbox_bytes: usize,
    /// A peer that sends messages for heights more than `MAX_FUTURE_HEIGHTS` beyond ours is
    /// asked for the decided block of our height; it must serve it within this time, or the
    /// challenge counts as failed (see [`crate::claims`]).
    pub far_future_answer: Duration,
    /// Failed challenges in a row before the peer is banned.
    pub far_future_strikes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            msgs_per_sec: 50_000,
            bytes_per_sec: 128 * 1024 * 1024,
            consensus_queue: 4096,
            tx_queue: 16_384,
            queue_bytes: 64 * 1024 * 1024,
            ban: Duration::from_secs(60),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            handshake: Duration::from_secs(5),
            seen_entries: 200_000,
            seen_ttl: Duration::from_millis(250),
            relay_ttl: Duration::from_secs(10),
            known_addrs: 256,
            banned_entries: 1024,
            pex_interval: Duration::from_secs(2),
            dial_interval: Duration::from_millis(200),
            incoming_queue: 4096,
            bulk_inbox: 8,
            tx_inbox: 8192,
            tx_inbox_bytes: 16 * 1024 * 1024,
            far_future_answer: Duration::from_secs(5),
            far_future_strikes: 3,
        }
    }
}

/// A token bucket: `rate` per second, capacity `burst`.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }
    /// Takes `n` tokens; false when the bucket is empty (the peer is over its limit).
    pub fn take(&mut self, n: f64, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens < n {
            return false;
        }
        self.tokens -= n;
        true
    }
}

/// Remembers the last `cap` items inserted, each for `ttl`: a repeat within `ttl` is a
/// duplicate, a repeat after it counts as new (periodic re-broadcasts must get through).
/// Items older than `ttl` are forgotten as soon as a newer one comes in (they would count as
/// new anyway), so the table holds one `ttl` of traffic, not `cap` items, and stays small.
#[derive(Debug)]
pub struct SeenSet<T, S = RandomState> {
    at: HashMap<T, Instant, S>,
    /// Insertions in time order; an entry whose time no longer matches `at` is stale.
    order: VecDeque<(T, Instant)>,
    cap: usize,
    ttl: Duration,
}

impl<T: Hash + Eq + Copy, S: BuildHasher + Default> SeenSet<T, S> {
    pub fn new(cap: usize, ttl: Duration) -> Self {
        SeenSet {
            at: HashMap::default(),
            order: VecDeque::new(),
            cap: cap.max(1),
            ttl,
        }
    }
    /// True when `t` was not seen within the last `ttl`.
    pub fn insert(&mut self, t: T, now: Instant) -> bool {
        while let Some(&(_, at)) = self.order.front() {
            if now.saturating_duration_since(at) < self.ttl {
                break;
            }
            self.forget_oldest();
        }
        if let Some(seen) = self.at.get_mut(&t) {
            if now.saturating_duration_since(*seen) < self.ttl {
                return false;
            }
            *seen = now; // (only when `now` went back in time: expired items were forgotten)
        } else {
            if self.order.len() >= self.cap {
                self.forget_oldest();
            }
            self.at.insert(t, now);
        }
        self.order.push_back((t, now));
        true
    }
    fn forget_oldest(&mut self) {
        if let Some((old, at)) = self.order.pop_front() {
            if self.at.get(&old) == Some(&at) {
                self.at.remove(&old);
            }
        }
    }
    pub fn len(&self) -> usize {
        self.at.len()
    }
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

/// A map that forgets its oldest entries beyond `cap`.
#[derive(Debug)]
pub struct BoundedMap<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Copy, V> BoundedMap<K, V> {
    pub fn new(cap: usize) -> Self {
        BoundedMap {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }
    /// Inserts unless present (the first value stays).
    pub fn insert(&mut self, k: K, v: V) {
        if self.map.contains_key(&k) {
            return;
        }
        if self.order.len() >= self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        self.map.insert(k, v);
        self.order.push_back(k);
    }
    pub fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }
    pub fn len(&self) -> usize {
        self.order.len()
    }
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// Keys kept out until a deadline, at most `cap` at once (expired ones first, then the oldest).
#[derive(Debug)]
pub struct BanList<K> {
    until: HashMap<K, (Instant, String)>,
    cap: usize,
}

impl<K: Hash + Eq + Copy> BanList<K> {
    pub fn new(cap: usize) -> Self {
        BanList {
            until: HashMap::new(),
            cap: cap.max(1),
        }
    }
    pub fn ban(&mut self, k: K, until: Instant, reason: String, now: Instant) {
        self.until.retain(|_, (t, _)| *t > now);
        if self.until.len() >= self.cap && !self.until.contains_key(&k) {
            let oldest = self.until.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| *k);
            if let Some(o) = oldest {
                self.until.remove(&o);
            }
        }
        self.until.insert(k, (until, reason));
    }
    /// The remaining ban and its reason, if `k` is banned.
    pub fn banned(&self, k: &K, now: Instant) -> Option<(Duration, &str)> {
        self.until
            .get(k)
            .filter(|(t, _)| *t > now)
            .map(|(t, r)| (*t - now, r.as_str()))
    }
}

/// A small xorshift generator for jitter (not for anything secret).
#[derive(Debug)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        Jitter(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// `d` scaled by a factor in [0.5, 1.0).
    pub fn spread(&mut self, d: Duration) -> Duration {
        let f = 0.5 + (self.next_u64() % 1000) as f64 / 2000.0;
        d.mul_f64(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_seen_and_bans_are_bounded() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, 20.0);
        assert!(b.take(20.0, t0));
        assert!(!b.take(1.0, t0));
        assert!(b.take(10.0, t0 + Duration::from_secs(1)));
        let mut s = SeenSet::<i32>::new(2, Duration::from_secs(1));
        assert!(s.insert(1, t0) && s.insert(2, t0) && !s.insert(1, t0));
        assert!(s.insert(3, t0) && s.insert(1, t0));
        assert_eq!(s.len(), 2);
        assert!(!s.insert(1, t0) && s.insert(1, t0 + Duration::from_secs(2)));
        // The expired 3 is forgotten, not kept until the cap pushes it out.
        assert_eq!(s.len(), 1);
        assert!(!s.insert(1, t0 + Duration::from_millis(2500)) && s.insert(3, t0 + Duration::from_millis(2500)));
        let mut m = BoundedMap::new(2);
        m.insert(1, 'a');
        m.insert(1, 'b');
        m.insert(2, 'c');
        m.insert(3, 'd');
        assert_eq!((m.get(&1), m.get(&2), m.len()), (None, Some(&'c'), 2));
        let mut bans = BanList::new(2);
        for k in 0..5 {
            bans.ban(k, t0 + Duration::from_secs(10 + k), "x".into(), t0);
        }
        assert!(bans.until.len() <= 2);
        assert!(bans.banned(&4, t0).is_some());
        assert!(bans.banned(&4, t0 + Duration::from_secs(100)).is_none());
    }
}
