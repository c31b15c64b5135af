//! The engine's cached-vote path, for counting instructions (see `sim/examples/sim_count.rs`):
//! the votes of the criterion engine bench (nil prevotes and precommits of rounds 0-3 from
//! every validator but one) fed to fresh observer engines whose verifier takes the cache-hit
//! path of `CachingVerifier` (digest and lookup).
//!
//! ```text
//! cargo build --release -p tendr-core --example engine_count
//! valgrind --tool=callgrind target/release/examples/engine_count 2000           # 4 validators
//! VALS=100 valgrind --tool=callgrind target/release/examples/engine_count 100   # 100 validators
//! ```
use std::collections::BTreeSet;
use std::sync::Arc;
use tendr_core::chain::ChainState;
use tendr_core::crypto::{vote_sign_bytes, CryptoError};
use tendr_core::engine::Input;
use tendr_core::traits::{Application, CachingVerifier, SignatureVerifier};
use tendr_core::*;
use tendr_kv::KvApp;

const CHAIN: &str = "bench";

/// The cache-hit path of [`CachingVerifier`]: every signature was verified before.
struct Hits(Arc<BTreeSet<Hash>>);

impl SignatureVerifier for Hits {
    fn verify(
        &mut self,
        pk: &PublicKey,
        _: &k256::ecdsa::VerifyingKey,
        msg: &[u8],
        sig: &Signature,
    ) -> Result<(), CryptoError> {
        assert!(
            self.0.contains(&CachingVerifier::digest(pk, msg, sig)),
            "a vote of the set"
        );
        Ok(())
    }
}

fn main() {
    let n: usize = std::env::var("VALS").map_or(4, |s| s.parse().expect("VALS"));
    let engines: usize = std::env::args().nth(1).map_or(100, |s| s.parse().expect("engines"));
    let keys: Vec<PrivateKey> = (0..n)
        .map(|i| PrivateKey::from_seed(format!("bench-{i}").as_bytes()))
        .collect();
    let vs = ValidatorSet::new(keys.iter().map(|k| (k.public_key(), VotingPower(1))).collect()).expect("set");
    let chain = ChainState::genesis(CHAIN, vs, KvApp::new(CHAIN).initial_app_hash(), TimeMs(0));
    let mut votes = vec![];
    for r in 0..4u32 {
        for t in [VoteType::Prevote, VoteType::Precommit] {
            for k in &keys[1..] {
                votes.push(Vote {
                    vote_type: t,
                    height: Height(1),
                    round: Round(r),
                    block_id: None,
                    validator: k.address(),
                    signature: k.sign(&vote_sign_bytes(CHAIN, t, Height(1), Round(r), None)),
                });
            }
        }
    }
    let seen: BTreeSet<Hash> = votes
        .iter()
        .map(|v| {
            let i = chain.validators.index_of(&v.validator).expect("member");
            let bytes = vote_sign_bytes(CHAIN, v.vote_type, v.height, v.round, v.block_id);
            CachingVerifier::digest(&chain.validators.get(i).pub_key, &bytes, &v.signature)
        })
        .collect();
    let seen = Arc::new(seen);
    let mut rounds = 0;
    for _ in 0..engines {
        // An observer: it signs nothing, so only vote handling is counted.
        let cfg = EngineConfig::new(CHAIN, TimeoutConfig::default());
        let mut e = Engine::new(cfg, None, chain.clone(), vec![], Box::new(Hits(seen.clone())));
        e.handle(TimeMs(0), Input::Start).expect("start");
        for v in &votes {
            let msg = Message::Vote(v.clone());
            let _ = e.handle(TimeMs(1), Input::Message { from: v.validator, msg });
        }
        rounds += e.round().0;
    }
    println!(
        "{engines} engines, {} votes each, round {}",
        votes.len(),
        rounds / engines as u32
    );
}
