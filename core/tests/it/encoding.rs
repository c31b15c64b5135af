//! decode(encode(x)) == x, and arbitrary bytes never panic the decoder.

use proptest::prelude::*;
use tendr_core::codec::{decode_message, encode_message};
use tendr_core::*;

fn arb_hash() -> impl Strategy<Value = Hash> {
    any::<[u8; 32]>().prop_map(Hash)
}

fn arb_vote() -> impl Strategy<Value = Vote> {
    (
        any::<bool>(),
        any::<u64>(),
        any::<u32>(),
        proptest::option::of(arb_hash()),
        any::<[u8; 20]>(),
        proptest::collection::vec(any::<u8>(), 64),
    )
        .prop_map(|(pre, h, r, id, a, s)| Vote {
            vote_type: if pre { VoteType::Precommit } else { VoteType::Prevote },
            height: Height(h),
            round: Round(r),
            block_id: id,
            validator: Address(a),
            signature: Signature(s.try_into().unwrap()),
        })
}

fn arb_block() -> impl Strategy<Value = Block> {
    (
        any::<u64>(),
        any::<u64>(),
        proptest::option::of(arb_hash()),
        arb_hash(),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..5),
        proptest::collection::vec(arb_vote(), 0..3),
    )
        .prop_map(|(h, t, prev, x, txs, votes)| {
            BlockData {
                header: Header {
                    chain_id: "c".into(),
                    height: Height(h),
                    time: TimeMs(t),
                    prev_block_id: prev,
                    proposer: Address([1; 20]),
                    txs_hash: x,
                    app_hash: x,
                    validators_hash: x,
                    last_commit_hash: x,
                },
                txs,
                last_commit: (!votes.is_empty()).then(|| Commit {
                    height: Height(h.saturating_sub(1)),
                    round: Round(0),
                    block_id: x,
                    signatures: votes
                        .iter()
                        .map(|v| CommitSig {
                            validator: v.validator,
                            signature: v.signature,
                        })
                        .collect(),
                }),
            }
            .into()
        })
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        arb_vote().prop_map(Message::Vote),
        (
            arb_block(),
            any::<u32>(),
            proptest::option::of(any::<u32>()),
            proptest::collection::vec(any::<u8>(), 64)
        )
            .prop_map(|(b, r, pr, s)| Message::Proposal(Box::new(Proposal {
                height: b.header.height,
                round: Round(r),
                pol_round: pr.map(Round),
                block: b,
                signature: Signature(s.try_into().unwrap())
            }))),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(Message::Tx),
        any::<u64>().prop_map(|h| Message::RequestDecided(Height(h))),
        (arb_vote(), arb_vote()).prop_map(|(a, b)| Message::Evidence(Box::new(Evidence::DuplicateVote { a, b }))),
    ]
}

proptest! {
    #[test]
    fn decode_of_encode_is_identity(m in arb_message()) {
        prop_assert_eq!(decode_message(&encode_message(&m)).unwrap(), m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_message(&bytes);
    }

    #[test]
    fn mutated_valid_messages_never_panic(m in arb_message(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut b = encode_message(&m);
        if !b.is_empty() {
            let i = pos % b.len();
            b[i] = byte;
        }
        let _ = decode_message(&b);
    }
}

proptest! {
    /// Addresses and hashes order as their bytes do (validator sets are sorted by address),
    /// also when they differ only in the last bytes.
    #[test]
    fn address_and_hash_order_is_byte_order(
        a in any::<[u8; 32]>(),
        i in 0usize..32,
        byte in any::<u8>(),
    ) {
        let mut b = a;
        b[i] = byte;
        prop_assert_eq!(Hash(a).cmp(&Hash(b)), a.cmp(&b));
        let (a20, b20): ([u8; 20], [u8; 20]) = (a[..20].try_into().unwrap(), b[..20].try_into().unwrap());
        prop_assert_eq!(Address(a20).cmp(&Address(b20)), a20.cmp(&b20));
    }
}

proptest! {
    /// A block shares its contents: it encodes exactly as them (the wire and store formats
    /// did not change when blocks became shared), and changing a clone leaves the original
    /// and its id.
    #[test]
    fn shared_block_encodes_as_its_contents(b in arb_block()) {
        let data: &BlockData = &b;
        prop_assert_eq!(tendr_core::codec::encode(&b), tendr_core::codec::encode(data));
        let mut c = b.clone();
        let before = c.id();
        c.make_mut().header.time = TimeMs(b.header.time.0.wrapping_add(1));
        // The id is cached per block: a change must drop it.
        prop_assert_ne!(c.id(), before);
        prop_assert_eq!(c.id(), BlockData::id(&c));
        prop_assert_eq!(b.id(), before);
        prop_assert_eq!(b.header.time, data.header.time);
        let decoded: Block = tendr_core::codec::decode_bounded(&tendr_core::codec::encode(&c), 1 << 20).unwrap();
        prop_assert_eq!(decoded.id(), c.id());
    }
}

/// Sign bytes are built on the stack for every chain id a genesis accepts, and stay correct
/// (on the heap) for a longer one.
#[test]
fn sign_bytes_fit_inline_up_to_the_chain_id_limit() {
    use tendr_core::crypto::{proposal_sign_bytes, vote_sign_bytes};
    use tendr_core::limits::MAX_CHAIN_ID_BYTES;
    let id = Some(Hash([7; 32]));
    let longest = "c".repeat(MAX_CHAIN_ID_BYTES);
    let v = vote_sign_bytes(&longest, VoteType::Precommit, Height(u64::MAX), Round(u32::MAX), id);
    let p = proposal_sign_bytes(
        &longest,
        Height(u64::MAX),
        Round(u32::MAX),
        Some(Round(1)),
        Hash([7; 32]),
    );
    assert!(!v.spilled() && !p.spilled(), "{} and {} bytes", v.len(), p.len());
    let long = "c".repeat(4 * MAX_CHAIN_ID_BYTES);
    let w = vote_sign_bytes(&long, VoteType::Precommit, Height(1), Round(0), id);
    assert!(w.spilled());
    assert_eq!(
        &w[..],
        &vote_sign_bytes(&long, VoteType::Precommit, Height(1), Round(0), id)[..]
    );
    assert!(w.windows(long.len()).any(|s| s == long.as_bytes()));
}
