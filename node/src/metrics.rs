//! Prometheus metrics through `prometheus-client`: CometBFT's consensus, p2p and mempool
//! metrics under a configurable namespace (`metrics_namespace`, default `cometbft`) with a
//! `chain_id` label, so dashboards built for CometBFT show a tendr node; and tendr's own
//! (`tendr_*`, no label).
//!
//! How to drive it: [`Metrics::on_decided`] with every decided block, [`Metrics::observe`]
//! with a [`NodeSample`] of the running node (once a second), [`Metrics::on_failed_tx`] and
//! [`Metrics::on_rejected_message`] as they happen; [`Metrics::render`] for `/metrics`.
//!
//! What it does not do: CometBFT's per-step, per-peer and per-channel metrics (tendr has no
//! such channels), or anything about the time before this process started (`total_txs`
//! counts from start).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use tendr_core::types::Block;

/// CometBFT's default metrics namespace.
pub const DEFAULT_NAMESPACE: &str = "cometbft";
/// Decided blocks remembered for the transactions-per-second window.
const TPS_WINDOW_BLOCKS: usize = 20;

/// What the housekeeping task reads from the running node for the gauges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSample {
    /// Last decided height.
    pub height: u64,
    pub round: u32,
    pub peers: usize,
    pub mempool_txs: usize,
    pub mempool_bytes: usize,
    pub is_validator: bool,
    pub validators: usize,
    pub validators_power: u64,
    /// Validators of the last decided height whose signature is not in its commit.
    pub missing_validators: usize,
    pub missing_validators_power: u64,
    pub catching_up: bool,
    /// The highest height a peer showed (block sync's target; 0 when none is ahead).
    pub sync_target: u64,
    /// State sync runs (the node restores a peer's snapshot before it follows the chain).
    pub state_syncing: bool,
}

/// Catch-up progress as the status and metrics show it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SyncRate {
    /// Decided heights per second, over the last sampling interval (smoothed).
    pub blocks_per_sec: f64,
    /// Seconds until the sync target at that rate (while catching up).
    pub eta_secs: Option<u64>,
}

/// CometBFT's metrics.
#[derive(Default)]
struct Comet {
    height: Gauge,
    rounds: Gauge,
    validators: Gauge,
    validators_power: Gauge,
    missing_validators: Gauge,
    missing_validators_power: Gauge,
    byzantine_validators: Gauge,
    num_txs: Gauge,
    total_txs: Gauge,
    block_size_bytes: Gauge,
    block_syncing: Gauge,
    p2p_peers: Gauge,
    mempool_size: Gauge,
    mempool_size_bytes: Gauge,
    mempool_failed_txs: Gauge,
}

/// tendr's own metrics.
#[derive(Default)]
struct Own {
    height: Gauge,
    round: Gauge,
    peers: Gauge,
    mempool_size: Gauge,
    mempool_bytes: Gauge,
    blocks: Counter,
    transactions: Counter,
    tps: Gauge<f64, AtomicU64>,
    rejected_messages: Counter,
    is_validator: Gauge,
    sync_target: Gauge,
    sync_rate: Gauge<f64, AtomicU64>,
    sync_eta: Gauge,
    state_syncing: Gauge,
}

/// The node's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    comet: Comet,
    block_interval: Histogram,
    own: Own,
    commit_latency: Histogram,
    recent: VecDeque<(u64, u64)>,
    last_decided_at_ms: Option<u64>,
    last_block_time_ms: Option<u64>,
    /// Evidence seen since the last decided block.
    evidence: i64,
    /// The previous sample's (height, time ms) and the smoothed rate.
    last_sample: Option<(u64, u64)>,
    rate: SyncRate,
}

fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

impl Metrics {
    /// Metrics named `<namespace>_...` (CometBFT's) with label `chain_id`, and `tendr_...`.
    pub fn new(namespace: &str, chain_id: &str) -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            comet: Comet::default(),
            block_interval: seconds_buckets(),
            own: Own::default(),
            commit_latency: seconds_buckets(),
            recent: VecDeque::new(),
            last_decided_at_ms: None,
            last_block_time_ms: None,
            evidence: 0,
            last_sample: None,
            rate: SyncRate::default(),
        };
        let labels = [(Cow::Borrowed("chain_id"), Cow::Owned(chain_id.to_string()))];
        let cm = m
            .registry
            .sub_registry_with_prefix(namespace)
            .sub_registry_with_labels(labels.into_iter());
        let c = &m.comet;
        let consensus = cm.sub_registry_with_prefix("consensus");
        consensus.register("height", "Height of the chain (last decided block).", c.height.clone());
        consensus.register("rounds", "Number of rounds at the current height.", c.rounds.clone());
        consensus.register("validators", "Number of validators.", c.validators.clone());
        consensus.register(
            "validators_power",
            "Total voting power of the validators.",
            c.validators_power.clone(),
        );
        consensus.register(
            "missing_validators",
            "Validators whose signature is not in the last commit.",
            c.missing_validators.clone(),
        );
        consensus.register(
            "missing_validators_power",
            "Voting power of the validators missing from the last commit.",
            c.missing_validators_power.clone(),
        );
        consensus.register(
            "byzantine_validators",
            "Validators caught equivocating since the previous block.",
            c.byzantine_validators.clone(),
        );
        consensus.register("num_txs", "Transactions in the last block.", c.num_txs.clone());
        consensus.register(
            "total_txs",
            "Transactions decided since this node started.",
            c.total_txs.clone(),
        );
        consensus.register(
            "block_size_bytes",
            "Size of the last block.",
            c.block_size_bytes.clone(),
        );
        consensus.register(
            "block_interval_seconds",
            "Time between this and the previous block (block times).",
            m.block_interval.clone(),
        );
        consensus.register(
            "block_syncing",
            "1 while catching up with decided blocks.",
            c.block_syncing.clone(),
        );
        let p2p = cm.sub_registry_with_prefix("p2p");
        p2p.register("peers", "Connected peers.", c.p2p_peers.clone());
        let mempool = cm.sub_registry_with_prefix("mempool");
        mempool.register("size", "Transactions waiting in the mempool.", c.mempool_size.clone());
        mempool.register(
            "size_bytes",
            "Bytes of the transactions in the mempool.",
            c.mempool_size_bytes.clone(),
        );
        mempool.register(
            "failed_txs",
            "Transactions refused at this node's RPC since start (a count, kept as a gauge so the name is CometBFT's).",
            c.mempool_failed_txs.clone(),
        );
        let t = m.registry.sub_registry_with_prefix("tendr");
        let o = &m.own;
        t.register("height", "Height of the last decided block.", o.height.clone());
        t.register("round", "Consensus round of the current height.", o.round.clone());
        t.register("peers", "Connected peers.", o.peers.clone());
        t.register(
            "mempool_size",
            "Transactions waiting in the mempool.",
            o.mempool_size.clone(),
        );
        t.register(
            "mempool_bytes",
            "Bytes waiting in the mempool.",
            o.mempool_bytes.clone(),
        );
        t.register("blocks", "Blocks decided since start.", o.blocks.clone());
        t.register(
            "transactions",
            "Transactions in blocks decided since start.",
            o.transactions.clone(),
        );
        t.register(
            "transactions_per_second",
            "Transactions per second over the last 20 decided blocks.",
            o.tps.clone(),
        );
        t.register(
            "commit_latency_seconds",
            "Wall-clock time between this node's consecutive decisions.",
            m.commit_latency.clone(),
        );
        t.register(
            "rejected_messages",
            "Peer messages rejected (bad signature, wrong chain, ...).",
            o.rejected_messages.clone(),
        );
        t.register(
            "is_validator",
            "1 when this node's key is in the current validator set.",
            o.is_validator.clone(),
        );
        t.register(
            "sync_target_height",
            "The highest height a peer showed (block sync's target).",
            o.sync_target.clone(),
        );
        t.register(
            "sync_blocks_per_second",
            "Decided heights per second (catch-up speed while block syncing).",
            o.sync_rate.clone(),
        );
        t.register(
            "sync_eta_seconds",
            "Seconds until the sync target at the current rate (0 when not catching up).",
            o.sync_eta.clone(),
        );
        t.register(
            "statesync_syncing",
            "1 while state sync restores a peer's snapshot.",
            o.state_syncing.clone(),
        );
        m
    }

    /// Records one decided block, seen at wall-clock `now_ms`.
    pub fn on_decided(&mut self, now_ms: u64, block: &Block) {
        let txs = block.txs.len() as u64;
        if let Some(prev) = self.last_decided_at_ms {
            self.commit_latency.observe(now_ms.saturating_sub(prev) as f64 / 1000.0);
        }
        self.last_decided_at_ms = Some(now_ms);
        let t = block.header.time.0;
        if let Some(prev) = self.last_block_time_ms {
            self.block_interval.observe(t.saturating_sub(prev) as f64 / 1000.0);
        }
        self.last_block_time_ms = Some(t);
        self.own.blocks.inc();
        self.own.transactions.inc_by(txs);
        self.own.height.set(block.height().0 as i64);
        let c = &self.comet;
        c.height.set(block.height().0 as i64);
        c.num_txs.set(txs as i64);
        c.total_txs.inc_by(txs as i64);
        c.block_size_bytes.set(tendr_core::codec::encode(block).len() as i64);
        c.byzantine_validators.set(std::mem::take(&mut self.evidence));
        self.recent.push_back((now_ms, txs));
        if self.recent.len() > TPS_WINDOW_BLOCKS {
            self.recent.pop_front();
        }
        self.own.tps.set(self.tps());
    }

    /// Records evidence of one equivocation.
    pub fn on_evidence(&mut self) {
        self.evidence += 1;
    }

    /// Records a peer message rejected.
    pub fn on_rejected_message(&mut self) {
        self.own.rejected_messages.inc();
    }

    /// Records a transaction refused at this node's RPC.
    pub fn on_failed_tx(&mut self) {
        self.comet.mempool_failed_txs.inc();
    }

    /// Catch-up speed and time left, from the samples so far.
    pub fn sync_rate(&self) -> SyncRate {
        self.rate
    }

    /// Sets the gauges from a look at the running node, taken at `now_ms`.
    pub fn observe_at(&mut self, now_ms: u64, s: &NodeSample) {
        if let Some((h0, t0)) = self.last_sample {
            if now_ms > t0 {
                let r = s.height.saturating_sub(h0) as f64 * 1000.0 / (now_ms - t0) as f64;
                // Smoothed over a few samples, so one slow second does not swing the ETA.
                self.rate.blocks_per_sec = if self.rate.blocks_per_sec == 0.0 {
                    r
                } else {
                    0.5 * self.rate.blocks_per_sec + 0.5 * r
                };
            }
        }
        self.last_sample = Some((s.height, now_ms));
        let left = s.sync_target.saturating_sub(s.height + 1);
        self.rate.eta_secs = (s.catching_up && left > 0 && self.rate.blocks_per_sec > 0.0)
            .then(|| (left as f64 / self.rate.blocks_per_sec).ceil() as u64);
        let o = &self.own;
        o.sync_target.set(s.sync_target as i64);
        o.sync_rate.set(self.rate.blocks_per_sec);
        o.sync_eta.set(self.rate.eta_secs.unwrap_or(0) as i64);
        o.state_syncing.set(s.state_syncing as i64);
        self.observe(s);
    }

    /// Sets the gauges from a look at the running node.
    pub fn observe(&mut self, s: &NodeSample) {
        let c = &self.comet;
        c.rounds.set(s.round as i64);
        c.validators.set(s.validators as i64);
        c.validators_power.set(s.validators_power as i64);
        c.missing_validators.set(s.missing_validators as i64);
        c.missing_validators_power.set(s.missing_validators_power as i64);
        c.block_syncing.set(s.catching_up as i64);
        c.p2p_peers.set(s.peers as i64);
        c.mempool_size.set(s.mempool_txs as i64);
        c.mempool_size_bytes.set(s.mempool_bytes as i64);
        let o = &self.own;
        o.height.set(s.height as i64);
        o.round.set(s.round as i64);
        o.peers.set(s.peers as i64);
        o.mempool_size.set(s.mempool_txs as i64);
        o.mempool_bytes.set(s.mempool_bytes as i64);
        o.is_validator.set(s.is_validator as i64);
    }

    /// Transactions per second over the last blocks (0 with fewer than two).
    pub fn tps(&self) -> f64 {
        match (self.recent.front(), self.recent.back()) {
            (Some(first), Some(last)) if last.0 > first.0 => {
                let txs: u64 = self.recent.iter().skip(1).map(|r| r.1).sum();
                txs as f64 * 1000.0 / (last.0 - first.0) as f64
            }
            _ => 0.0,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        encode(&mut s, &self.registry).expect("writing to a String cannot fail");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tendr_core::crypto::PrivateKey;
    use tendr_core::types::{BlockData, Hash, Header, Height, TimeMs};

    fn block(h: u64, time_ms: u64, txs: usize) -> Block {
        let k = PrivateKey::from_seed(b"m");
        let header = Header {
            chain_id: "c".into(),
            height: Height(h),
            time: TimeMs(time_ms),
            prev_block_id: None,
            proposer: k.address(),
            txs_hash: Hash::default(),
            app_hash: Hash::default(),
            validators_hash: Hash::default(),
            last_commit_hash: Hash::default(),
        };
        BlockData {
            header,
            txs: vec![b"k=v".to_vec(); txs],
            last_commit: None,
        }
        .into()
    }

    #[test]
    fn cometbft_names_and_tendr_names() {
        let mut m = Metrics::new("cometbft", "chain-x");
        for (i, (ms, txs)) in [(1000, 0), (2000, 10), (3000, 30)].into_iter().enumerate() {
            m.on_decided(ms, &block(i as u64 + 1, ms, txs));
        }
        m.observe(&NodeSample {
            height: 3,
            peers: 3,
            mempool_txs: 2,
            mempool_bytes: 500,
            validators: 4,
            validators_power: 40,
            missing_validators: 1,
            missing_validators_power: 10,
            ..Default::default()
        });
        m.on_failed_tx();
        assert!((m.tps() - 20.0).abs() < 1e-9);
        let text = m.render();
        for want in [
            "cometbft_consensus_height{chain_id=\"chain-x\"} 3",
            "cometbft_consensus_num_txs{chain_id=\"chain-x\"} 30",
            "cometbft_consensus_total_txs{chain_id=\"chain-x\"} 40",
            "cometbft_consensus_validators_power{chain_id=\"chain-x\"} 40",
            "cometbft_consensus_missing_validators{chain_id=\"chain-x\"} 1",
            "cometbft_consensus_block_interval_seconds_count{chain_id=\"chain-x\"} 2",
            "cometbft_consensus_block_interval_seconds_sum{chain_id=\"chain-x\"} 2.0",
            "cometbft_p2p_peers{chain_id=\"chain-x\"} 3",
            "cometbft_mempool_size_bytes{chain_id=\"chain-x\"} 500",
            "cometbft_mempool_failed_txs{chain_id=\"chain-x\"} 1",
            "tendr_transactions_total 40",
            "tendr_commit_latency_seconds_count 2",
            "tendr_commit_latency_seconds_sum 2.0",
            "tendr_peers 3",
            "tendr_mempool_bytes 500",
            "# TYPE tendr_height gauge",
        ] {
            assert!(text.contains(want), "no `{want}` in:\n{text}");
        }
        assert!(!text.contains("_sum_total"), "{text}");
        let other = Metrics::new("acme", "c").render();
        assert!(other.contains("acme_consensus_height{chain_id=\"c\"} 0"), "{other}");
    }
}
