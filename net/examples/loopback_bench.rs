//! Benchmark (not a test): 4 validators on loopback QUIC in one process.
//!
//! `cargo run --release -p tendr-net --example loopback_bench [seconds]`
//!
//! 1. `target_block_time 0`, 250-byte transactions submitted to all four nodes as fast as they
//!    are accepted, with at most `WINDOW` (env, default 700) uncommitted transactions per node (beyond that the
//!    latency is only mempool queueing): committed tx/s and commit latency p50/p99 (submit to
//!    decision at node 0), per window of `seconds`, three windows, medians printed; also the
//!    process's CPU time (all nodes and the clients) per committed transaction.
//! 2. `target_block_time 0`, no transactions: empty heights per second.
//! 3. `target_block_time 1 s`: block interval over 10 blocks.
//! 4. `BENCH=catchup` (not in the default set): the four validators decide `HEIGHTS` (env,
//!    default 10,000) empty heights, then a fresh observer joins and block-syncs them all:
//!    blocks per second from its first block to the height the validators had when it joined.
//!    `LINK_LATENCY_MS=50` adds 50 ms to every datagram the observer sends (its requests), so
//!    each round trip to the validators is 50 ms longer.

#[path = "../tests/it/cluster.rs"]
mod cluster;

use cluster::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tendr_core::crypto::sha256;
use tendr_core::traits::NodeEvent;
use tendr_core::{Hash, TimeoutConfig};

const TX_BYTES: usize = 250;
/// Default of `WINDOW`: uncommitted transactions per submitting node.
const DEFAULT_WINDOW: u64 = 700;

#[derive(Default)]
struct Book {
    submitted: HashMap<Hash, Instant>,
    latencies_ms: Vec<f64>,
    committed: u64,
    heights: Vec<(u64, Instant)>,
    /// Heights decided in a round after the first (a timeout fired somewhere).
    late_rounds: u64,
}

fn bench_timeouts(commit_ms: u64) -> TimeoutConfig {
    // Loopback: round timeouts well above the sub-millisecond link latency; re-broadcast
    // quickly so that a validator that fell more than MAX_FUTURE_HEIGHTS behind (messages
    // dropped) and caught up through `Decided` gets the current round's votes soon.
    TimeoutConfig {
        propose_ms: 500,
        propose_delta_ms: 250,
        prevote_ms: 200,
        prevote_delta_ms: 100,
        precommit_ms: 200,
        precommit_delta_ms: 100,
        commit_ms,
        rebroadcast_ms: 200,
        sync_retry_ms: 100,
    }
}

async fn start_cluster(commit_ms: u64, book: Arc<Mutex<Book>>) -> Vec<TestNode> {
    let n: usize = std::env::var("VALIDATORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let keys = keys(n);
    let g = genesis(CHAIN, &keys);
    let mut nodes: Vec<TestNode> = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let seeds = nodes.first().map(|n| vec![n.addr]).unwrap_or_default();
        let mut spec = Spec::validator(k, &g, seeds);
        spec.commit_ms = commit_ms;
        spec.timeouts = Some(bench_timeouts(commit_ms));
        let hook: Option<OnEvent> = (i == 0).then(|| {
            let book = book.clone();
            Box::new(move |e: &NodeEvent| {
                if let NodeEvent::Decided { block, commit, .. } = e {
                    let now = Instant::now();
                    let mut b = book.lock().unwrap();
                    if commit.round.0 > 0 {
                        b.late_rounds += 1;
                    }
                    b.heights.push((block.height().0, now));
                    for tx in &block.txs {
                        if let Some(t) = b.submitted.remove(&sha256(tx)) {
                            let ms = now.duration_since(t).as_secs_f64() * 1000.0;
                            b.latencies_ms.push(ms);
                        }
                        b.committed += 1;
                    }
                }
            }) as OnEvent
        });
        nodes.push(start(spec, hook).await);
    }
    let t0 = Instant::now();
    while nodes.iter().any(|x| x.net.peers().len() < n - 1) && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nodes
}

fn tx(node: usize, seq: u64) -> Vec<u8> {
    let mut t = format!("k{node}-{seq}=").into_bytes();
    t.resize(TX_BYTES, b'v');
    t
}

/// CPU seconds this process has used (user and system, all threads), from `/proc/self/stat`;
/// `None` where that file does not exist.
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn median(mut v: Vec<f64>) -> f64 {
    pct(&mut v, 0.5)
}

async fn throughput(secs: u64) {
    let window: u64 = std::env::var("WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_WINDOW);
    println!("submitting {TX_BYTES}-byte txs to all 4 nodes, at most {window} uncommitted per node");
    let book = Arc::new(Mutex::new(Book::default()));
    let nodes = Arc::new(start_cluster(0, book.clone()).await);
    let submitted_total = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut subs = Vec::new();
    for i in 0..4 {
        let (nodes, book, stop, total) = (nodes.clone(), book.clone(), stop.clone(), submitted_total.clone());
        subs.push(tokio::spawn(async move {
            let mut seq = 0u64;
            let mut mine = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let committed = book.lock().unwrap().committed;
                if mine.saturating_sub(committed / 4) > window {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let t = tx(i, seq);
                seq += 1;
                let h = sha256(&t);
                let at = Instant::now();
                match nodes[i].submit(t).await {
                    Ok(_) => {
                        book.lock().unwrap().submitted.insert(h, at);
                        mine += 1;
                        total.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // warm-up
    let (mut tps, mut p50s, mut p99s, mut cpus) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for w in 0..3 {
        let (c0, h0) = {
            let mut b = book.lock().unwrap();
            b.latencies_ms.clear();
            (b.committed, b.heights.last().map(|h| h.0).unwrap_or(0))
        };
        let t0 = Instant::now();
        let cpu0 = cpu_secs();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu1 = cpu_secs();
        let mut b = book.lock().unwrap();
        let dt = t0.elapsed().as_secs_f64();
        let rate = (b.committed - c0) as f64 / dt;
        let h1 = b.heights.last().map(|h| h.0).unwrap_or(0);
        let (p50, p99) = (pct(&mut b.latencies_ms, 0.5), pct(&mut b.latencies_ms, 0.99));
        // CPU time of the whole process (4 nodes and the submitting clients) per committed tx.
        let cpu_us = match (cpu0, cpu1) {
            (Some(a), Some(b1)) if b.committed > c0 => (b1 - a) * 1e6 / (b.committed - c0) as f64,
            _ => f64::NAN,
        };
        println!(
            "  window {w}: {rate:.0} committed tx/s, {:.1} heights/s, latency p50 {p50:.1} ms p99 {p99:.1} ms, {cpu_us:.1} CPU us per committed tx, {} heights so far decided after round 0",
            (h1 - h0) as f64 / dt,
            b.late_rounds
        );
        cpus.push(cpu_us);
        tps.push(rate);
        p50s.push(p50);
        p99s.push(p99);
    }
    stop.store(true, Ordering::Relaxed);
    for s in subs {
        let _ = s.await;
    }
    println!(
        "target_block_time 0, {TX_BYTES}-byte txs: median {:.0} committed tx/s, commit latency p50 {:.1} ms, p99 {:.1} ms, {:.1} CPU us per committed tx",
        median(tps),
        median(p50s),
        median(p99s),
        median(cpus)
    );
    shutdown(nodes).await;
}

async fn shutdown(nodes: Arc<Vec<TestNode>>) {
    if let Ok(nodes) = Arc::try_unwrap(nodes) {
        for n in nodes {
            n.stop().await;
        }
    }
}

async fn empty_heights(secs: u64) {
    let book = Arc::new(Mutex::new(Book::default()));
    let nodes = Arc::new(start_cluster(0, book.clone()).await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut rates = Vec::new();
    for w in 0..3 {
        let h0 = nodes[0].height();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let rate = (nodes[0].height() - h0) as f64 / t0.elapsed().as_secs_f64();
        println!("  window {w}: {rate:.0} empty heights/s");
        rates.push(rate);
    }
    println!(
        "target_block_time 0, no txs: median {:.0} empty heights/s",
        median(rates)
    );
    let hs = book.lock().unwrap().heights.clone();
    let mut gaps: Vec<f64> = hs
        .windows(2)
        .map(|w| w[1].1.duration_since(w[0].1).as_secs_f64() * 1000.0)
        .collect();
    println!(
        "  height interval p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(&mut gaps, 0.5),
        pct(&mut gaps, 0.9),
        pct(&mut gaps, 0.99),
        pct(&mut gaps, 1.0)
    );
    shutdown(nodes).await;
}

async fn catch_up() {
    let target: u64 = std::env::var("HEIGHTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let book = Arc::new(Mutex::new(Book::default()));
    let nodes = Arc::new(start_cluster(0, book).await);
    let t0 = Instant::now();
    while nodes[0].height() < target {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let made = nodes[0].height() - 1;
    println!(
        "  {made} empty heights decided in {:.1} s; a fresh observer joins",
        t0.elapsed().as_secs_f64()
    );
    let observer_key = keys(nodes.len() + 1).pop().expect("one more key");
    let g = genesis(CHAIN, &keys(nodes.len()));
    let mut spec = Spec::validator(&observer_key, &g, nodes.iter().map(|n| n.addr).collect());
    spec.validator_key = None;
    spec.timeouts = Some(bench_timeouts(0));
    spec.link_shaping = std::env::var("LINK_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(|ms| tendr_net::shaping::LinkShaping {
            latency_ms: ms,
            ..Default::default()
        });
    if let Some(l) = &spec.link_shaping {
        println!("  the observer's datagrams are delayed {} ms", l.latency_ms);
    }
    let first = Arc::new(Mutex::new(None::<Instant>));
    let hook: OnEvent = {
        let first = first.clone();
        Box::new(move |e: &NodeEvent| {
            if matches!(e, NodeEvent::Decided { .. }) {
                first.lock().unwrap().get_or_insert_with(Instant::now);
            }
        })
    };
    let joined = Instant::now();
    let obs = start(spec, Some(hook)).await;
    while obs.height() <= made {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = Instant::now();
    let from_first = first
        .lock()
        .unwrap()
        .map(|f| done.duration_since(f))
        .unwrap_or_default();
    println!(
        "catch-up of {made} empty blocks: {:.0} blocks/s from the first block ({:.2} s), {:.0} blocks/s including the handshake ({:.2} s)",
        made as f64 / from_first.as_secs_f64(),
        from_first.as_secs_f64(),
        made as f64 / done.duration_since(joined).as_secs_f64(),
        done.duration_since(joined).as_secs_f64()
    );
    let _ = obs.stop().await;
    shutdown(nodes).await;
}

async fn one_second_blocks() {
    let book = Arc::new(Mutex::new(Book::default()));
    let nodes = Arc::new(start_cluster(1000, book.clone()).await);
    let t0 = Instant::now();
    while book.lock().unwrap().heights.len() < 14 && t0.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hs = book.lock().unwrap().heights.clone();
    let gaps: Vec<f64> = hs
        .windows(2)
        .skip(3)
        .map(|w| w[1].1.duration_since(w[0].1).as_secs_f64() * 1000.0)
        .collect();
    let shown: Vec<String> = gaps.iter().map(|g| format!("{g:.0}")).collect();
    println!("  intervals (ms): {}", shown.join(" "));
    let mean = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    let worst = gaps.iter().map(|g| (g - 1000.0).abs()).fold(0.0, f64::max);
    println!(
        "target_block_time 1 s: {} intervals, mean {mean:.1} ms, median {:.1} ms, worst deviation {worst:.1} ms ({:.2}%)",
        gaps.len(),
        median(gaps.clone()),
        worst / 10.0
    );
    shutdown(nodes).await;
}

fn main() {
    init_tracing();
    let secs: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "machine: {} cores available to this process; 4 validators in one process on 127.0.0.1",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    let only = std::env::var("BENCH").unwrap_or_default();
    rt.block_on(async {
        if only.is_empty() || only == "tx" {
            throughput(secs).await;
        }
        if only.is_empty() || only == "empty" {
            empty_heights(secs).await;
        }
        if only.is_empty() || only == "1s" {
            one_second_blocks().await;
        }
        if only == "catchup" {
            catch_up().await;
        }
    });
}
