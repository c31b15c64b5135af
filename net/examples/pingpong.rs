//! Round-trip latency of one small consensus-class message between two transports on loopback.
//! `cargo run --release -p tendr-net --example pingpong`

use std::time::{Duration, Instant};
use tendr_core::traits::Network;
use tendr_core::{Hash, Height, Message, PrivateKey};
use tendr_net::{NetConfig, Transport};

fn cfg(seed: &[u8], seeds: Vec<std::net::SocketAddr>) -> NetConfig {
    NetConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        node_key: PrivateKey::from_seed(seed),
        chain_id: "pingpong".into(),
        genesis_hash: Hash([0; 32]),
        seeds,
        max_peers: 8,
        is_validator: true,
        advertise: None,
        link_shaping: None,
        validator_proof: None,
    }
}

/// An (unsigned) proposal carrying 8000 transactions of 250 bytes, about 2 MiB encoded.
fn big_proposal(i: u8) -> Message {
    let header = tendr_core::Header {
        chain_id: "pingpong".into(),
        height: Height(i as u64 + 1),
        time: tendr_core::TimeMs(0),
        prev_block_id: None,
        proposer: Default::default(),
        txs_hash: Hash([0; 32]),
        app_hash: Hash([0; 32]),
        validators_hash: Hash([0; 32]),
        last_commit_hash: Hash([0; 32]),
    };
    Message::Proposal(Box::new(tendr_core::Proposal {
        height: Height(i as u64 + 1),
        round: tendr_core::Round(0),
        pol_round: None,
        block: tendr_core::BlockData {
            header,
            txs: vec![vec![i; 250]; 8000],
            last_commit: None,
        }
        .into(),
        signature: tendr_core::Signature::EMPTY,
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (a, mut arx) = Transport::start(cfg(b"a", vec![])).await.unwrap();
    let (b, mut brx) = Transport::start(cfg(b"b", vec![a.local_addr()])).await.unwrap();
    while a.peers().is_empty() || b.peers().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut ah, mut bh) = (a.handle(), b.handle());
    let (bside, aside) = (bh.take_side_inboxes().unwrap(), ah.take_side_inboxes().unwrap());
    let (mut bbulk, mut abulk) = (bside.bulk, aside.bulk);
    let aid = a.local_id();
    tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                Some(m) = brx.recv() => m,
                Some(m) = bbulk.recv() => m,
                else => break,
            };
            bh.send(aid, &m.msg);
        }
    });
    let mut rtts = Vec::new();
    for i in 0..2000u64 {
        let t = Instant::now();
        ah.broadcast(&Message::RequestDecided(Height(i)));
        let _ = arx.recv().await;
        rtts.push(t.elapsed().as_secs_f64() * 1e6);
    }
    rtts.sort_by(|x, y| x.partial_cmp(y).unwrap());
    println!(
        "small message RTT p50 {:.0} us, p90 {:.0} us, p99 {:.0} us",
        rtts[1000], rtts[1800], rtts[1980]
    );
    let mut two_mb = Vec::new();
    for i in 0..20u8 {
        let t = Instant::now();
        ah.send(b.local_id(), &big_proposal(i));
        let _ = abulk.recv().await;
        two_mb.push(t.elapsed().as_secs_f64() * 1e3);
    }
    two_mb.sort_by(|x, y| x.partial_cmp(y).unwrap());
    println!(
        "2 MiB message RTT (there and back) p50 {:.1} ms, max {:.1} ms",
        two_mb[10], two_mb[19]
    );
    a.shutdown().await;
    b.shutdown().await;
}
