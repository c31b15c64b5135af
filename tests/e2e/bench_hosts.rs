//! The real-cluster benchmark behind `BENCHMARKS.md`: four validators on four test hosts,
//! load through the RPC with `tendr bench-rpc` from outside the hosts, at 0, 20 and 100 ms of
//! added latency (`link_shaping`), per phase: healthy, a 3|1 split, after the heal; and the
//! block time at a 1 s target. Ignored by default (it takes about five minutes and wants a
//! quiet machine); run it with
//!
//! ```text
//! cargo test --release --test e2e bench_four_hosts -- --ignored --nocapture
//! ```
//!
//! It rewrites `BENCHMARKS.md` at the top of the repository.

use super::hosts::Hosts;
use super::{rpc, spawn_command, wait_for, Scratch, TENDR};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tendr_node::status::{BlockView, Status};

const PORT: u16 = 26_656;
const RPC_PORT: u16 = 36_656;
const HOSTS: usize = 4;
const LATENCIES_MS: [u64; 3] = [0, 20, 100];
const PHASE_SECS: u64 = 10;

/// Why the phases differ, appended to `BENCHMARKS.md`.
const NOTES: &str = "\n## Reading the figures\n\n\
- During the split, one height in four has the cut-off host as its proposer: the other three wait \
  `timeout_propose` (3 s in the genesis) before round 1, so throughput falls to the transactions \
  that `bench-rpc`'s bounded load (700 pending per node) puts in the blocks between those waits, \
  and probe latency to about that timeout. It is a property of round-robin proposers under a \
  partition, not of the transport.\n\
- Added latency lengthens every step of a height (proposal, prevotes, precommits: about three \
  one-way delays) and QUIC's congestion window grows more slowly, so throughput falls and commit \
  latency rises with it.\n\
- The machine is shared (see the load above); figures on a busy machine are lower than on a \
  quiet one.\n";

/// One `bench-rpc` window: committed tx/s, and the probes committed in it with their p50 and
/// p90 commit latency in ms.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    tx_per_sec: f64,
    probes: u64,
    p50_ms: u64,
    p90_ms: u64,
}

impl Window {
    /// The latency cells: "-" when no probe was committed (bench-rpc then prints 0).
    fn latency_cells(&self) -> String {
        if self.probes == 0 {
            "- (no probe committed) | -".into()
        } else {
            format!("{} | {}", self.p50_ms, self.p90_ms)
        }
    }
}

/// A fresh four-validator chain on the hosts, started.
struct Chain<'a> {
    h: &'a Hosts,
    s: Scratch,
}

impl<'a> Chain<'a> {
    fn start(h: &'a Hosts, name: &str, latency_ms: u64, block_time: f64) -> Chain<'a> {
        let mut s = Scratch::new(name);
        let out = s.path("net");
        let o = Command::new(TENDR)
            .args(["testnet", "--validators", "4", "--out", out.to_str().unwrap()])
            .args([
                "--base-port",
                &PORT.to_string(),
                "--target-block-time",
                &block_time.to_string(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for i in 0..HOSTS {
            let path = out.join(format!("node{}/tendermint_config.json", i + 1));
            let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            v["host"] = h.addr(i).to_string().into();
            v["port"] = PORT.into();
            v["rpc_addr"] = format!("{}:{RPC_PORT}", h.addr(i)).into();
            v["log_level"] = "warn".into();
            v["seed_nodes"] = (0..HOSTS)
                .filter(|k| *k != i)
                .map(|k| serde_json::json!({"host": h.addr(k).to_string(), "port": PORT}))
                .collect();
            if latency_ms > 0 {
                v["link_shaping"] = serde_json::json!({"latency_ms": latency_ms, "seed": i});
            }
            std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
            let mut cmd = h.command(i, TENDR);
            cmd.args(["start", "--config", path.to_str().unwrap()]);
            spawn_command(&mut s, i, cmd);
        }
        let chain = Chain { h, s };
        wait_for(&chain.s, "four validators making blocks", 60, || {
            (0..HOSTS)
                .all(|i| {
                    chain
                        .status(i)
                        .is_some_and(|st| st.latest_height >= 3 && st.peers.len() == 3)
                })
                .then_some(())
        });
        chain
    }

    fn rpc(&self, i: usize) -> SocketAddr {
        SocketAddr::from((self.h.addr(i), RPC_PORT))
    }

    fn status(&self, i: usize) -> Option<Status> {
        rpc::get_json(self.rpc(i), "/tendr/status").ok()
    }

    /// One `tendr bench-rpc` window against every host's RPC.
    fn bench(&self) -> Window {
        let mut cmd = Command::new(TENDR);
        cmd.args(["bench-rpc", "--senders", "8", "--tx-bytes", "250"])
            .args(["--seconds", &PHASE_SECS.to_string()]);
        for i in 0..HOSTS {
            cmd.args(["--rpc", &self.rpc(i).to_string()]);
        }
        let o = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "bench-rpc: {text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        parse_window(&text).unwrap_or_else(|| panic!("cannot read bench-rpc's report: {text}"))
    }

    /// Mean time between the last `n` blocks, in ms.
    fn block_interval_ms(&self, n: u64) -> f64 {
        let top = self.status(0).unwrap().latest_height;
        let time = |h: u64| -> u64 {
            let b: BlockView = rpc::get_json(self.rpc(0), &format!("/tendr/block?height={h}")).unwrap();
            b.time_ms
        };
        (time(top) - time(top - n)) as f64 / n as f64
    }
}

/// "committed N tx in B blocks: X tx/s" and "p50 A ms, p90 B ms" from bench-rpc's report.
fn parse_window(text: &str) -> Option<Window> {
    let number_before = |s: &str, unit: &str| -> Option<f64> {
        let end = s.find(unit)?;
        s[..end].trim_end().rsplit(' ').next()?.parse().ok()
    };
    let line = text.lines().find(|l| l.contains("committed") && l.contains("tx/s"))?;
    let lat = text.lines().find(|l| l.contains("p50"))?;
    let p50 = &lat[lat.find("p50")?..];
    let p90 = &lat[lat.find("p90")?..];
    Some(Window {
        tx_per_sec: number_before(line, "tx/s")?,
        probes: number_before(lat, " probes")? as u64,
        p50_ms: number_before(p50, " ms")? as u64,
        p90_ms: number_before(p90, " ms")? as u64,
    })
}

fn sh(cmd: &str) -> String {
    let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn bench_window_reports_are_read() {
    let w = parse_window(
        "  sent 1 tx\n  committed 100 tx in 9 blocks: 10147 tx/s\n  commit latency (submit to found by /tx, 90 probes): p50 17 ms, p90 106 ms\n",
    )
    .unwrap();
    assert_eq!((w.tx_per_sec, w.probes, w.p50_ms, w.p90_ms), (10147.0, 90, 17, 106));
    assert_eq!(w.latency_cells(), "17 | 106");
    assert!(parse_window("nothing").is_none());
}

#[test]
#[ignore = "a five-minute benchmark; run it on a quiet machine (see BENCHMARKS.md)"]
fn bench_four_hosts() {
    let h = Hosts::new(HOSTS);
    let load_before = sh("cut -d' ' -f1-3 /proc/loadavg");
    let mut rows = String::new();
    for latency in LATENCIES_MS {
        let chain = Chain::start(&h, &format!("bench-{latency}"), latency, 0.0);
        let healthy = chain.bench();
        h.partition(&[&[0, 1, 2], &[3]]);
        let split = chain.bench();
        h.heal();
        std::thread::sleep(Duration::from_secs(2));
        let healed = chain.bench();
        for (phase, w) in [
            ("healthy", healthy),
            ("3-1 split (host 4 cut off)", split),
            ("after heal", healed),
        ] {
            let _ = writeln!(
                rows,
                "| {latency} ms | {phase} | {:.0} | {} | {} |",
                w.tx_per_sec,
                w.probes,
                w.latency_cells()
            );
            eprintln!("{latency} ms, {phase}: {w:?}");
        }
    }
    let mut blocks = String::new();
    for latency in [0, 100] {
        let chain = Chain::start(&h, &format!("blocks-{latency}"), latency, 1.0);
        std::thread::sleep(Duration::from_secs(25));
        let ms = chain.block_interval_ms(20);
        let _ = writeln!(blocks, "| {latency} ms | {ms:.0} ms | {:+.1}% |", (ms - 1000.0) / 10.0);
        eprintln!("{latency} ms: mean block interval {ms:.0} ms");
    }
    let load_after = sh("cut -d' ' -f1-3 /proc/loadavg");
    let text = format!(
        "# Benchmarks\n\n\
         Regenerated by `cargo test --release --test e2e bench_four_hosts -- --ignored --nocapture` \
         (needs root: it makes four network namespaces; see \"Test hosts\" in the README).\n\n\
         - date: {date}\n- machine: {cpu}, {cores} cores, Linux {kernel}\n\
         - load average (1, 5, 15 min) before: {load_before}; after: {load_after}\n\n\
         ## Real cluster: four validators on four hosts, load through the RPC\n\n\
         Four `tendr` validators, one per network namespace, each with its own address on a bridge; \
         `tendr bench-rpc` (8 senders per node, `broadcast_tx_sync`, 250-byte transactions, \
         {PHASE_SECS} s windows) in the test's own namespace. Added latency is `link_shaping.latency_ms` \
         on every datagram each node sends (a round trip grows by twice that). Blocks as fast as \
         consensus goes (`target_block_time` 0). Phases in order on one chain: healthy, host 4 cut \
         off from the other three (load still sent to all four), the 10 s after the heal (2 s after it).\n\n\
         | added latency | phase | committed tx/s | probes committed | commit p50 ms | commit p90 ms |\n| --- | --- | --- | --- | --- | --- |\n{rows}\n\
         ## Block time at a 1 s target\n\n\
         Mean interval of the last 20 blocks, no load, `target_block_time` 1.0.\n\n\
         | added latency | mean block interval | vs 1 s |\n| --- | --- | --- |\n{blocks}{NOTES}",
        date = sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        cores = sh("nproc"),
        kernel = sh("uname -r"),
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    std::fs::write(&path, text).unwrap();
    eprintln!("wrote {}", path.display());
}
