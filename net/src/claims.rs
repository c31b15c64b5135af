//! Far-future claims: a peer that sends messages for heights far beyond ours must back them.
//!
//! A validly signed vote for height 1,000,000 costs its signer nothing, and the engine reads
//! every message more than `MAX_FUTURE_HEIGHTS` ahead as a sign that we are behind (it asks
//! the sender for the decided block of our height). An honest peer that is really ahead holds
//! that block and serves it; one that keeps sending such messages without serving it is
//! lying, or useless for catch-up, and is cut off.
//!
//! How to drive it: call [`Claims::far_message`] for each accepted message whose height is
//! beyond `our height + MAX_FUTURE_HEIGHTS`; it answers whether to challenge the peer (send it
//! `RequestDecided(our height)`) or to penalize it. Call [`Claims::decided`] when the peer
//! sends a decided block that matches our chain (the challenge is answered).
//!
//! Honest catch-up is not harmed: a peer that is ahead answers each challenge (once per
//! `answer_within`), and only `strikes` unanswered challenges in a row, each for a whole
//! `answer_within`, earn a penalty. A lagging node never challenges the nodes ahead of it for
//! anything they cannot serve: it asks for its own height, which they have decided.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use tendr_core::{Height, PeerId};

/// Peers tracked at once (the oldest challenges are forgotten beyond this).
const MAX_TRACKED: usize = 4096;

#[derive(Debug, Clone)]
struct Claim {
    /// Our height when we last challenged the peer, and when.
    asked: Option<(Height, Instant)>,
    /// Challenges in a row that the peer left unanswered.
    failures: u32,
    /// Far-future messages since the last answered challenge, and the highest height claimed.
    messages: u64,
    top: Height,
}

/// What to do about a far-future message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing: a challenge is pending.
    Wait,
    /// Ask the peer for the decided block of this height (ours).
    Challenge(Height),
    /// Cut the peer off, for this reason.
    Penalize(String),
}

#[derive(Debug)]
pub struct Claims {
    answer_within: Duration,
    strikes: u32,
    peers: HashMap<PeerId, Claim>,
}

impl Claims {
    pub fn new(answer_within: Duration, strikes: u32) -> Self {
        Claims {
            answer_within,
            strikes: strikes.max(1),
            peers: HashMap::new(),
        }
    }

    /// A message from `from` for height `claimed`, far beyond `ours`, arrived at `now`.
    pub fn far_message(&mut self, from: PeerId, claimed: Height, ours: Height, now: Instant) -> Verdict {
        if self.peers.len() >= MAX_TRACKED && !self.peers.contains_key(&from) {
            let stale = 2 * self.answer_within;
            self.peers
                .retain(|_, c| c.asked.is_some_and(|(_, t)| now.saturating_duration_since(t) < stale));
            if self.peers.len() >= MAX_TRACKED {
                return Verdict::Wait;
            }
        }
        let c = self.peers.entry(from).or_insert(Claim {
            asked: None,
            failures: 0,
            messages: 0,
            top: claimed,
        });
        c.messages += 1;
        c.top = c.top.max(claimed);
        let Some((h, at)) = c.asked else {
            c.asked = Some((ours, now));
            return Verdict::Challenge(ours);
        };
        let waited = now.saturating_duration_since(at);
        if waited < self.answer_within {
            return Verdict::Wait;
        }
        // A challenge long past its deadline belongs to an earlier episode (the peer went
        // quiet in between): start afresh rather than count it.
        if waited < 2 * self.answer_within {
            c.failures += 1;
        } else {
            c.failures = 0;
            c.messages = 1;
            c.top = claimed;
        }
        if c.failures >= self.strikes {
            let reason = format!(
                "{} messages for heights up to {} while we are at {} (more than {} ahead), and it did not \
                 serve the decided block of our height when asked, {} times {}s apart (last asked: height {h})",
                c.messages,
                c.top,
                ours,
                tendr_core::limits::MAX_FUTURE_HEIGHTS,
                c.failures,
                self.answer_within.as_secs_f64(),
            );
            self.peers.remove(&from);
            return Verdict::Penalize(reason);
        }
        c.asked = Some((ours, now));
        Verdict::Challenge(ours)
    }

    /// Whether a far-future message from `from` can be dropped unread: its challenge is
    /// pending and not yet due, so the engine has nothing to learn from it (it already asked
    /// for our height). Counts the message. This keeps a flood of validly signed far-future
    /// messages from costing a signature check each.
    pub fn holds(&mut self, from: PeerId, claimed: Height, now: Instant) -> bool {
        match self.peers.get_mut(&from) {
            Some(c)
                if c.asked
                    .is_some_and(|(_, t)| now.saturating_duration_since(t) < self.answer_within) =>
            {
                c.messages += 1;
                c.top = c.top.max(claimed);
                true
            }
            _ => false,
        }
    }

    /// The peer sent the decided block of `height`, and it is on our chain: a pending
    /// challenge for that height is answered. True when it answered one.
    pub fn decided(&mut self, from: PeerId, height: Height) -> bool {
        match self.peers.get(&from) {
            Some(c) if c.asked.is_some_and(|(h, _)| h == height) => {
                self.peers.remove(&from);
                true
            }
            _ => false,
        }
    }

    /// The height we asked `from` for, if a challenge is pending.
    pub fn pending(&self, from: &PeerId) -> Option<Height> {
        self.peers.get(from).and_then(|c| c.asked.map(|(h, _)| h))
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_peer_that_never_answers_is_penalized_after_its_strikes() {
        let (p, t0) = (PeerId::default(), Instant::now());
        let mut c = Claims::new(S, 3);
        assert_eq!(
            c.far_message(p, Height(1000), Height(5), t0),
            Verdict::Challenge(Height(5))
        );
        assert_eq!(c.far_message(p, Height(1001), Height(5), t0 + S / 2), Verdict::Wait);
        assert_eq!(
            c.far_message(p, Height(1002), Height(6), t0 + S),
            Verdict::Challenge(Height(6))
        );
        assert_eq!(
            c.far_message(p, Height(1003), Height(7), t0 + 2 * S),
            Verdict::Challenge(Height(7))
        );
        match c.far_message(p, Height(1004), Height(8), t0 + 3 * S) {
            Verdict::Penalize(why) => assert!(why.contains("up to 1004") && why.contains("3 times"), "{why}"),
            v => panic!("{v:?}"),
        }
        assert!(c.is_empty());
        // While a challenge is pending, further far-future messages are held back unread.
        assert!(!c.holds(p, Height(9), t0));
        assert_eq!(
            c.far_message(p, Height(1000), Height(5), t0),
            Verdict::Challenge(Height(5))
        );
        assert!(c.holds(p, Height(2000), t0 + S / 2));
        assert!(!c.holds(p, Height(2000), t0 + S));
    }

    #[test]
    fn a_peer_that_answers_is_never_penalized() {
        let (p, t0) = (PeerId::default(), Instant::now());
        let mut c = Claims::new(S, 2);
        for i in 0..100u32 {
            let now = t0 + S * i;
            let ours = Height(10 + i as u64);
            if let Verdict::Challenge(h) = c.far_message(p, Height(500), ours, now) {
                assert!(!c.decided(p, Height(h.0 + 1)), "only the height asked for answers");
                assert!(c.decided(p, h));
            }
        }
        // A peer that goes quiet between episodes starts afresh.
        assert!(matches!(
            c.far_message(p, Height(500), Height(1), t0),
            Verdict::Challenge(_)
        ));
        assert!(matches!(
            c.far_message(p, Height(500), Height(1), t0 + S * 5),
            Verdict::Challenge(_)
        ));
        assert!(matches!(
            c.far_message(p, Height(500), Height(1), t0 + S * 10),
            Verdict::Challenge(_)
        ));
        assert_eq!(c.pending(&p), Some(Height(1)));
    }
}
