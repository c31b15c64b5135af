//! Transaction load: a [`Workload`] generates transactions from the run's seeded stream and
//! says which node receives each. The simulator calls it at the times it asks for.
//!
//! [`KvWorkload`] is the built-in application's load (`key=value` writes); an application
//! brings its own (see the ledger example's random transfers).

use crate::config;
use crate::rng::Rng;

/// What a workload sees and submits through at one of its times.
pub struct WorkloadCtx<'a> {
    /// Virtual time (ms).
    pub now_ms: u64,
    /// The workload's own seeded stream.
    pub rng: &'a mut Rng,
    /// The nodes that may receive transactions now: honest and running.
    pub nodes: &'a [usize],
    /// Per node (by number): workload transactions submitted to it and not yet committed.
    pub pending: &'a [u32],
    pub(crate) out: &'a mut Vec<(usize, Vec<u8>)>,
}

impl WorkloadCtx<'_> {
    /// Submits `tx` to `node` (one of [`WorkloadCtx::nodes`]) as a client would.
    pub fn submit(&mut self, node: usize, tx: Vec<u8>) {
        self.out.push((node, tx));
    }
}

/// A deterministic transaction generator. Everything it draws comes from `ctx.rng`, so the
/// same seed gives the same load.
pub trait Workload {
    /// Virtual time of its first call; `None`: it submits nothing.
    fn first_ms(&self) -> Option<u64>;
    /// Submits this moment's transactions and returns the time of the next call (`None`: done).
    fn tick(&mut self, ctx: &mut WorkloadCtx<'_>) -> Option<u64>;
}

/// No transactions.
pub struct NoLoad;

impl Workload for NoLoad {
    fn first_ms(&self) -> Option<u64> {
        None
    }
    fn tick(&mut self, _: &mut WorkloadCtx<'_>) -> Option<u64> {
        None
    }
}

/// The key-value application's load: `txs_per_sec` writes of about `tx_bytes` bytes, each to a
/// random honest node, over `keys` keys (0: a new key each time).
pub struct KvWorkload {
    cfg: config::Workload,
    count: u64,
    /// Closed loop: each node's unspent send rate, in thousandths of a transaction.
    credit: Vec<u64>,
}

impl KvWorkload {
    pub fn new(cfg: config::Workload) -> Self {
        KvWorkload {
            cfg,
            count: 0,
            credit: vec![],
        }
    }

    /// One transaction of about `tx_bytes` bytes.
    fn tx(&mut self, rng: &mut Rng) -> Vec<u8> {
        self.count += 1;
        let pad = (self.cfg.tx_bytes as usize).saturating_sub(24).max(1);
        let value = hex::encode(rng.bytes(pad.div_ceil(2)));
        format!("k{}={}#{}", self.key(), &value[..pad.min(value.len())], self.count).into_bytes()
    }

    /// Closed loop, every millisecond: each node's clients send at their share of the rate
    /// while fewer than `window_per_node` of that node's transactions are uncommitted. Clients
    /// that wait do not bank their rate (at most one transaction's credit is kept).
    fn tick_closed(&mut self, ctx: &mut WorkloadCtx<'_>) -> Option<u64> {
        let share = u64::from(self.cfg.txs_per_sec) / ctx.pending.len().max(1) as u64;
        self.credit.resize(ctx.pending.len(), 0);
        for &node in ctx.nodes {
            let mut pending = ctx.pending[node];
            self.credit[node] += share;
            while self.credit[node] >= 1000 && pending < self.cfg.window_per_node {
                self.credit[node] -= 1000;
                pending += 1;
                let tx = self.tx(ctx.rng);
                ctx.submit(node, tx);
            }
            if pending >= self.cfg.window_per_node {
                self.credit[node] = self.credit[node].min(1000);
            }
        }
        Some(ctx.now_ms + 1)
    }

    fn key(&self) -> u64 {
        if self.cfg.keys > 0 {
            self.count % self.cfg.keys as u64
        } else {
            self.count
        }
    }
}

impl Workload for KvWorkload {
    fn first_ms(&self) -> Option<u64> {
        (self.cfg.txs_per_sec > 0).then_some(1)
    }

    fn tick(&mut self, ctx: &mut WorkloadCtx<'_>) -> Option<u64> {
        if self.cfg.window_per_node > 0 {
            return self.tick_closed(ctx);
        }
        let w = &self.cfg;
        if !ctx.nodes.is_empty() {
            let s = *ctx.rng.pick(ctx.nodes);
            self.count += 1;
            let pad = (w.tx_bytes as usize).saturating_sub(24).max(1);
            let value = hex::encode(ctx.rng.bytes(pad.div_ceil(2)));
            let tx = format!("k{}={}#{}", self.key(), &value[..pad.min(value.len())], self.count).into_bytes();
            ctx.submit(s, tx);
        }
        let gap = (1000 / w.txs_per_sec.max(1) as u64).max(1);
        let per_tick = if w.txs_per_sec > 1000 {
            w.txs_per_sec as u64 / 1000
        } else {
            1
        };
        for _ in 1..per_tick {
            self.count += 1;
            let s = *ctx.rng.pick(ctx.nodes);
            let tx = format!("k{}=v#{}", self.key(), self.count).into_bytes();
            ctx.submit(s, tx);
        }
        Some(ctx.now_ms + gap)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{FaultKind, Latency, SimConfig};

    /// The most committed workload transactions that were uncommitted at once (from each one's
    /// commit time and latency), and how many committed.
    fn most_in_flight(cfg: SimConfig) -> (usize, usize) {
        let r = crate::world::run(cfg).unwrap();
        assert!(r.ok(), "{:?}", r.violations);
        let mut edges: Vec<(u64, i64)> = vec![];
        for &(at, latency) in &r.tx_latencies {
            edges.push((at - latency, 1));
            edges.push((at, -1));
        }
        edges.sort_unstable_by_key(|&(t, d)| (t, d)); // a commit before a submit at one time
        let (mut now, mut most) = (0i64, 0i64);
        for (_, d) in edges {
            now += d;
            most = most.max(now);
        }
        (most as usize, r.tx_latencies.len())
    }

    fn load(window: u32) -> SimConfig {
        let mut c = SimConfig::partition_workload(5_000, 2_000, 4_000, 6_000);
        c.validators = 4;
        c.faults[0].kind = FaultKind::Partition {
            groups: vec![vec![0, 1, 2], vec![3]],
        };
        c.network.latency = Latency::Fixed { ms: 20 };
        c.workload.window_per_node = window;
        c
    }

    /// Closed-loop clients never have more than their window uncommitted per node, also while a
    /// node is cut off; open-loop clients at the same rate pile transactions up.
    #[test]
    fn closed_loop_clients_keep_at_most_their_window_in_flight() {
        let (closed, committed) = most_in_flight(load(20));
        assert!(closed <= 4 * 20, "{closed} in flight with a window of 20 per node");
        assert!(committed > 1_000, "the load ran: {committed} committed");
        let (open, _) = most_in_flight(load(0));
        assert!(open > 4 * 20, "the open loop is not bounded by a window: {open}");
    }
}
