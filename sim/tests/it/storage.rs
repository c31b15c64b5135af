//! The simulated disk: a crash loses what was not synced, snapshots bound what is kept.

use std::cell::Cell;
use std::rc::Rc;
use tendr_core::Message;
use tendr_sim::adversary::{Adversary, AdversaryCtx, Sends};
use tendr_sim::config::{Fault, FaultKind, StorageModel, VerifyMode};
use tendr_sim::world::Payload;
use tendr_sim::{run, Invariant, SimConfig, Simulation};

fn crash_restart(node: u32, at_ms: u64, back_ms: u64) -> Vec<Fault> {
    vec![
        Fault {
            at_ms,
            kind: FaultKind::Crash { node },
        },
        Fault {
            at_ms: at_ms + back_ms,
            kind: FaultKind::Restart { node },
        },
    ]
}

#[test]
fn a_crash_loses_unsynced_writes_and_the_node_recovers_without_double_signing() {
    let mut lost = 0;
    for (i, at) in (2000..2400).step_by(23).enumerate() {
        let mut cfg = SimConfig::new(4);
        cfg.seed = i as u64;
        cfg.verify = VerifyMode::Cached;
        cfg.heights = 40;
        cfg.faults = crash_restart(2, at, 1500);
        let r = run(cfg).unwrap();
        assert!(r.ok(), "crash at {at} ms: {:?}", r.violations);
        assert!(r.heights >= 40, "crash at {at} ms: only {} heights", r.heights);
        lost += r.stats.lost_writes;
    }
    // Deciding writes the block and only syncs when the node next sends: crashes in between
    // lose it, and the node gets it back from its peers.
    assert!(lost > 0, "no crash landed between a write and its sync");
}

#[test]
fn without_lost_writes_a_crash_loses_nothing() {
    let mut cfg = SimConfig::new(4);
    cfg.verify = VerifyMode::Cached;
    cfg.heights = 30;
    cfg.storage.lose_unsynced = false;
    cfg.faults = crash_restart(1, 1234, 800);
    let r = run(cfg).unwrap();
    assert!(r.ok(), "{:?}", r.violations);
    assert_eq!(r.stats.lost_writes, 0);
}

fn pruned(retain: u64) -> SimConfig {
    let mut cfg = SimConfig::new(4);
    cfg.verify = VerifyMode::Trusted;
    cfg.heights = 700;
    cfg.max_time_ms = 10_000_000;
    cfg.storage = StorageModel {
        lose_unsynced: true,
        snapshot_every: 50,
        retain_blocks: retain,
        state_sync: false,
    };
    cfg
}

#[test]
fn snapshots_bound_the_store_and_a_restart_resumes_from_one() {
    let mut cfg = pruned(100);
    cfg.faults = crash_restart(1, 30_000, 2_000);
    let r = run(cfg).unwrap();
    assert!(r.ok(), "{:?}", r.violations);
    assert!(r.heights >= 700);
    assert!(r.blocks_kept <= 150, "{} blocks kept", r.blocks_kept);
    let mut all = pruned(0);
    all.faults = crash_restart(1, 30_000, 2_000);
    assert!(run(all).unwrap().blocks_kept >= 700, "retain 0 keeps every block");
}

#[test]
fn a_node_further_behind_than_the_retained_blocks_cannot_catch_up() {
    // Down for ~170 heights (every 4th one waits for the propose timeout, then the target
    // block time) while peers keep 100 blocks behind a snapshot every 50: nobody can serve what
    // it misses (state sync is off here), and the liveness check says so.
    let mut cfg = pruned(100);
    cfg.heights = 500;
    cfg.liveness_bound_ms = 5_000;
    cfg.max_time_ms = 70_000;
    cfg.faults = crash_restart(3, 2_000, 40_000);
    let r = run(cfg).unwrap();
    assert_eq!(r.broken().into_iter().collect::<Vec<_>>(), vec![Invariant::Liveness]);
}

/// The same outage with state sync: the node restores a peer's snapshot proven by a trusted
/// block, block-syncs the rest, and votes again (liveness holds with every validator needed).
#[test]
fn a_node_further_behind_than_the_retained_blocks_rejoins_through_state_sync() {
    for (seed, verify) in [
        (1, VerifyMode::Trusted),
        (2, VerifyMode::Cached),
        (3, VerifyMode::Cached),
    ] {
        let mut cfg = pruned(100);
        cfg.seed = seed;
        cfg.verify = verify;
        cfg.heights = 450;
        cfg.liveness_bound_ms = 5_000;
        cfg.max_time_ms = 70_000;
        cfg.storage.state_sync = true;
        cfg.faults = crash_restart(3, 2_000, 40_000);
        let sim = tendr_sim::Simulation::kv(cfg);
        let r = sim.run().unwrap();
        assert!(r.ok(), "seed {seed}: {:?}", r.violations);
        assert!(r.heights >= 450, "seed {seed}: {} heights", r.heights);
        assert_eq!(r.state_syncs.len(), 1, "seed {seed}: {:?}", r.state_syncs);
        let (_, node, height) = r.state_syncs[0];
        assert_eq!(node, 3);
        assert!(height > 100, "seed {seed}: restored a snapshot of height {height}");
    }
}

#[test]
fn the_crash_before_sync_scenario_really_loses_the_decided_blocks() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let s = tendr_sim::scenario::load(&dir.join("crash-before-sync.toml")).unwrap();
    for seed in [1, 2, 3] {
        let mut cfg = s.config.clone();
        cfg.seed = seed;
        let r = run(cfg).unwrap();
        assert!(r.ok(), "seed {seed}: {:?}", r.violations);
        assert!(
            r.stats.lost_writes >= 3,
            "seed {seed}: {} writes lost",
            r.stats.lost_writes
        );
    }
}

#[test]
fn a_failed_disk_halts_its_node_before_it_sends_and_a_restart_repairs_it() {
    for seed in 0..6 {
        let mut cfg = SimConfig::new(4);
        cfg.seed = seed;
        cfg.verify = VerifyMode::Cached;
        cfg.heights = 30;
        cfg.faults = vec![
            Fault {
                at_ms: 900 + 37 * seed,
                kind: FaultKind::DiskFail { node: 0 },
            },
            Fault {
                at_ms: 2500,
                kind: FaultKind::Restart { node: 0 },
            },
        ];
        let r = run(cfg).unwrap();
        // persist-before-send and no-double-sign are among the invariants that must hold.
        assert!(r.ok(), "seed {seed}: {:?}", r.violations);
        assert_eq!(
            r.stats.halts, 1,
            "seed {seed}: the node halts at its first failed write"
        );
        assert!(r.heights >= 30);
    }
}

/// Serves its peers false data while voting honestly: chunks with a flipped byte, and decided
/// blocks with a transaction added (their hash then no longer matches the next header's last
/// block id, nor the commit).
struct LyingServer {
    chunks: bool,
    blocks: bool,
    lies: Rc<Cell<u64>>,
}

impl Adversary for LyingServer {
    fn name(&self) -> String {
        "lying-server".into()
    }
    fn transform(&mut self, _: &mut AdversaryCtx<'_>, msg: Message, dests: Vec<usize>) -> Sends {
        let msg = match msg {
            Message::SnapshotChunk {
                height,
                index,
                mut data,
            } if self.chunks && !data.is_empty() => {
                let mid = data.len() / 2;
                data[mid] ^= 1;
                self.lies.set(self.lies.get() + 1);
                Message::SnapshotChunk { height, index, data }
            }
            Message::Decided { mut block, commit } if self.blocks => {
                block.make_mut().txs.push(b"forged".to_vec());
                self.lies.set(self.lies.get() + 1);
                Message::Decided { block, commit }
            }
            m => m,
        };
        vec![(Payload::msg(msg), dests)]
    }
}

/// The state-sync outage again, with one peer lying about what it serves: the node that
/// syncs catches every lie, drops and blames the liar, restores the honest peers' snapshot,
/// and ends with the same blocks and app hashes as everyone (nothing forged applied).
#[test]
fn a_peer_serving_a_forged_snapshot_or_forged_blocks_is_dropped_and_nothing_forged_is_applied() {
    let mut caught = [0u64; 2];
    for (case, (chunks, blocks)) in [(true, false), (false, true)].into_iter().enumerate() {
        for liar in 0..3u32 {
            let mut cfg = pruned(100);
            cfg.seed = 7 + liar as u64;
            cfg.verify = VerifyMode::Cached;
            cfg.heights = 450;
            cfg.liveness_bound_ms = 5_000;
            cfg.max_time_ms = 70_000;
            cfg.storage.state_sync = true;
            cfg.faults = crash_restart(3, 2_000, 40_000);
            let lies = Rc::new(Cell::new(0));
            let adversary = LyingServer {
                chunks,
                blocks,
                lies: lies.clone(),
            };
            let r = Simulation::kv(cfg).adversary(liar, adversary).run().unwrap();
            let what = format!("chunks {chunks}, blocks {blocks}, liar {liar}");
            assert!(r.ok(), "{what}: {:?}", r.violations);
            assert!(r.heights >= 450, "{what}: {} heights", r.heights);
            assert_eq!(r.state_syncs.len(), 1, "{what}: {:?}", r.state_syncs);
            let blamed: u64 = r
                .blamed
                .iter()
                .filter(|(to, from, _)| *to == 3 && *from == liar as usize)
                .map(|(_, _, n)| n)
                .sum();
            let honest_blamed: Vec<_> = r.blamed.iter().filter(|(_, from, _)| *from != liar as usize).collect();
            assert!(
                honest_blamed.is_empty(),
                "{what}: honest nodes blamed: {honest_blamed:?}"
            );
            if lies.get() > 0 {
                assert!(blamed > 0, "{what}: {} lies, none caught", lies.get());
                caught[case] += 1;
            }
        }
    }
    // Chunks come from one peer that offered the snapshot, blocks from all of them: at least
    // one liar was asked for chunks, and every liar for blocks.
    assert!(caught[0] >= 1, "no liar was asked for a snapshot chunk");
    assert_eq!(caught[1], 3, "a liar was never asked for a block");
}
