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
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (a, mut arx) = Transport::start(cfg(b"a", vec![])).await.unwrap();
    let (b, mut brx) = Transport::start(cfg(b"b", vec![a.local_addr()])).await.unwrap();
    while a.peers().is_empty() || b.peers().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut ah, mut bh) = (a.handle(), b.handle());
    let mut btx = bh.take_tx_inbox().unwrap();
    let mut atx = ah.take_tx_inbox().unwrap();
    let aid = a.local_id();
    tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                Some(m) = brx.recv() => m,
                Some(m) = btx.recv() => m,
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
        ah.send(b.local_id(), &Message::Tx(vec![i; 2 << 20]));
        let _ = atx.recv().await;
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
