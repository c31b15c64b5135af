//! Bad input is rejected with a typed error and changes nothing.

use crate::memnet::*;
use tendr_core::codec::{decode_message, encode_message, DecodeError};
use tendr_core::crypto::{proposal_sign_bytes, vote_sign_bytes};
use tendr_core::engine::{EngineError, Input};
use tendr_core::limits::MAX_MESSAGE_BYTES;
use tendr_core::traits::CachingVerifier;
use tendr_core::*;

fn engine(i: usize) -> (Engine, Vec<PrivateKey>) {
    let keys = keys(4);
    let g = genesis(&keys, &[1, 1, 1, 1]);
    let mut e = Engine::new(
        EngineConfig::new(CHAIN, timeouts()),
        Some(keys[i].clone()),
        g,
        vec![],
        Box::new(CachingVerifier::new()),
    );
    e.handle(TimeMs(0), Input::Start).unwrap();
    (e, keys)
}

fn vote(k: &PrivateKey, chain: &str, h: u64, r: u32) -> Vote {
    let sig = k.sign(&vote_sign_bytes(chain, VoteType::Prevote, Height(h), Round(r), None));
    Vote {
        vote_type: VoteType::Prevote,
        height: Height(h),
        round: Round(r),
        block_id: None,
        validator: k.address(),
        signature: sig,
    }
}

fn msg(e: &mut Engine, from: &PrivateKey, m: Message) -> Result<Vec<engine::Output>, EngineError> {
    e.handle(
        TimeMs(1),
        Input::Message {
            from: from.address(),
            msg: m,
        },
    )
}

#[test]
fn unknown_validator_is_rejected() {
    let (mut e, _) = engine(0);
    let stranger = PrivateKey::from_seed(b"stranger");
    let r = msg(&mut e, &stranger, Message::Vote(vote(&stranger, CHAIN, 1, 0)));
    assert_eq!(r, Err(EngineError::UnknownValidator(stranger.address())));
}

#[test]
fn a_later_heights_vote_from_outside_our_set_is_not_blamed() {
    // It may come from a validator added by a block we have not decided yet.
    let (mut e, _) = engine(0);
    let newcomer = PrivateKey::from_seed(b"added at height 1");
    let r = msg(&mut e, &newcomer, Message::Vote(vote(&newcomer, CHAIN, 3, 0)));
    assert_eq!(
        r,
        Err(EngineError::NotYetVerifiable {
            height: Height(3),
            validator: newcomer.address()
        })
    );
}

#[test]
fn forged_signature_is_rejected() {
    let (mut e, keys) = engine(0);
    let mut v = vote(&keys[1], CHAIN, 1, 0);
    v.signature = keys[2].sign(b"something else");
    assert!(matches!(
        msg(&mut e, &keys[1], Message::Vote(v)),
        Err(EngineError::BadSignature { what: "vote", .. })
    ));
    // A vote signed for another chain does not verify here.
    let v = vote(&keys[1], "other-chain", 1, 0);
    assert!(matches!(
        msg(&mut e, &keys[1], Message::Vote(v)),
        Err(EngineError::BadSignature { .. })
    ));
}

#[test]
fn proposal_for_another_chain_is_rejected_by_name() {
    let keys = keys(4);
    let g = genesis(&keys, &[1, 1, 1, 1]);
    let proposer = keys
        .iter()
        .find(|k| k.address() == g.proposer(Round(0)))
        .unwrap()
        .clone();
    let receiver = keys.iter().position(|k| k.address() != proposer.address()).unwrap();
    let (mut e, _) = engine(receiver);
    let mut header = g.new_header(proposer.address(), TimeMs(5), &[]);
    header.chain_id = "other-chain".into();
    let block: Block = BlockData {
        header,
        txs: vec![],
        last_commit: None,
    }
    .into();
    let sig = proposer.sign(&proposal_sign_bytes(
        "other-chain",
        Height(1),
        Round(0),
        None,
        block.id(),
    ));
    let p = Proposal {
        height: Height(1),
        round: Round(0),
        pol_round: None,
        block,
        signature: sig,
    };
    assert!(matches!(
        msg(&mut e, &proposer, Message::Proposal(Box::new(p))),
        Err(EngineError::WrongChain { .. })
    ));
}

#[test]
fn proposal_not_from_the_proposer_is_rejected() {
    let keys = keys(4);
    let g = genesis(&keys, &[1, 1, 1, 1]);
    let impostor = keys
        .iter()
        .find(|k| k.address() != g.proposer(Round(0)))
        .unwrap()
        .clone();
    let (mut e, _) = engine(0);
    let block: Block = BlockData {
        header: g.new_header(impostor.address(), TimeMs(5), &[]),
        txs: vec![],
        last_commit: None,
    }
    .into();
    let sig = impostor.sign(&proposal_sign_bytes(CHAIN, Height(1), Round(0), None, block.id()));
    let p = Proposal {
        height: Height(1),
        round: Round(0),
        pol_round: None,
        block,
        signature: sig,
    };
    assert!(matches!(
        msg(&mut e, &impostor, Message::Proposal(Box::new(p))),
        Err(EngineError::BadSignature { what: "proposal", .. })
    ));
}

#[test]
fn far_future_height_and_far_round_are_rejected_and_bounded() {
    let (mut e, keys) = engine(0);
    // A far-future height is not kept, but it tells us we are behind: we ask for our height.
    let out = msg(&mut e, &keys[1], Message::Vote(vote(&keys[1], CHAIN, 1000, 0))).unwrap();
    assert!(out.iter().any(|o| matches!(
        o,
        engine::Output::Send {
            msg: Message::RequestDecided(Height(1)),
            ..
        }
    )));
    assert_eq!(e.catching_up_to(), Some(Height(1000)));
    let r = msg(&mut e, &keys[1], Message::Vote(vote(&keys[1], CHAIN, 1, 1_000_000)));
    assert!(matches!(r, Err(EngineError::RoundTooFar { .. })));
    assert_eq!(e.round(), Round(0));
    // A forged far-future vote is rejected before it can say anything.
    let mut v = vote(&keys[1], CHAIN, 1000, 0);
    v.signature = keys[1].sign(b"x");
    assert!(matches!(
        msg(&mut e, &keys[1], Message::Vote(v)),
        Err(EngineError::BadSignature { .. })
    ));
}

#[test]
fn garbage_and_oversized_bytes_are_decode_errors() {
    assert!(matches!(
        decode_message(&[0xff, 0xff, 0xff]),
        Err(DecodeError::Malformed(_))
    ));
    assert!(matches!(decode_message(&[]), Err(DecodeError::Malformed(_))));
    let big = vec![0u8; MAX_MESSAGE_BYTES + 1];
    assert!(matches!(decode_message(&big), Err(DecodeError::TooLarge { .. })));
    let mut ok = encode_message(&Message::RequestDecided(Height(3)));
    ok.push(0);
    assert!(matches!(decode_message(&ok), Err(DecodeError::Trailing(1))));
}

#[test]
fn equivocating_vote_produces_evidence_once() {
    let (mut e, keys) = engine(0);
    msg(&mut e, &keys[1], Message::Vote(vote(&keys[1], CHAIN, 1, 0))).unwrap();
    let sig = keys[1].sign(&vote_sign_bytes(
        CHAIN,
        VoteType::Prevote,
        Height(1),
        Round(0),
        Some(Hash([9; 32])),
    ));
    let v2 = Vote {
        vote_type: VoteType::Prevote,
        height: Height(1),
        round: Round(0),
        block_id: Some(Hash([9; 32])),
        validator: keys[1].address(),
        signature: sig,
    };
    let out = msg(&mut e, &keys[1], Message::Vote(v2.clone())).unwrap();
    assert_eq!(
        out.iter().filter(|o| matches!(o, engine::Output::Evidence(_))).count(),
        1
    );
    let out = msg(&mut e, &keys[1], Message::Vote(v2)).unwrap();
    assert_eq!(
        out.iter().filter(|o| matches!(o, engine::Output::Evidence(_))).count(),
        0
    );
}

/// A later height's proposal signed by someone other than the validator its block names (a
/// re-proposal of a valid value another validator built, or a forgery: it cannot be told yet)
/// is parked without blame until its height starts; beyond the buffered heights it is refused,
/// still without blame.
#[test]
fn a_later_heights_re_proposal_is_parked_without_blame() {
    let keys = keys(4);
    let g = genesis(&keys, &[1, 1, 1, 1]);
    let (mut e, _) = engine(0);
    let proposal = |h: u64, round: u32| {
        let block: Block = BlockData {
            header: g.new_header(keys[1].address(), TimeMs(5), &[]),
            txs: vec![],
            last_commit: None,
        }
        .into();
        let mut block: Block = block;
        block.make_mut().header.height = Height(h);
        let sig = keys[2].sign(&proposal_sign_bytes(
            CHAIN,
            Height(h),
            Round(round),
            Some(Round(0)),
            block.id(),
        ));
        Proposal {
            height: Height(h),
            round: Round(round),
            pol_round: Some(Round(0)),
            block,
            signature: sig,
        }
    };
    let r = msg(&mut e, &keys[3], Message::Proposal(Box::new(proposal(2, 2))));
    assert_eq!(
        r,
        Err(EngineError::Parked {
            height: Height(2),
            round: Round(2)
        })
    );
    assert!(!r.unwrap_err().blames_sender());
    let r = msg(&mut e, &keys[3], Message::Proposal(Box::new(proposal(9, 2))));
    assert!(matches!(
        r,
        Err(EngineError::NotYetVerifiable { height: Height(9), .. })
    ));
    assert!(!r.unwrap_err().blames_sender());
    // At our own height the same mismatch is a forged proposal, and blamed.
    let mut p = proposal(1, 2);
    p.block.make_mut().header.height = Height(1);
    let not_proposer = keys.iter().find(|k| k.address() != g.proposer(Round(2))).unwrap();
    p.signature = not_proposer.sign(&proposal_sign_bytes(
        CHAIN,
        Height(1),
        Round(2),
        Some(Round(0)),
        p.block.id(),
    ));
    let r = msg(&mut e, &keys[3], Message::Proposal(Box::new(p)));
    assert!(r.as_ref().is_err_and(|e| e.blames_sender()), "{r:?}");
}
