//! Peers that send garbage, oversized frames, or floods of future-height votes or of large
//! transactions are cut off and banned while the validators keep deciding; memory stays
//! bounded. Each rogue connects from its own loopback address (bans keep addresses out too).

use crate::cluster::*;
use crate::rogue::{closed_reason, Rogue};
use std::time::Duration;
use tendr_core::codec::encode_message;
use tendr_core::{Height, Message, Round, Signature, Vote, VoteType};

/// Transactions of `MAX_TX_BYTES` in the transaction flood: 256 MiB.
const TX_FLOOD_COUNT: u64 = 4096;
/// Bound on the growth of the process's RSS at its peak during the attacks.
const PEAK_GROWTH_MIB: u64 = 128;

async fn send_raw(conn: &quinn::Connection, bytes: &[u8]) {
    let mut s = conn.open_uni().await.unwrap();
    let _ = s.write_all(bytes).await;
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(tendr_net::wire::TAG_MESSAGE);
    f.extend_from_slice(body);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_and_flooding_peers_are_cut_off_while_others_decide() {
    // Alone in a child process, so that the RSS measured is that of these nodes only.
    if run_alone("attacks::garbage_oversized_and_flooding_peers_are_cut_off_while_others_decide") {
        return;
    }
    init_tracing();
    let (nodes, keys, g) = cluster(4).await;
    let gh = genesis_hash(&g);
    wait_for("first 5 heights", 30, || nodes.iter().all(|n| n.height() >= 5)).await;
    let rss_before = rss_kib();
    let rss = RssPeak::start();
    let target = nodes[0].addr;

    // Garbage: a well-framed body that does not decode.
    let r = Rogue::new_at("garbage", CHAIN, gh, "127.0.0.10");
    let (conn, res) = r.connect(target).await;
    res.unwrap();
    send_raw(&conn, &framed(&[0xff; 40])).await;
    let why = tokio::time::timeout(Duration::from_secs(20), closed_reason(&conn))
        .await
        .unwrap();
    assert!(why.contains("undecodable message"), "{why}");
    let e = r.connect(target).await.1.unwrap_err();
    assert!(e.contains("banned"), "a cut-off peer is kept out: {e}");

    // Oversized: a length prefix far above the limit; nothing is allocated for it.
    let r = Rogue::new_at("oversized", CHAIN, gh, "127.0.0.11");
    let (conn, res) = r.connect(target).await;
    res.unwrap();
    send_raw(&conn, &u32::MAX.to_be_bytes()).await;
    let why = tokio::time::timeout(Duration::from_secs(20), closed_reason(&conn))
        .await
        .unwrap();
    assert!(why.contains("exceeds the limit"), "{why}");

    // A transaction above MAX_TX_BYTES (but within the frame limit) is refused at the door.
    let r = Rogue::new_at("big-tx", CHAIN, gh, "127.0.0.12");
    let (conn, res) = r.connect(target).await;
    res.unwrap();
    send_raw(&conn, &framed(&encode_message(&Message::Tx(vec![b'a'; 100_000])))).await;
    let why = tokio::time::timeout(Duration::from_secs(20), closed_reason(&conn))
        .await
        .unwrap();
    assert!(why.contains("transaction of 100000 bytes exceeds"), "{why}");

    // Flood: far-future-height votes with bad signatures, as fast as QUIC takes them. The
    // rogue never reads what the node sends it either (a slow peer).
    let r = Rogue::new_at("flooder", CHAIN, gh, "127.0.0.13");
    let (conn, res) = r.connect(target).await;
    res.unwrap();
    let flood = tokio::spawn({
        let conn = conn.clone();
        let validator = keys[1].address();
        async move {
            let Ok(mut s) = conn.open_uni().await else { return 0u64 };
            let mut sent = 0u64;
            for i in 0..200_000u64 {
                let v = Vote {
                    vote_type: VoteType::Prevote,
                    height: Height(1_000_000 + i),
                    round: Round(0),
                    block_id: None,
                    validator,
                    signature: Signature([7; 64]),
                };
                if s.write_all(&framed(&encode_message(&Message::Vote(v)))).await.is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        }
    });
    let why = tokio::time::timeout(Duration::from_secs(20), closed_reason(&conn))
        .await
        .unwrap();
    let sent = flood.await.unwrap();
    // Usually "20 rejected messages within 10s" (the driver's strikes), or the transport's
    // "message flood" when the votes arrive faster than the rate limit.
    let flooder = tendr_core::PrivateKey::from_seed(b"flooder").address();
    assert!(
        nodes[0].net.is_banned(&flooder),
        "flooder cut off ({why}) but not banned"
    );
    assert!(nodes[0].net.peers().iter().all(|p| p.id != flooder));
    eprintln!("flooder cut off after {sent} votes: {why}");

    // Flood of maximal (64 KiB), distinct, invalid transactions, as fast as QUIC takes them:
    // far more bytes than any queue may hold. They are dropped beyond the transaction inbox's
    // byte cap, and the peer is cut off when over its byte rate.
    let r = Rogue::new_at("tx-flooder", CHAIN, gh, "127.0.0.15");
    let (conn, res) = r.connect(target).await;
    res.unwrap();
    let flood = tokio::spawn({
        let conn = conn.clone();
        async move {
            let Ok(mut s) = conn.open_uni().await else { return 0u64 };
            let mut sent = 0u64;
            for i in 0..TX_FLOOD_COUNT {
                let mut tx = vec![0xAA; tendr_core::limits::MAX_TX_BYTES];
                tx[..8].copy_from_slice(&i.to_be_bytes());
                if s.write_all(&framed(&encode_message(&Message::Tx(tx)))).await.is_err() {
                    break;
                }
                sent += 1;
            }
            let _ = s.finish();
            sent
        }
    });
    let tx_sent = tokio::time::timeout(Duration::from_secs(60), flood)
        .await
        .unwrap()
        .unwrap();
    let sent_mib = (tx_sent * tendr_core::limits::MAX_TX_BYTES as u64) >> 20;
    let during = nodes[0].net.stats();
    eprintln!("tx flooder pushed {sent_mib} MiB ({tx_sent} txs); node 0 then: {during:?}");
    assert!(during.tx_inbox_bytes <= test_limits().tx_inbox_bytes, "{during:?}");

    let h = nodes.iter().map(|n| n.height()).max().unwrap();
    wait_for("the validators to keep deciding", 30, || {
        nodes.iter().all(|n| n.height() >= h + 10)
    })
    .await;
    let stats = nodes[0].net.stats();
    let (peak, rss_after) = (rss.finish(), rss_kib());
    eprintln!(
        "memory: RSS {rss_before} KiB before the attacks, peak {peak} KiB during them, {rss_after} KiB after \
         (floods of {sent_mib} MiB of transactions and {sent} votes); node 0: {stats:?}"
    );
    assert!(stats.peers_banned >= 4, "{stats:?}");
    assert!(stats.seen_entries <= test_limits().seen_entries);
    assert!(stats.inbox_queued <= 16, "{stats:?}");
    let grew_mib = peak.saturating_sub(rss_before) >> 10;
    assert!(
        grew_mib < PEAK_GROWTH_MIB,
        "RSS grew by {grew_mib} MiB at its peak (bound {PEAK_GROWTH_MIB} MiB)"
    );
    for n in nodes {
        n.stop().await;
    }
}

/// A peer over its message rate is cut off by the transport itself (before the driver sees
/// the messages), and the node goes on deciding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_message_rate_is_cut_off() {
    init_tracing();
    let keys = keys(1);
    let g = genesis(CHAIN, &keys);
    let mut spec = Spec::validator(&keys[0], &g, vec![]);
    spec.limits.msgs_per_sec = 500;
    let node = start(spec, None).await;
    let r = Rogue::new_at("rate-flooder", CHAIN, genesis_hash(&g), "127.0.0.14");
    let (conn, res) = r.connect(node.addr).await;
    res.unwrap();
    let flood = tokio::spawn({
        let conn = conn.clone();
        async move {
            let Ok(mut s) = conn.open_uni().await else { return };
            for i in 0..20_000u32 {
                let tx = format!("flood{i}=x").into_bytes();
                if s.write_all(&framed(&encode_message(&Message::Tx(tx)))).await.is_err() {
                    return;
                }
            }
        }
    });
    let why = tokio::time::timeout(Duration::from_secs(30), closed_reason(&conn))
        .await
        .unwrap();
    assert!(why.contains("message flood: over 500 messages per second"), "{why}");
    let _ = flood.await;
    let h = node.height();
    wait_for("the node to keep deciding", 30, || node.height() >= h + 5).await;
    node.stop().await;
}
