//! Byzantine behaviours as small wrappers around an honest node: they rewrite, multiply or
//! drop what the honest engine sends.
//!
//! [`Adversary`] is the door: the twelve built-in behaviours ([`Builtin`]) are implementations of
//! it, and a user adds one of their own without touching tendr
//! (`Simulation::adversary(node, my_adversary)`). The built-ins of a run share one state
//! ([`SharedAdversary`]), so they can coordinate (for example, split votes between the same
//! two blocks).

use crate::config::Behaviour;
use crate::rng::Rng;
use crate::world::Payload;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use tendr_core::codec::encode_message;
use tendr_core::crypto::{proposal_sign_bytes, vote_sign_bytes};
use tendr_core::limits::MAX_MESSAGE_BYTES;
use tendr_core::*;

const HISTORY: usize = 256;

/// What an adversary may use when it rewrites a message.
pub struct AdversaryCtx<'a> {
    /// The Byzantine validator's number.
    pub node: u32,
    /// Its signing key: it can sign whatever it likes.
    pub key: &'a PrivateKey,
    pub chain_id: &'a str,
    /// Which half of the network each destination is in (0 or 1), for split attacks.
    pub halves: &'a [u8],
    /// This adversary's own seeded stream (deterministic per run and node).
    pub rng: &'a mut Rng,
}

/// What goes out instead of one message: each payload with its destinations.
pub type Sends = Vec<(Payload, Vec<usize>)>;

/// A Byzantine behaviour: sees every message its node's honest engine sends (with the
/// destinations it was meant for) and decides what actually goes out, signing with the node's
/// key as it likes. The node's engine stays honest underneath (it persists, counts votes and
/// follows the chain), so an adversary is a small wrapper, not a second implementation.
pub trait Adversary {
    /// Its name, shown in reports.
    fn name(&self) -> String;
    /// A proposal its node received (to coordinate attacks on real blocks).
    fn saw_proposal(&mut self, _proposal: &Proposal) {}
    /// Rewrites `msg`, which the honest engine sends to `dests`.
    fn transform(&mut self, ctx: &mut AdversaryCtx<'_>, msg: Message, dests: Vec<usize>) -> Sends;
}

/// One of the built-in behaviours, sharing the run's [`SharedAdversary`].
pub struct Builtin {
    pub behaviour: Behaviour,
    pub shared: Rc<RefCell<SharedAdversary>>,
}

impl Adversary for Builtin {
    fn name(&self) -> String {
        self.behaviour.name()
    }
    fn saw_proposal(&mut self, p: &Proposal) {
        self.shared.borrow_mut().saw_proposal(p);
    }
    fn transform(&mut self, ctx: &mut AdversaryCtx<'_>, msg: Message, dests: Vec<usize>) -> Sends {
        self.shared
            .borrow_mut()
            .transform(self.behaviour, ctx.key, msg, dests, ctx.halves, ctx.chain_id)
    }
}

/// The state the built-in behaviours of a run share: one seeded stream, the proposals seen,
/// the messages to replay.
pub struct SharedAdversary {
    rng: Rng,
    /// Proposal ids seen per (height, round), to split votes between real blocks.
    proposals: BTreeMap<(u64, u32), Vec<BlockId>>,
    history: VecDeque<Message>,
    oversized: Option<Rc<Vec<u8>>>,
    /// The newest block proposed to it (for out-of-turn proposals).
    latest_block: Option<Block>,
}

impl SharedAdversary {
    pub fn new(rng: Rng) -> Self {
        SharedAdversary {
            rng,
            proposals: BTreeMap::new(),
            history: VecDeque::new(),
            oversized: None,
            latest_block: None,
        }
    }

    pub fn saw_proposal(&mut self, p: &Proposal) {
        let ids = self.proposals.entry((p.height.0, p.round.0)).or_default();
        let id = p.block.id();
        if !ids.contains(&id) && ids.len() < 4 {
            ids.push(id);
        }
        if self.proposals.len() > 64 {
            self.proposals.pop_first();
        }
        if self.latest_block.as_ref().is_none_or(|b| b.height() <= p.height) {
            self.latest_block = Some(p.block.clone());
        }
    }

    pub fn transform(
        &mut self,
        b: Behaviour,
        key: &PrivateKey,
        msg: Message,
        dests: Vec<usize>,
        halves: &[u8],
        chain: &str,
    ) -> Sends {
        if let Message::Proposal(p) = &msg {
            self.saw_proposal(p);
        }
        // Only what it signed itself is rewritten; votes it relays pass unchanged.
        if matches!(&msg, Message::Vote(v) if v.validator != key.address()) && b != Behaviour::Silent {
            return vec![(Payload::msg(msg), dests)];
        }
        match b {
            Behaviour::Silent => vec![],
            Behaviour::Twin | Behaviour::Amnesia | Behaviour::Custom => vec![(Payload::msg(msg), dests)],
            Behaviour::AlwaysNil => match msg {
                Message::Vote(v) => vec![(Payload::msg(Message::Vote(resign(key, chain, &v, None))), dests)],
                m => vec![(Payload::msg(m), dests)],
            },
            Behaviour::BadSignatures => vec![(Payload::msg(corrupt(msg)), dests)],
            Behaviour::SplitVote | Behaviour::Equivocate => self.split(b, key, msg, dests, halves, chain),
            Behaviour::Garbage => {
                let mut out = vec![(Payload::msg(msg.clone()), dests.clone())];
                if !dests.is_empty() && self.rng.chance(1, 3) {
                    out.push((self.garbage(&msg), dests));
                }
                out
            }
            Behaviour::FutureSpam => {
                let mut out = vec![(Payload::msg(msg.clone()), dests.clone())];
                if let Message::Vote(v) = &msg {
                    for (dh, dr) in [(2u64, 0u32), (1000, 0), (0, 100_000), (1, 3)] {
                        let mut f = v.clone();
                        f.height = Height(v.height.0 + dh);
                        f.round = Round(v.round.0.saturating_add(dr));
                        out.push((
                            Payload::msg(Message::Vote(resign(key, chain, &f, f.block_id))),
                            dests.clone(),
                        ));
                    }
                }
                out
            }
            Behaviour::RoundJump => {
                let mut out = vec![(Payload::msg(msg.clone()), dests.clone())];
                if let Message::Vote(v) = &msg {
                    let ahead = Round(v.round.0 + 1 + self.rng.below(3) as u32);
                    for vote_type in [VoteType::Prevote, VoteType::Precommit] {
                        let lone = Vote {
                            vote_type,
                            round: ahead,
                            ..v.clone()
                        };
                        out.push((
                            Payload::msg(Message::Vote(resign(key, chain, &lone, None))),
                            dests.clone(),
                        ));
                    }
                }
                out
            }
            Behaviour::OutOfTurn => {
                let mut out = vec![(Payload::msg(msg.clone()), dests.clone())];
                if let Message::Vote(v) = &msg {
                    if let Some(p) = self.out_of_turn(key, chain, v.height, v.round.next()) {
                        out.push((Payload::msg(Message::Proposal(Box::new(p))), dests));
                    }
                }
                out
            }
            Behaviour::Replay => {
                let mut out = vec![(Payload::msg(msg.clone()), dests.clone())];
                if !self.history.is_empty() && self.rng.chance(1, 2) {
                    let i = self.rng.below(self.history.len() as u64) as usize;
                    out.push((Payload::msg(self.history[i].clone()), dests));
                }
                if self.history.len() >= HISTORY {
                    self.history.pop_front();
                }
                self.history.push_back(msg);
                out
            }
        }
    }

    /// Half 0 gets what the honest engine sent; half 1 gets a conflicting version. Once two
    /// proposals of the round are known (an equivocating proposer), the Byzantine nodes vote
    /// for the first to half 0 and the second to half 1 — prevotes and, at once, precommits —
    /// which is the attack that forks the chain when they hold more than a third of the power.
    fn split(
        &mut self,
        b: Behaviour,
        key: &PrivateKey,
        msg: Message,
        dests: Vec<usize>,
        halves: &[u8],
        chain: &str,
    ) -> Sends {
        let (a, z): (Vec<usize>, Vec<usize>) = dests.into_iter().partition(|&j| halves[j] == 0);
        match &msg {
            Message::Vote(v) => {
                let known = self
                    .proposals
                    .get(&(v.height.0, v.round.0))
                    .cloned()
                    .unwrap_or_default();
                if known.len() >= 2 {
                    let mut out = vec![];
                    let types: &[VoteType] = match v.vote_type {
                        VoteType::Prevote => &[VoteType::Prevote, VoteType::Precommit],
                        VoteType::Precommit => &[VoteType::Precommit],
                    };
                    for &t in types {
                        let base = Vote {
                            vote_type: t,
                            ..v.clone()
                        };
                        out.push((
                            Payload::msg(Message::Vote(resign(key, chain, &base, Some(known[0])))),
                            a.clone(),
                        ));
                        out.push((
                            Payload::msg(Message::Vote(resign(key, chain, &base, Some(known[1])))),
                            z.clone(),
                        ));
                    }
                    return out;
                }
                let alt = known.iter().copied().find(|id| Some(*id) != v.block_id);
                let value = match (alt, v.block_id) {
                    (Some(id), _) => Some(id),
                    (None, Some(_)) => None,
                    (None, None) => Some(Hash(self.rng.bytes(32).try_into().expect("32 bytes"))),
                };
                let other = Message::Vote(resign(key, chain, v, value));
                vec![(Payload::msg(msg), a), (Payload::msg(other), z)]
            }
            Message::Proposal(p) if b == Behaviour::Equivocate => {
                let mut block = p.block.clone();
                block.make_mut().header.time = TimeMs(block.header.time.0 + 1);
                let id = block.id();
                let sig = key.sign(&proposal_sign_bytes(chain, p.height, p.round, p.pol_round, id));
                let alt = Proposal {
                    block,
                    signature: sig,
                    ..Proposal::clone(p)
                };
                self.saw_proposal(&alt);
                vec![
                    (Payload::msg(msg), a),
                    (Payload::msg(Message::Proposal(Box::new(alt))), z),
                ]
            }
            _ => vec![(Payload::msg(msg), [a, z].concat())],
        }
    }

    /// A proposal for `(height, round)` signed by `key` as if it were that round's proposer:
    /// the newest block seen at `height`, rebuilt as its own (it names itself the proposer).
    fn out_of_turn(&mut self, key: &PrivateKey, chain: &str, height: Height, round: Round) -> Option<Proposal> {
        let seen = self.latest_block.as_ref().filter(|b| b.height() == height)?;
        let mut block = seen.clone();
        let header = &mut block.make_mut().header;
        header.proposer = key.address();
        header.time = TimeMs(header.time.0 + 1);
        let id = block.id();
        let signature = key.sign(&proposal_sign_bytes(chain, height, round, None, id));
        Some(Proposal {
            height,
            round,
            pol_round: None,
            block,
            signature,
        })
    }

    fn garbage(&mut self, msg: &Message) -> Payload {
        match self.rng.below(3) {
            0 => {
                let n = self.rng.range(1, 200) as usize;
                Payload::Bytes(Rc::new(self.rng.bytes(n)))
            }
            1 => {
                let mut b = encode_message(msg);
                let keep = self.rng.below(b.len() as u64) as usize;
                b.truncate(keep);
                Payload::Bytes(Rc::new(b))
            }
            _ => Payload::Bytes(
                self.oversized
                    .get_or_insert_with(|| Rc::new(vec![7u8; MAX_MESSAGE_BYTES + 1]))
                    .clone(),
            ),
        }
    }
}

/// `v` signed again by `key` for `value` (a conflicting vote when `value` differs). Also used
/// by the real node's test-only Byzantine wrapper (`tendr_node::byzantine`).
pub fn resign(key: &PrivateKey, chain: &str, v: &Vote, value: Option<BlockId>) -> Vote {
    let sig = key.sign(&vote_sign_bytes(chain, v.vote_type, v.height, v.round, value));
    Vote {
        block_id: value,
        signature: sig,
        ..v.clone()
    }
}

/// `msg` with a broken signature (votes and proposals; other messages unchanged).
pub fn corrupt(msg: Message) -> Message {
    match msg {
        Message::Vote(mut v) => {
            v.signature.0[10] ^= 0x55;
            Message::Vote(v)
        }
        Message::Proposal(mut p) => {
            p.signature.0[10] ^= 0x55;
            Message::Proposal(p)
        }
        m => m,
    }
}
