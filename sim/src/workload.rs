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
}

impl KvWorkload {
    pub fn new(cfg: config::Workload) -> Self {
        KvWorkload { cfg, count: 0 }
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
