//! Peers that cannot prove their identity, claim another node's, run another chain or genesis,
//! or speak another protocol version are refused, with the reason.

use crate::cluster::*;
use crate::rogue::Rogue;
use std::time::Duration;
use tendr_net::{NetConfig, Transport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_genesis_chain_identity_or_version_is_refused_with_the_reason() {
    init_tracing();
    let keys = keys(1);
    let g = genesis(CHAIN, &keys);
    let gh = genesis_hash(&g);
    let node = start(Spec::validator(&keys[0], &g, vec![]), None).await;

    let other = Rogue::new("rogue-genesis", CHAIN, tendr_core::Hash([9; 32]));
    let (_, res) = other.connect(node.addr).await;
    let e = res.unwrap_err();
    assert!(e.contains("genesis hash"), "{e}");

    let other = Rogue::new("rogue-chain", "another-chain", gh);
    let e = other.connect(node.addr).await.1.unwrap_err();
    assert!(e.contains("runs chain `another-chain`"), "{e}");

    let mut impostor = Rogue::new("impostor", CHAIN, gh);
    impostor.claimed = keys[0].public_key();
    let e = impostor.connect(node.addr).await.1.unwrap_err();
    assert!(e.contains("does not hold that node key"), "{e}");

    let mut old = Rogue::new("old-version", CHAIN, gh);
    old.version = 7;
    let e = old.connect(node.addr).await.1.unwrap_err();
    assert!(e.contains("protocol version 7"), "{e}");

    assert!(node.net.peers().is_empty(), "no refused peer was registered");
    // The node remembers the two refusals for another chain or genesis, and only those.
    let refused = node.net.genesis_refusals();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].contains("genesis hash") && refused[1].contains("runs chain"),
        "{refused:?}"
    );
    let honest = Rogue::new("honest", CHAIN, gh);
    let (_conn, res) = honest.connect(node.addr).await;
    res.unwrap();
    wait_for("the honest peer to be registered", 20, || node.net.peers().len() == 1).await;

    // A whole node with another genesis dials the validator and is never admitted.
    let cfg = NetConfig {
        listen: loopback(),
        node_key: tendr_core::PrivateKey::from_seed(b"other-genesis-node"),
        chain_id: CHAIN.into(),
        genesis_hash: tendr_core::Hash([1; 32]),
        seeds: vec![node.addr],
        max_peers: 8,
        is_validator: true,
        advertise: None,
        link_shaping: None,
        validator_proof: None,
    };
    let (t, _rx) = Transport::start_with(cfg, test_limits()).await.unwrap();
    // The refused node learns why from the close code, not from a log line (`join` relies
    // on it to refuse a foreign genesis).
    wait_for("the other-genesis node to learn it was refused", 20, || {
        !t.genesis_refusals().is_empty()
    })
    .await;
    let why = t.genesis_refusals().pop().unwrap();
    assert!(
        why.contains("refused this node's genesis") && why.contains("genesis hash"),
        "{why}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(t.peers().is_empty());
    assert!(node.net.peers().iter().all(|p| p.id != t.local_id()));
    t.shutdown().await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_beyond_max_peers_are_refused() {
    init_tracing();
    let keys = keys(1);
    let g = genesis(CHAIN, &keys);
    let gh = genesis_hash(&g);
    let mut spec = Spec::validator(&keys[0], &g, vec![]);
    spec.max_peers = 2;
    let node = start(spec, None).await;
    let (r1, r2, r3) = (
        Rogue::new("p1", CHAIN, gh),
        Rogue::new("p2", CHAIN, gh),
        Rogue::new("p3", CHAIN, gh),
    );
    let (_c1, a) = r1.connect(node.addr).await;
    let (_c2, b) = r2.connect(node.addr).await;
    a.unwrap();
    b.unwrap();
    wait_for("two peers registered", 20, || node.net.peers().len() == 2).await;
    let e = r3.connect(node.addr).await.1.unwrap_err();
    assert!(e.contains("max_peers = 2"), "{e}");
    assert_eq!(node.net.peers().len(), 2);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shut_down_transport_frees_its_port_for_a_restart() {
    fn assert_handle<T: Send + Sync + Clone + 'static>() {}
    assert_handle::<tendr_net::NetHandle>();
    let cfg = |listen| NetConfig {
        listen,
        node_key: tendr_core::PrivateKey::from_seed(b"restart"),
        chain_id: CHAIN.into(),
        genesis_hash: tendr_core::Hash([2; 32]),
        seeds: vec![],
        max_peers: 8,
        is_validator: false,
        advertise: None,
        link_shaping: None,
        validator_proof: None,
    };
    let (t, _rx) = Transport::start(cfg(loopback())).await.unwrap();
    let addr = t.local_addr();
    t.shutdown().await;
    let mut again = None;
    for _ in 0..500 {
        match Transport::start(cfg(addr)).await {
            Ok(x) => {
                again = Some(x);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let (t, _rx) = again.expect("the port is free within 5 s of shutdown");
    assert_eq!(t.local_addr(), addr);
    t.shutdown().await;
}

/// Issue 18, item 2: the guide lists .1 and .2 in every node's `seed_nodes`, so those two dial
/// themselves. The first dial that reaches ourselves marks the address as our own; it is
/// never dialled again (before, every backoff period brought two warnings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_own_address_in_the_seeds_is_dialled_once() {
    init_tracing();
    let port = std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let own: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = NetConfig {
        listen: format!("0.0.0.0:{port}").parse().unwrap(),
        node_key: tendr_core::PrivateKey::from_seed(b"self-seeded"),
        chain_id: CHAIN.into(),
        genesis_hash: tendr_core::Hash([3; 32]),
        seeds: vec![own],
        max_peers: 8,
        is_validator: true,
        advertise: None,
        link_shaping: None,
        validator_proof: None,
    };
    let (t, _rx) = Transport::start_with(cfg, test_limits()).await.unwrap();
    wait_for("the node to recognise its own address", 20, || t.stats().own_addrs == 1).await;
    // Several backoff periods (100 ms doubling) pass: no second dial of ourselves.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let stats = t.stats();
    assert_eq!(stats.self_dials, 1, "{stats:?}");
    assert_eq!(stats.known_addrs, 0, "our own address left the address book: {stats:?}");
    assert!(t.peers().is_empty());
    t.shutdown().await;
}
