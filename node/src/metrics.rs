//! Prometheus metrics, rendered by hand in the text exposition format (no extra dependency).

use std::collections::VecDeque;
use std::fmt::Write;

/// Decided blocks remembered for the transactions-per-second window.
const TPS_WINDOW_BLOCKS: usize = 20;

#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub height: u64,
    pub round: u32,
    pub peers: usize,
    pub mempool_txs: usize,
    pub mempool_bytes: usize,
    pub blocks_total: u64,
    pub txs_total: u64,
    /// Wall-clock time between this node's last two decisions.
    pub commit_latency_ms: u64,
    pub commit_latency_sum_ms: u64,
    pub rejected_messages_total: u64,
    pub is_validator: bool,
    recent: VecDeque<(u64, u64)>,
    last_decided_at_ms: Option<u64>,
}

impl Metrics {
    /// Records one decided block with `txs` transactions, seen at wall-clock `now_ms`.
    pub fn on_decided(&mut self, now_ms: u64, txs: usize) {
        if let Some(prev) = self.last_decided_at_ms {
            self.commit_latency_ms = now_ms.saturating_sub(prev);
            self.commit_latency_sum_ms += self.commit_latency_ms;
        }
        self.last_decided_at_ms = Some(now_ms);
        self.blocks_total += 1;
        self.txs_total += txs as u64;
        self.recent.push_back((now_ms, txs as u64));
        if self.recent.len() > TPS_WINDOW_BLOCKS {
            self.recent.pop_front();
        }
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

    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut g = |name: &str, kind: &str, help: &str, v: String| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        g(
            "tendr_height",
            "gauge",
            "Height of the last decided block.",
            self.height.to_string(),
        );
        g(
            "tendr_round",
            "gauge",
            "Consensus round of the current height.",
            self.round.to_string(),
        );
        g("tendr_peers", "gauge", "Connected peers.", self.peers.to_string());
        g(
            "tendr_mempool_size",
            "gauge",
            "Transactions waiting in the mempool.",
            self.mempool_txs.to_string(),
        );
        g(
            "tendr_mempool_bytes",
            "gauge",
            "Bytes waiting in the mempool.",
            self.mempool_bytes.to_string(),
        );
        g(
            "tendr_blocks_total",
            "counter",
            "Blocks decided since start.",
            self.blocks_total.to_string(),
        );
        g(
            "tendr_transactions_total",
            "counter",
            "Transactions in blocks decided since start.",
            self.txs_total.to_string(),
        );
        g(
            "tendr_transactions_per_second",
            "gauge",
            "Transactions per second over the last 20 decided blocks.",
            format!("{:.3}", self.tps()),
        );
        g(
            "tendr_commit_latency_seconds",
            "gauge",
            "Wall-clock time between this node's last two decisions.",
            format!("{:.3}", self.commit_latency_ms as f64 / 1000.0),
        );
        g(
            "tendr_commit_latency_seconds_sum",
            "counter",
            "Sum of the times between decisions.",
            format!("{:.3}", self.commit_latency_sum_ms as f64 / 1000.0),
        );
        g(
            "tendr_rejected_messages_total",
            "counter",
            "Peer messages rejected (bad signature, wrong chain, ...).",
            self.rejected_messages_total.to_string(),
        );
        g(
            "tendr_is_validator",
            "gauge",
            "1 when this node's key is in the current validator set.",
            (self.is_validator as u8).to_string(),
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tps_and_latency() {
        let mut m = Metrics::default();
        m.on_decided(1000, 0);
        m.on_decided(2000, 10);
        m.on_decided(3000, 30);
        assert_eq!(m.commit_latency_ms, 1000);
        assert!((m.tps() - 20.0).abs() < 1e-9);
        let text = m.render();
        assert!(text.contains("tendr_transactions_total 40"));
        assert!(text.contains("# TYPE tendr_height gauge"));
    }
}
