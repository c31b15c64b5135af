//! A validator that signs valid votes for heights far beyond ours must back them with a
//! decided block when asked; one that cannot is cut off and kept out, by node id and by
//! address, while honest catch-up (tested in `consensus`) is never penalized.

use crate::cluster::*;
use crate::rogue::{closed_reason, Rogue};
use std::time::{Duration, Instant};
use tendr_core::codec::encode_message;
use tendr_core::crypto::vote_sign_bytes;
use tendr_core::{Height, Message, Round, Vote, VoteType};

fn framed(msg: &Message) -> Vec<u8> {
    let body = encode_message(msg);
    let mut f = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    f.push(tendr_net::wire::TAG_MESSAGE);
    f.extend_from_slice(&body);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validly_signing_far_future_spammer_is_banned_by_id_and_address() {
    init_tracing();
    // Five equal validators; the four honest ones hold more than 2/3 without the spammer.
    let keys = keys(5);
    let g = genesis(CHAIN, &keys);
    let gh = genesis_hash(&g);
    let mut spec = Spec::validator(&keys[0], &g, vec![]);
    let answer = Duration::from_secs(1);
    spec.limits.far_future_answer = answer;
    let mut nodes = vec![start(spec, None).await];
    for k in &keys[1..4] {
        nodes.push(start(Spec::validator(k, &g, vec![nodes[0].addr]), None).await);
    }
    wait_for("first 3 heights", 30, || nodes.iter().all(|n| n.height() >= 3)).await;

    // The spammer holds validator 4's key (its node key is its validator key, as for any
    // validator) and connects from 127.0.0.2.
    let spammer = Rogue::new_at("net-validator-4", CHAIN, gh, "127.0.0.2");
    assert_eq!(spammer.key.address(), keys[4].address());
    let (conn, res) = spammer.connect(nodes[0].addr).await;
    res.unwrap();
    let started = Instant::now();
    let spam = tokio::spawn({
        let (conn, key, store) = (conn.clone(), keys[4].clone(), nodes[0].store.clone());
        async move {
            let Ok(mut s) = conn.open_uni().await else { return 0u64 };
            let mut sent = 0u64;
            loop {
                // Validly signed, 1000 heights beyond the node, about 100 per second.
                let height = Height(store.height() + 1000 + sent);
                let bytes = vote_sign_bytes(CHAIN, VoteType::Prevote, height, Round(0), None);
                let v = Vote {
                    vote_type: VoteType::Prevote,
                    height,
                    round: Round(0),
                    block_id: None,
                    validator: key.address(),
                    signature: key.sign(&bytes),
                };
                if s.write_all(&framed(&Message::Vote(v))).await.is_err() {
                    return sent;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let why = tokio::time::timeout(Duration::from_secs(30), closed_reason(&conn))
        .await
        .expect("the spammer is cut off");
    let took = started.elapsed();
    let sent = spam.await.unwrap();
    eprintln!("far-future spammer cut off after {sent} votes and {took:?}: {why}");
    assert!(why.contains("did not serve the decided block of our height"), "{why}");
    // Three challenges, one per `answer`: it cannot be cut off sooner.
    assert!(took >= 2 * answer, "cut off after {took:?}");
    let net = &nodes[0].net;
    assert!(net.is_banned(&keys[4].address()));
    assert!(net.is_ip_banned("127.0.0.2".parse().unwrap()));
    assert!(!net.is_ip_banned("127.0.0.1".parse().unwrap()));
    let s = net.stats();
    assert!(s.far_future_challenges >= 3 && s.far_future_answered == 0, "{s:?}");

    // A fresh key from the banned address is refused with the reason; from another address
    // it is welcome.
    let e = Rogue::new_at("fresh-key", CHAIN, gh, "127.0.0.2")
        .connect(nodes[0].addr)
        .await
        .1
        .unwrap_err();
    assert!(e.contains("address 127.0.0.2 is banned"), "{e}");
    let other = Rogue::new_at("fresh-key", CHAIN, gh, "127.0.0.3");
    let (_c, res) = other.connect(nodes[0].addr).await;
    res.unwrap();

    // The honest validators went on deciding, and none of them was banned by another.
    let h = nodes.iter().map(|n| n.height()).max().unwrap();
    wait_for("the validators to keep deciding", 30, || {
        nodes.iter().all(|n| n.height() >= h + 10)
    })
    .await;
    for (i, n) in nodes.iter().enumerate() {
        let banned = if i == 0 { 1 } else { 0 };
        assert_eq!(n.net.stats().peers_banned, banned, "node {i}: {:?}", n.net.stats());
    }
    assert_eq!(nodes[0].net.peers().iter().filter(|p| p.is_validator).count(), 3);
    for n in nodes {
        n.stop().await;
    }
}
