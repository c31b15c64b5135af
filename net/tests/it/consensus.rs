//! Real nodes deciding over QUIC: agreement over 100 heights, a stopped and restarted
//! validator, an observer that joins from one seed address.

use crate::cluster::*;
use tendr_core::Height;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validators_decide_100_heights_with_identical_blocks() {
    init_tracing();
    let (nodes, _, _) = cluster(4).await;
    wait_for("4 validators to decide 100 heights", 60, || {
        nodes.iter().all(|n| n.height() >= 100)
    })
    .await;
    for h in 1..=100 {
        let id = nodes[0].store.block_id(h).unwrap();
        for n in &nodes[1..] {
            assert_eq!(n.store.block_id(h), Some(id), "block at height {h} differs");
        }
    }
    for n in &nodes {
        assert_eq!(n.net.peers().len(), 3, "full mesh from a single seed via peer exchange");
    }
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
    wait_for("the observer to follow the chain", 30, || obs.height() >= now + 5).await;
    for h in 1..=now + 5 {
        assert_eq!(obs.store.block_id(h), nodes[0].store.block_id(h), "height {h}");
    }
    wait_for("the observer to learn every validator by peer exchange", 10, || {
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
