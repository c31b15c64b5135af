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
