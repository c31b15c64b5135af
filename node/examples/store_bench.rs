//! Benchmark (not a test): the real store over a long chain with the default retention.
//!
//! `cargo run --release -p tendr-node --example store_bench [heights]` (default 100,000)
//!
//! Writes `heights` decided blocks (one 100-byte transaction each, a new key; `TXS=0`: empty
//! blocks) into a fresh
//! `data/tendr.redb` the way a running node does (block, transaction history, a snapshot every
//! `SNAPSHOT_INTERVAL` heights with pruning below `RETAIN_BLOCKS`, defaults 1,000 and 10,000),
//! printing the file size as it grows; then measures a node's start-up (open the store, restore
//! the newest snapshot, replay the blocks after it), which must not depend on the chain's length.

use std::time::Instant;
use tendr_core::chain::ChainState;
use tendr_core::crypto::PrivateKey;
use tendr_core::engine::Timeout;
use tendr_core::traits::{Application, CachingVerifier, Clock, Network, Node, Snapshot, SnapshotPolicy, Storage};
use tendr_core::types::*;
use tendr_core::{EngineConfig, ValidatorSet};
use tendr_kv::KvApp;
use tendr_node::store::Store;

struct Still;
impl Clock for Still {
    fn now(&self) -> TimeMs {
        TimeMs(0)
    }
    fn schedule(&mut self, _: TimeMs, _: Timeout) {}
}
struct Mute;
impl Network for Mute {
    fn broadcast(&mut self, _: &Message) {}
    fn send(&mut self, _: PeerId, _: &Message) {}
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let heights: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let policy = SnapshotPolicy {
        every: env("SNAPSHOT_INTERVAL", 1_000),
        retain: env("RETAIN_BLOCKS", 10_000),
    };
    // `TXS=0`: empty blocks (the state stays the same size, so the disk must stay flat).
    let with_txs = env("TXS", 1) > 0;
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join("data/tendr.redb");
    let k = PrivateKey::from_seed(b"bench");
    let vs = ValidatorSet::new(vec![(k.public_key(), VotingPower(1))]).unwrap();
    let mut app = KvApp::new("bench");
    let genesis = ChainState::genesis("bench", vs.clone(), app.initial_app_hash(), TimeMs(1));
    let mut chain = genesis.clone();
    let mut store = Store::open(&path).expect("store");
    let t0 = Instant::now();
    println!(
        "heights  file MiB  seconds (snapshot every {}, retain {})",
        policy.every, policy.retain
    );
    for h in 1..=heights {
        let txs = if with_txs {
            vec![format!("key{h}={}", "v".repeat(90)).into_bytes()]
        } else {
            vec![]
        };
        let block: Block = BlockData {
            header: chain.new_header(k.address(), TimeMs(10 + h), &txs),
            txs,
            last_commit: chain.last_commit.clone(),
        }
        .into();
        let commit = Commit {
            height: Height(h),
            round: Round(0),
            block_id: block.id(),
            signatures: vec![],
        };
        let res = app.execute_block(&block, &vs).expect("the key-value app executes");
        store.save_decided(&block, &commit).unwrap();
        store.save_results(&block, &res.tx_results).unwrap();
        chain.advance(&block, &commit, res.app_hash, &res.validator_updates);
        if policy.every > 0 && h % policy.every == 0 {
            store
                .save_snapshot(&Snapshot {
                    chain: chain.clone(),
                    app: app.snapshot().unwrap(),
                })
                .unwrap();
            if policy.retain > 0 {
                store
                    .prune_decided(Height((h + 1).saturating_sub(policy.retain)))
                    .unwrap();
            }
        }
        if h % (heights / 10).max(1) == 0 {
            store.sync().unwrap();
            let mib = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64;
            println!("{h:>7}  {mib:>8.1}  {:>7.1}", t0.elapsed().as_secs_f64());
        }
    }
    store.sync().unwrap();
    drop(store);
    let mut starts = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let store = Store::open(&path).expect("reopen");
        let node = Node::new(
            EngineConfig::new("bench", Default::default()),
            None,
            genesis.clone(),
            Still,
            Mute,
            store,
            KvApp::new("bench"),
            Box::new(CachingVerifier::new()),
        )
        .expect("start from the store");
        assert_eq!(node.engine().height(), Height(heights + 1));
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    starts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "start-up after {heights} heights: median {:.0} ms (min {:.0}, max {:.0}; open + newest snapshot + replay of up to {} blocks)",
        starts[2], starts[0], starts[4], policy.every
    );
}
