//! Real nodes deciding over QUIC: agreement over 100 heights, a stopped and restarted
//! validator, an observer that joins from one seed address.

use crate::cluster::*;
use tendr_core::Height;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_decide_100_heights_with_identical_blocks() {
    init_tracing();
    let (nodes, _, _) = cluster(4).await;
    wait_for("4 validators to decide 100 heights", 120, || {
        nodes.iter().all(|n| n.height() >= 100)
    })
    .await;
    for h in 1..=100 {
        let id = nodes[0].store.block_id(h).unwrap();
        for n in &nodes[1..] {
            assert_eq!(n.store.block_id(h), Some(id), "block at height {h} differs");
        }
    }
    wait_for("a full mesh from a single seed via peer exchange", 30, || {
        nodes.iter().all(|n| n.net.peers().len() == 3)
    })
    .await;
    let s = nodes[0].query(|v| (v.engine().height(), v.mempool().len())).await;
    assert!(s.0 >= Height(100));
    for n in nodes {
        n.stop().await;
    }
}

/// A validator stops, the other three go on; it restarts from its store on the same address,
/// catches up through `RequestDecided`/`Decided` and votes again (proven by stopping another
/// validator: three of four can only decide if the restarted one votes). Then an observer
/// joins from a single seed address, learns the others by peer exchange and follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_validator_catches_up_and_votes_again_and_observer_follows() {
    init_tracing();
    let (mut nodes, keys, g) = cluster(4).await;
    wait_for("first 10 heights", 30, || nodes.iter().all(|n| n.height() >= 10)).await;

    let n3 = nodes.pop().unwrap();
    let (store3, addr3) = n3.stop().await;
    let stopped_at = store3.height();
    let target = nodes.iter().map(|n| n.height()).max().unwrap() + 20;
    wait_for("3 validators to go on without the 4th", 30, || {
        nodes.iter().all(|n| n.height() >= target)
    })
    .await;
    assert_eq!(store3.height(), stopped_at);

    let mut spec = Spec::validator(&keys[3], &g, vec![nodes[0].addr]);
    spec.store = store3;
    spec.listen = addr3;
    nodes.push(start(spec, None).await);
    let ahead = nodes[0].height();
    wait_for("the restarted validator to catch up", 30, || nodes[3].height() >= ahead).await;
    for h in 1..=ahead {
        assert_eq!(nodes[3].store.block_id(h), nodes[0].store.block_id(h), "height {h}");
    }
    // Catch-up is honest: the lagging node asked the others to back their far-ahead votes,
    // they did, and nobody was banned.
    let s3 = nodes[3].net.stats();
    eprintln!("restarted validator after catch-up: {s3:?}");
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(n.net.stats().peers_banned, 0, "node {i} banned an honest peer");
    }
    assert!(s3.far_future_challenges >= 1 && s3.far_future_answered >= 1, "{s3:?}");

    // Stop validator 2: validators 0, 1 and the restarted 3 hold exactly the quorum.
    let n2 = nodes.remove(2);
    n2.stop().await;
    let now = nodes.iter().map(|n| n.height()).max().unwrap();
    wait_for("0, 1 and the restarted 3 to decide 10 more heights", 30, || {
        nodes.iter().all(|n| n.height() >= now + 10)
    })
    .await;
    let signer = keys[3].address();
    let signed = (now + 1..=now + 10).any(|h| {
        nodes[0]
            .store
            .commit(h)
            .is_some_and(|c| c.signatures.iter().any(|s| s.validator == signer))
    });
    assert!(signed, "the restarted validator's precommits are in the commits");

    // An observer joins from one seed address.
    let mut spec = Spec::validator(&tendr_core::PrivateKey::from_seed(b"observer"), &g, vec![nodes[0].addr]);
    spec.validator_key = None;
    let obs = start(spec, None).await;
    let now = nodes[0].height();
    // Both: the observer may hear a decision from validator 1 or 3 before validator 0 has
    // stored it.
    wait_for("the observer to follow the chain", 30, || {
        obs.height() >= now + 5 && nodes[0].height() >= now + 5
    })
    .await;
    for h in 1..=now + 5 {
        assert_eq!(obs.store.block_id(h), nodes[0].store.block_id(h), "height {h}");
    }
    wait_for("the observer to learn every validator by peer exchange", 30, || {
        obs.net.peers().len() == 3
    })
    .await;
    assert!(obs.net.peers().iter().all(|p| p.is_validator));
    assert!(nodes[0].net.peers().iter().any(|p| p.id == obs.id && !p.is_validator));
    obs.stop().await;
    for n in nodes {
        n.stop().await;
    }
}

/// A partial mesh: validator 3 accepts a single peer (validator 0), so its votes reach 1 and
/// 2 only through 0's relay, and theirs reach it the same way. With validator 2 stopped,
/// 0, 1 and 3 are exactly a quorum: they can only decide if relay works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_are_relayed_when_the_mesh_is_not_full() {
    init_tracing();
    let keys = keys(4);
    let g = genesis(CHAIN, &keys);
    let first = start(Spec::validator(&keys[0], &g, vec![]), None).await;
    let seed = first.addr;
    let mut nodes = vec![first];
    for k in &keys[1..3] {
        nodes.push(start(Spec::validator(k, &g, vec![seed]), None).await);
    }
    let mut spec = Spec::validator(&keys[3], &g, vec![seed]);
    spec.max_peers = 1;
    nodes.push(start(spec, None).await);
    wait_for("first 5 heights", 30, || nodes.iter().all(|n| n.height() >= 5)).await;
    let p3 = nodes[3].net.peers();
    assert_eq!(p3.len(), 1, "validator 3 is connected to validator 0 only");
    assert_eq!(p3[0].id, nodes[0].id);
    assert!(nodes[1].net.peers().iter().all(|p| p.id != nodes[3].id));

    let n2 = nodes.remove(2);
    n2.stop().await;
    let h = nodes.iter().map(|n| n.height()).max().unwrap();
    wait_for("0, 1 and 3 to decide through relay", 30, || {
        nodes.iter().all(|n| n.height() >= h + 10)
    })
    .await;
    let (v1, v3) = (keys[1].address(), keys[3].address());
    let both = (h + 1..=h + 10).any(|x| {
        nodes[1].store.commit(x).is_some_and(|c| {
            c.signatures.iter().any(|s| s.validator == v3) && c.signatures.iter().any(|s| s.validator == v1)
        })
    });
    assert!(both, "validator 1 collected validator 3's precommits through the relay");
    for n in nodes {
        n.stop().await;
    }
}

/// Four validators whose node keys are not their validator keys (as `tendr init` makes them),
/// in a full mesh: with each node's proof of the validator it runs for in its hello, peers
/// recognise every vote's and proposal's author as a direct peer and relay nothing; without
/// it, each node relayed every message of the others to its two other peers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mesh_relays_nothing_once_validators_prove_their_nodes() {
    init_tracing();
    let keys = keys(4);
    let g = genesis(CHAIN, &keys);
    let mut relayed = vec![];
    for prove in [true, false] {
        let spec = |i: usize, seeds| {
            let mut s = Spec::validator(&keys[i], &g, seeds);
            s.node_key = tendr_core::PrivateKey::from_seed(format!("node-key-{i}").as_bytes());
            s.prove_validator = prove;
            s
        };
        let first = start(spec(0, vec![]), None).await;
        let seed = first.addr;
        let mut nodes = vec![first];
        for i in 1..4 {
            nodes.push(start(spec(i, vec![seed]), None).await);
        }
        wait_for("a full mesh and 5 heights", 30, || {
            nodes.iter().all(|n| n.net.peers().len() == 3 && n.height() >= 5)
        })
        .await;
        // Peer exchange tells each node its peers' links; then count over 20 heights.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let count = |nodes: &[TestNode]| nodes.iter().map(|n| n.net.stats().relayed_frames).sum::<u64>();
        let (before, h) = (count(&nodes), nodes.iter().map(|n| n.height()).max().unwrap());
        wait_for("20 more heights", 60, || nodes.iter().all(|n| n.height() >= h + 20)).await;
        relayed.push(count(&nodes) - before);
        for n in nodes {
            n.stop().await;
        }
    }
    let (with, without) = (relayed[0], relayed[1]);
    println!("relays over 20 heights in a full mesh of 4: {with} with proofs, {without} without");
    assert_eq!(with, 0, "relays in a full mesh of proven validators");
    assert!(
        without >= 20 * 4,
        "without proofs every message was relayed: {without} relays"
    );
}

/// Two nodes that dial each other at the same moment end up with one connection, the same
/// one on both ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_leave_one_connection_chosen_deterministically() {
    init_tracing();
    use tendr_net::{NetConfig, Transport};
    let keys = keys(2);
    let cfg = |i: usize, listen, seed| NetConfig {
        listen,
        node_key: keys[i].clone(),
        chain_id: CHAIN.into(),
        genesis_hash: tendr_core::Hash([3; 32]),
        seeds: vec![seed],
        max_peers: 8,
        is_validator: true,
        advertise: None,
        link_shaping: None,
        validator_proof: None,
    };
    for _ in 0..3 {
        // Free ports chosen now, so that each node knows the other's address before either runs.
        let sock_a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sock_b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (addr_a, addr_b) = (sock_a.local_addr().unwrap(), sock_b.local_addr().unwrap());
        drop((sock_a, sock_b));
        let (a, b) = tokio::join!(
            Transport::start_with(cfg(0, addr_a, addr_b), test_limits()),
            Transport::start_with(cfg(1, addr_b, addr_a), test_limits())
        );
        let ((a, _ra), (b, _rb)) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            // Another process took one of the ports between our probe and the bind.
            (a, b) => {
                eprintln!("a port was taken meanwhile; trying again");
                for t in [a, b].into_iter().flatten() {
                    t.0.shutdown().await;
                }
                continue;
            }
        };
        // Both ends come to see the same single connection (one dialed it, the other
        // accepted it). When both dials complete, the lower id's wins; when one dial failed
        // while the other end was still starting, the one that succeeded stays. Until the
        // second handshake is resolved, each end may briefly hold its own dial.
        let settled = || {
            let (pa, pb) = (a.peers(), b.peers());
            pa.len() == 1 && pb.len() == 1 && pa[0].outbound != pb[0].outbound
        };
        wait_for("one connection, seen from both ends", 30, settled).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(settled(), "the connection stays: {:?} {:?}", a.peers(), b.peers());
        a.shutdown().await;
        b.shutdown().await;
    }
}
