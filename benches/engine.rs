//! Engine benchmark: votes processed per second, with signature verification and with the
//! cached-verified path (signatures already in the verifier's cache), for 4 and 100
//! validators. Run: `cargo bench --bench engine`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tendr::core::chain::ChainState;
use tendr::core::crypto::vote_sign_bytes;
use tendr::core::engine::Input;
use tendr::core::traits::{Application, CachingVerifier, SignatureVerifier};
use tendr::core::*;
use tendr::kv::KvApp;

const CHAIN: &str = "bench";

fn setup(n: usize) -> (ChainState, Vec<PrivateKey>, Vec<Vote>) {
    let keys: Vec<PrivateKey> = (0..n)
        .map(|i| PrivateKey::from_seed(format!("bench-{i}").as_bytes()))
        .collect();
    let vs = ValidatorSet::new(keys.iter().map(|k| (k.public_key(), VotingPower(1))).collect()).unwrap();
    let chain = ChainState::genesis(CHAIN, vs, KvApp::new(CHAIN).initial_app_hash(), TimeMs(0));
    // Prevotes and precommits (nil) of rounds 0..4 from everyone but validator 0 (the engine).
    let mut votes = vec![];
    for r in 0..4u32 {
        for t in [VoteType::Prevote, VoteType::Precommit] {
            for k in &keys[1..] {
                let sig = k.sign(&vote_sign_bytes(CHAIN, t, Height(1), Round(r), None));
                votes.push(Vote {
                    vote_type: t,
                    height: Height(1),
                    round: Round(r),
                    block_id: None,
                    validator: k.address(),
                    signature: sig,
                });
            }
        }
    }
    (chain, keys, votes)
}

fn engine(chain: &ChainState, key: &PrivateKey, verifier: Box<dyn SignatureVerifier>) -> Engine {
    let mut e = Engine::new(
        EngineConfig::new(CHAIN, TimeoutConfig::default()),
        Some(key.clone()),
        chain.clone(),
        vec![],
        verifier,
    );
    e.handle(TimeMs(0), Input::Start).unwrap();
    e
}

fn feed(e: &mut Engine, votes: &[Vote]) {
    for v in votes {
        let _ = e.handle(
            TimeMs(1),
            Input::Message {
                from: v.validator,
                msg: Message::Vote(v.clone()),
            },
        );
    }
}

fn bench_votes(c: &mut Criterion) {
    for n in [4usize, 100] {
        let (chain, keys, votes) = setup(n);
        let mut g = c.benchmark_group(format!("engine_votes_{n}_validators"));
        g.throughput(Throughput::Elements(votes.len() as u64));
        g.sample_size(10);
        g.bench_function("verified", |b| {
            b.iter_batched(
                || engine(&chain, &keys[0], Box::new(CachingVerifier::new())),
                |mut e| feed(&mut e, &votes),
                BatchSize::LargeInput,
            )
        });
        g.bench_function("cached", |b| {
            b.iter_batched(
                || {
                    let mut cache = CachingVerifier::new();
                    for v in &votes {
                        let k = chain.validators.index_of(&v.validator).unwrap();
                        let bytes = vote_sign_bytes(CHAIN, v.vote_type, v.height, v.round, v.block_id);
                        let val = chain.validators.get(k);
                        cache
                            .verify(&val.pub_key, chain.validators.key(k), &bytes, &v.signature)
                            .unwrap();
                    }
                    engine(&chain, &keys[0], Box::new(cache))
                },
                |mut e| feed(&mut e, &votes),
                BatchSize::LargeInput,
            )
        });
        g.finish();
    }
}

criterion_group!(benches, bench_votes);
criterion_main!(benches);
