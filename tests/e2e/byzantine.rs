//! Issue 16: a Byzantine validator on real QUIC, against three honest ones. Built only with
//! the `byzantine` feature (the `tendr` binary then carries `tendr_node::byzantine`, chosen
//! with `TENDR_BYZANTINE`):
//! `cargo test --release --features byzantine --test e2e byzantine`.

use super::cometbft::memory_kib;
use super::*;

/// Largest growth of an honest node's peak resident memory while it is flooded.
const FLOOD_PEAK_GROWTH_MIB: u64 = 150;
/// How long the flood runs.
const FLOOD_SECS: u64 = 20;

fn spawn_byzantine(s: &mut Scratch, i: usize, cfg: &str, behaviours: &str) {
    let mut cmd = Command::new(TENDR);
    cmd.args(["start", "--config", cfg]).env("TENDR_BYZANTINE", behaviours);
    spawn_command(s, i, cmd);
}

/// Sends `signal` (`STOP` to freeze a node, `CONT` to resume it) to node `i`.
fn signal(s: &Scratch, i: usize, signal: &str) {
    let pid = s.children[&i].id().to_string();
    let st = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(st.success(), "kill -{signal} {pid}");
}

/// Waits until every node on `ports` is `more` blocks past where the lowest is now, and checks
/// they agree up to there; that height.
fn progress_and_agree(s: &Scratch, ports: &[u16], more: u64, secs: u64, what: &str) -> u64 {
    let target = wait_for(s, "the honest nodes' heights", 10, || lowest_height(ports)) + more;
    reach_and_agree(s, ports, target, secs, what);
    target
}

/// Node 4 first equivocates (a second proposal for each of its own, a conflicting vote for
/// each prevote and precommit) and replays its old messages: the honest nodes keep one history,
/// keep deciding, and commit the duplicate-vote evidence in a block. Then it restarts sending
/// broken signatures and a flood of 50,000 forged votes a second: the honest nodes cut it off
/// (disconnect and ban), keep deciding, and their memory stays bounded.
#[test]
fn byzantine_validator_over_quic_is_caught_cut_off_and_cannot_stop_the_honest() {
    let mut s = Scratch::new("byzantine");
    let base = base_port() + 9_000;
    let out = s.path("net");
    let cfgs = short_timeout_testnet(&out, 4, base);
    for (i, c) in cfgs.iter().enumerate().take(3) {
        spawn(&mut s, i + 1, &["start", "--config", c]);
    }
    spawn_byzantine(&mut s, 4, &cfgs[3], "equivocate,replay");
    let honest: Vec<u16> = (0..3).map(|i| base + i).collect();
    let culprit = validator_address(&out.join("node4"));
    let ev = wait_for(&s, "the duplicate-vote evidence committed in a block", 90, || {
        committed_evidence(honest[0], &culprit).pop()
    });
    let decided = progress_and_agree(&s, &honest, 10, 60, "the honest nodes deciding past the evidence");
    assert_evidence_everywhere(&honest, &culprit, &ev);
    assert!(
        s.full_logs().contains("BYZANTINE TEST BUILD"),
        "node 4 did not say it misbehaves"
    );
    eprintln!(
        "equivocate+replay: first evidence committed at height {} ({}), {} by height {decided}; honest nodes identical up to {decided}",
        ev.height,
        ev.log,
        committed_evidence(honest[0], &culprit).len()
    );

    // The flooder: broken signatures and 50,000 forged votes a second.
    s.kill(4);
    let pids: Vec<u32> = (1..=3).map(|i| s.children[&i].id()).collect();
    let before: Vec<u64> = pids.iter().map(|p| memory_kib(*p, "VmHWM")).collect();
    spawn_byzantine(&mut s, 4, &cfgs[3], "bad-signatures,flood");
    let flooder = wait_for(&s, "the flooder's RPC", 20, || status(base + 3)).peer_id;
    let banned = wait_for(&s, "the honest nodes to ban the flooder", 30, || {
        let logs = s.full_logs();
        let n = logs
            .lines()
            .filter(|l| l.contains("disconnected and banned") && l.contains(&format!("peer={flooder}")))
            .count();
        (n >= 3).then_some(n)
    });
    let flood_from = lowest_height(&honest).unwrap();
    let honest_ids: Vec<String> = honest.iter().map(|p| status(*p).unwrap().peer_id).collect();
    std::thread::sleep(Duration::from_secs(FLOOD_SECS));
    let flood_to = progress_and_agree(&s, &honest, 5, 30, "the honest nodes deciding after the flood");
    assert!(
        flood_to > flood_from + 5,
        "no progress under the flood: {flood_from} -> {flood_to}"
    );
    let peaks: Vec<u64> = pids.iter().map(|p| memory_kib(*p, "VmHWM")).collect();
    let now: Vec<u64> = pids.iter().map(|p| memory_kib(*p, "VmRSS")).collect();
    for p in &honest {
        let st = status(*p).unwrap();
        assert!(
            st.peers.iter().all(|peer| peer.id != flooder),
            "node on {p} still connected to the flooder: {:?}",
            st.peers
        );
    }
    let full = s.full_logs();
    assert!(!full.contains("panicked"), "a node panicked");
    // The honest nodes relay no forgery: the flooder never receives its own forged votes back
    // (it banned all three honest peers for them before relaying was limited to verified ones).
    for id in &honest_ids {
        assert!(
            !full
                .lines()
                .any(|l| l.contains("disconnected and banned") && l.contains(&format!("peer={id}"))),
            "honest node {id} was banned: it relayed forged votes"
        );
    }
    eprintln!(
        "flood: {banned} bans of the flooder {flooder}; honest heights {flood_from} -> {flood_to} over {FLOOD_SECS} s; \
         peak RSS before the flood {before:?} KiB, after {peaks:?} KiB, now {now:?} KiB"
    );
    for (b, p) in before.iter().zip(&peaks) {
        assert!(
            p.saturating_sub(*b) >> 10 <= FLOOD_PEAK_GROWTH_MIB,
            "an honest node's peak RSS grew from {b} KiB to {p} KiB under the flood (bound {FLOOD_PEAK_GROWTH_MIB} MiB)"
        );
    }
}

/// Issue 17 on real nodes: validator 4 serves forged decided blocks (a transaction added behind
/// the unchanged header and commit) to every node that catches up. A new node state-syncs past
/// the pruned heights from a trusted block while the chain is halted (two honest validators
/// frozen), so node 1 and node 4 offer the same snapshot and both are asked for the blocks that
/// prove it: each forged block is refused and blamed on node 4, which is dropped, and after the
/// frozen validators resume the new node ends on the honest chain with the honest state.
#[test]
fn a_peer_serving_forged_blocks_is_dropped_and_nothing_forged_is_applied() {
    let mut s = Scratch::new("forged");
    let base = base_port() + 9_100;
    let out = s.path("net");
    let cfgs = short_timeout_testnet(&out, 4, base);
    for c in &cfgs {
        with_fields(c, r#""snapshot_interval": 20, "retain_blocks": 20"#);
    }
    for (i, c) in cfgs.iter().enumerate().take(3) {
        spawn(&mut s, i + 1, &["start", "--config", c]);
    }
    spawn_byzantine(&mut s, 4, &cfgs[3], "forge-blocks");
    let all: Vec<u16> = (0..4).map(|i| base + i).collect();
    wait_for(&s, "first blocks", 60, || lowest_height(&all).filter(|h| *h >= 2));
    ok(&["tx", "early=before-the-pruned-heights", "--config", &cfgs[0], "--wait"]);
    wait_for(&s, "pruned heights", 120, || lowest_height(&all).filter(|h| *h >= 50));
    let forger = status(base + 3).unwrap().peer_id;

    // Freeze two honest validators: the chain halts, so the honest node 1 and the forger hold
    // the same newest snapshot and the new node chooses it offered by both; the blocks it needs
    // to check it (at least two) are spread over both, so the forger is certainly asked.
    wait_for(&s, "a full mesh", 30, || {
        all.iter()
            .all(|p| status(*p).is_some_and(|st| st.peers.len() == 3))
            .then_some(())
    });
    signal(&s, 2, "STOP");
    signal(&s, 3, "STOP");
    let live = [base, base + 3];
    let mut last = None;
    let halted = wait_for(&s, "the halted chain", 30, || {
        std::thread::sleep(std::time::Duration::from_millis(700));
        let heights: Vec<u64> = live
            .iter()
            .filter_map(|p| status(*p))
            .map(|st| st.latest_height)
            .collect();
        let same = (heights.len() == 2 && heights[0] == heights[1]).then_some(heights[0]);
        let stable = same.is_some() && same == last;
        last = same;
        if stable {
            same
        } else {
            None
        }
    });
    let st = status(base).unwrap();
    assert_eq!(
        st.latest_height, halted,
        "the chain moved while two of four validators were frozen"
    );
    let (trust_height, trust_hash) = (st.latest_height.to_string(), st.latest_block_id.clone().unwrap());

    let port = base + 4;
    let cfg = observer_config(&s.dir, "observer", port, &live);
    // Discovery waits a retry time after the first offer: long enough for both peers' offers.
    with_fields(&cfg, r#""timeouts": {"sync_retry_ms": 2000}"#);
    let genesis = out.join("node1/genesis.json").to_string_lossy().into_owned();
    join_trusting(&mut s, 5, &cfg, &genesis, &trust_height, &trust_hash);
    let synced = wait_for(&s, "state sync", 90, || {
        status(port).filter(|st| st.sync.state_sync.as_deref().is_some_and(|x| x.starts_with("restored")))
    });
    signal(&s, 2, "CONT");
    signal(&s, 3, "CONT");
    let tip = lowest_height(&all[..3]).unwrap();
    let caught = wait_for(&s, "the tip", 60, || {
        status(port).filter(|st| st.latest_height >= tip + 5)
    });
    assert_same_blocks(&[base, port], synced.latest_height..=caught.latest_height);
    assert_eq!(
        ok(&["query", "early", "--config", &cfg]).trim(),
        "before-the-pruned-heights",
        "the honest state came with the snapshot"
    );
    // Caught: state sync dropped the forger, and its forged blocks were refused.
    let text = format!("{:?}", caught.sync);
    let metrics = rpc::request(rpc_addr(port), "GET", "/metrics", b"")
        .map(|r| r.body)
        .unwrap_or_default();
    let rejected: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tendr_rejected_messages_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(rejected >= 1.0, "no forged block refused: {text}\n{metrics}");
    assert!(
        synced
            .sync
            .state_sync
            .as_deref()
            .is_some_and(|x| x.contains("false data: 1")),
        "state sync did not drop the forger {forger}: {:?}",
        synced.sync
    );
    let forged = rpc::get_json::<serde_json::Value>(rpc_addr(port), "/tendr/transactions?limit=100000")
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert!(!forged.contains("forged"), "a forged transaction was applied: {forged}");
}
