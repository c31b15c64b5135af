//! `tendr bench-rpc`: a bounded load generator that submits transactions the way users do,
//! through nodes' CometBFT RPC (`broadcast_tx_sync` or `broadcast_tx_async`), from outside the
//! node processes, and reports committed transactions per second and the commit latency a
//! client sees.
//!
//! Each node gets `senders` connections (HTTP/1.1 keep-alive), each sending one request at a
//! time; a node's senders pause while its mempool holds `max_pending` or more transactions
//! (read with `num_unconfirmed_txs` every 20 ms), so the load stays bounded. The rate counts
//! the transactions of the blocks whose times fall in the measured window (after a warm-up
//! second); the latency comes from probe transactions sent every 100 ms and looked up with
//! `/tx` every 10 ms until committed.

use crate::error::{CliError, CliResult};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub nodes: Vec<SocketAddr>,
    pub senders: usize,
    pub seconds: u64,
    pub tx_bytes: usize,
    pub max_pending: u64,
    /// `broadcast_tx_async` instead of `broadcast_tx_sync`.
    pub r#async: bool,
}

/// One keep-alive HTTP/1.1 connection, one request at a time.
struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

/// Longest reply the generator reads.
const MAX_REPLY: usize = 1 << 20;

impl Conn {
    fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            stream: None,
            buf: Vec::new(),
        }
    }

    /// GET `path`; the reply's status and body.
    async fn get(&mut self, path: &str) -> Result<(u16, Vec<u8>), String> {
        let r = tokio::time::timeout(Duration::from_secs(10), self.try_get(path)).await;
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(format!("{}: no answer within 10 s", self.addr))
            }
        }
    }

    async fn try_get(&mut self, path: &str) -> Result<(u16, Vec<u8>), String> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("{}: {e}", self.addr))?;
            let _ = s.set_nodelay(true);
            self.stream = Some(s);
            self.buf.clear();
        }
        let s = self.stream.as_mut().expect("connected above");
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or("reply without content-length")?;
                if len > MAX_REPLY {
                    return Err(format!("reply of {len} bytes"));
                }
                if self.buf.len() >= end + 4 + len {
                    let body = self.buf[end + 4..end + 4 + len].to_vec();
                    self.buf.drain(..end + 4 + len);
                    return Ok((code, body));
                }
            }
            if self.buf.len() > MAX_REPLY + 4096 {
                return Err("reply too large".into());
            }
            let mut chunk = [0u8; 16 << 10];
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn json(&mut self, path: &str) -> Result<Value, String> {
        let (code, body) = self.get(path).await?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| format!("{path}: {e}"))?;
        if code != 200 {
            return Err(format!("{path}: HTTP {code}: {v}"));
        }
        Ok(v)
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A unique key-value transaction of exactly `size` bytes (at least 16).
/// Transaction `seq` of `sender` in the run `run` (runs on one chain must not repeat each
/// other's transactions: a probe already committed by an earlier run would be "found" at once).
fn transaction(run: u64, sender: usize, seq: u64, size: usize) -> Vec<u8> {
    let mut tx = format!("b{run:x}.{sender}-{seq}=").into_bytes();
    tx.resize(size.max(tx.len() + 1), b'x');
    tx
}

struct Shared {
    /// Distinguishes this run's transactions from earlier runs' (the start time in µs).
    run: u64,
    stop: AtomicBool,
    sent: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
}

async fn sender(addr: SocketAddr, id: usize, cfg: Arc<BenchConfig>, s: Arc<Shared>, pending: Arc<AtomicU64>) {
    let mut conn = Conn::new(addr);
    let method = if cfg.r#async {
        "broadcast_tx_async"
    } else {
        "broadcast_tx_sync"
    };
    let mut seq = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        if pending.load(Ordering::Relaxed) >= cfg.max_pending {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        }
        seq += 1;
        let tx = transaction(s.run, id, seq, cfg.tx_bytes);
        let path = format!("/{method}?tx=0x{}", hex::encode(&tx));
        match conn.json(&path).await {
            Ok(v) if v["result"]["code"] == 0 => {
                s.sent.fetch_add(1, Ordering::Relaxed);
                pending.fetch_add(1, Ordering::Relaxed);
            }
            Ok(_) => {
                s.refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(_) => {
                s.errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Keeps `pending` at the node's mempool size.
async fn mempool_watch(addr: SocketAddr, s: Arc<Shared>, pending: Arc<AtomicU64>) {
    let mut conn = Conn::new(addr);
    while !s.stop.load(Ordering::Relaxed) {
        if let Ok(v) = conn.json("/num_unconfirmed_txs").await {
            if let Some(n) = v["result"]["total"].as_str().and_then(|n| n.parse().ok()) {
                pending.store(n, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Commit latencies (ms) of probe transactions, one every 100 ms.
async fn probes(addr: SocketAddr, s: Arc<Shared>) -> Vec<u64> {
    let mut conn = Conn::new(addr);
    let mut out = Vec::new();
    let mut seq = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        seq += 1;
        let tx = transaction(s.run, usize::MAX, seq, 64);
        let t0 = Instant::now();
        let Ok(v) = conn
            .json(&format!("/broadcast_tx_sync?tx=0x{}", hex::encode(&tx)))
            .await
        else {
            continue;
        };
        let Some(hash) = v["result"]["hash"].as_str().map(String::from) else {
            continue;
        };
        while t0.elapsed() < Duration::from_secs(20) && !s.stop.load(Ordering::Relaxed) {
            if matches!(conn.get(&format!("/tx?hash=0x{hash}")).await, Ok((200, _))) {
                out.push(t0.elapsed().as_millis() as u64);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(t0.elapsed())).await;
    }
    out
}

/// Transactions of the blocks whose times are in `[from_ms, to_ms)`.
async fn committed_between(addr: SocketAddr, from_ms: u64, to_ms: u64) -> Result<(u64, u64), String> {
    let mut conn = Conn::new(addr);
    let status = conn.json("/status").await?;
    let mut max: u64 = status["result"]["sync_info"]["latest_block_height"]
        .as_str()
        .and_then(|h| h.parse().ok())
        .ok_or("status without a height")?;
    let (mut txs, mut blocks) = (0, 0);
    while max > 0 {
        let v = conn.json(&format!("/blockchain?minHeight=1&maxHeight={max}")).await?;
        let metas = v["result"]["block_metas"].as_array().cloned().unwrap_or_default();
        let mut older = false;
        for m in &metas {
            let t = m["header"]["time"].as_str().map(parse_ms).unwrap_or(0);
            if t < from_ms {
                older = true;
            } else if t < to_ms {
                txs += m["num_txs"].as_str().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
                blocks += 1;
            }
        }
        if older || metas.is_empty() {
            break;
        }
        max = max.saturating_sub(metas.len() as u64);
    }
    Ok((txs, blocks))
}

fn parse_ms(t: &str) -> u64 {
    humantime::parse_rfc3339(t)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn now_ms() -> u64 {
    crate::genesis::now_ms()
}

fn percentile(v: &mut [u64], p: usize) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[(v.len() * p / 100).min(v.len() - 1)]
}

/// Runs the load and prints what was committed.
pub fn run(cfg: BenchConfig) -> CliResult<()> {
    if cfg.nodes.is_empty() || cfg.senders == 0 || cfg.senders > 64 || cfg.seconds == 0 || cfg.seconds > 600 {
        return Err(CliError::input(
            "bench-rpc: give --rpc at least once, --senders 1-64, --seconds 1-600",
        ));
    }
    if !(16..=60_000).contains(&cfg.tx_bytes) {
        return Err(CliError::input("bench-rpc: --tx-bytes must be 16-60000"));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("tokio: {e}")))?;
    rt.block_on(load(cfg))
}

async fn load(cfg: BenchConfig) -> CliResult<()> {
    let cfg = Arc::new(cfg);
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let s = Arc::new(Shared {
        run,
        stop: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    for (n, addr) in cfg.nodes.iter().enumerate() {
        let pending = Arc::new(AtomicU64::new(0));
        tasks.push(tokio::spawn(mempool_watch(*addr, s.clone(), pending.clone())));
        for i in 0..cfg.senders {
            let id = n * 1000 + i;
            tasks.push(tokio::spawn(sender(*addr, id, cfg.clone(), s.clone(), pending.clone())));
        }
    }
    let probe = tokio::spawn(probes(cfg.nodes[0], s.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await; // warm-up
    let (from, sent0) = (now_ms(), s.sent.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_secs(cfg.seconds)).await;
    let (to, sent1) = (now_ms(), s.sent.load(Ordering::Relaxed));
    s.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let mut lat = probe.await.unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(1)).await; // the last blocks of the window
    let (txs, blocks) = committed_between(cfg.nodes[0], from, to)
        .await
        .map_err(CliError::failure)?;
    let secs = (to - from) as f64 / 1000.0;
    println!(
        "bench-rpc: {} nodes x {} senders, {} B transactions, {} for {secs:.1} s",
        cfg.nodes.len(),
        cfg.senders,
        cfg.tx_bytes,
        if cfg.r#async {
            "broadcast_tx_async"
        } else {
            "broadcast_tx_sync"
        }
    );
    println!(
        "  accepted {} tx ({:.0} tx/s), refused {}, errors {}",
        sent1 - sent0,
        (sent1 - sent0) as f64 / secs,
        s.refused.load(Ordering::Relaxed),
        s.errors.load(Ordering::Relaxed)
    );
    println!("  committed {txs} tx in {blocks} blocks: {:.0} tx/s", txs as f64 / secs);
    println!(
        "  commit latency (submit to found by /tx, {} probes): p50 {} ms, p90 {} ms",
        lat.len(),
        percentile(&mut lat, 50),
        percentile(&mut lat, 90)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transactions_are_unique_and_sized() {
        let a = transaction(10, 1, 2, 250);
        let b = transaction(10, 1, 3, 250);
        assert_eq!(a.len(), 250);
        assert_ne!(a, b);
        assert_ne!(a, transaction(11, 1, 2, 250), "another run, other transactions");
        assert!(a.starts_with(b"ba.1-2="));
        assert_eq!(percentile(&mut [5, 1, 3], 50), 3);
        assert_eq!(percentile(&mut [], 50), 0);
        assert_eq!(parse_ms("1970-01-01T00:00:01.500Z"), 1500);
    }
}
