//! Clock trouble, read from the chain: whose clock is off, ours or a proposer's.
//!
//! A block's time is its proposer's clock when it proposed, unless that would not be after
//! the previous block's time, in which case it is the previous time plus one millisecond
//! (`ChainState::new_header`). So each block whose time is not "previous + 1" is a reading of
//! its proposer's clock, taken a moment (one round trip of votes) before we decided it.
//! [`ClockWatch`] keeps the newest reading per proposer while the node follows the chain live
//! (readings from block sync are old blocks, not clocks), and [`ClockWatch::warning`] says
//! which clock is off: most other proposers disagreeing with us the same way means ours is;
//! otherwise it names the proposers whose clocks are off.
//!
//! Consensus does not depend on clocks (timeouts are local durations, block times only have
//! to increase), so this is advice for the operator, not a safety mechanism.

use std::collections::BTreeMap;
use tendr_core::types::Address;

/// A proposer's clock this far from ours (either way) is reported. Readings carry the
/// latency of a round of votes (well under a second on a LAN, about a second across the
/// world), so a few seconds would be noise.
pub const CLOCK_OFF_WARN_MS: i64 = 10_000;
/// Proposers tracked at once (more than any validator set we run).
const MAX_PROPOSERS: usize = 256;

/// The newest reading of each proposer's clock against ours. Drive it with
/// [`ClockWatch::on_decided`] for every block decided, [`ClockWatch::forget`] while the node
/// catches up, and ask [`ClockWatch::warning`].
#[derive(Debug, Default)]
pub struct ClockWatch {
    last_block_time: Option<u64>,
    /// Per proposer: its clock minus ours, in ms.
    offsets: BTreeMap<Address, i64>,
}

impl ClockWatch {
    /// Block `time` by `proposer` decided at our clock's `now`. Our own blocks (`ours`) say
    /// nothing about the others.
    pub fn on_decided(&mut self, proposer: Address, time: u64, now: u64, ours: Option<Address>) {
        let forced = self.last_block_time.is_some_and(|prev| time == prev + 1);
        self.last_block_time = Some(time);
        if forced || Some(proposer) == ours {
            return;
        }
        if self.offsets.len() >= MAX_PROPOSERS && !self.offsets.contains_key(&proposer) {
            self.offsets.pop_first();
        }
        self.offsets.insert(proposer, time as i64 - now as i64);
    }

    /// Drops the readings (the node is catching up: the blocks it decides are old).
    pub fn forget(&mut self) {
        self.offsets.clear();
        self.last_block_time = None;
    }

    /// What to tell the operator, if clocks disagree by more than [`CLOCK_OFF_WARN_MS`].
    pub fn warning(&self) -> Option<String> {
        let n = self.offsets.len();
        let ahead: Vec<(&Address, i64)> = self
            .offsets
            .iter()
            .filter(|(_, o)| **o > CLOCK_OFF_WARN_MS)
            .map(|(a, o)| (a, *o))
            .collect();
        let behind: Vec<(&Address, i64)> = self
            .offsets
            .iter()
            .filter(|(_, o)| **o < -CLOCK_OFF_WARN_MS)
            .map(|(a, o)| (a, *o))
            .collect();
        let secs = |list: &[(&Address, i64)]| {
            let mut v: Vec<i64> = list.iter().map(|(_, o)| o.abs() / 1000).collect();
            v.sort_unstable();
            v[v.len() / 2]
        };
        let fix = "run NTP/chrony (e.g. `timedatectl set-ntp true`)";
        if ahead.len() * 2 > n {
            return Some(format!(
                "this machine's clock is about {} s behind the other validators' (read from the times of the blocks they propose): set it right; {fix}",
                secs(&ahead)
            ));
        }
        if behind.len() * 2 > n {
            return Some(format!(
                "this machine's clock is about {} s ahead of the other validators' (read from the times of the blocks they propose): set it right; {fix}",
                secs(&behind)
            ));
        }
        let name = |list: &[(&Address, i64)]| {
            list.iter()
                .map(|(a, o)| format!("{a} ({} s)", o.abs() / 1000))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !ahead.is_empty() {
            parts.push(format!("ahead of this machine's: {}", name(&ahead)));
        }
        if !behind.is_empty() {
            parts.push(format!("behind this machine's: {}", name(&behind)));
        }
        (!parts.is_empty()).then(|| {
            format!(
                "the clocks of validators proposing blocks are off, {}; block times follow the clock furthest ahead; \
                 ask their operators to {fix}",
                parts.join("; ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tendr_core::PrivateKey;

    fn addr(i: u8) -> Address {
        PrivateKey::from_seed(&[i]).address()
    }

    #[test]
    fn our_clock_or_a_proposers_is_named() {
        let now = 1_000_000_000;
        // Three others 5 minutes ahead of us: ours is behind.
        let mut w = ClockWatch::default();
        for (i, t) in [(1, now + 300_000), (2, now + 300_500), (3, now + 301_000)] {
            w.on_decided(addr(i), t, now, Some(addr(9)));
        }
        let m = w.warning().unwrap();
        assert!(m.contains("this machine's clock is about 300 s behind"), "{m}");
        // One of three ahead: that proposer's clock, named.
        let mut w = ClockWatch::default();
        w.on_decided(addr(1), now - 300, now, None);
        w.on_decided(addr(2), now + 300_000, now, None);
        w.on_decided(addr(3), now + 300_001, now + 100, None); // "previous + 1": not a reading
        w.on_decided(addr(3), now + 200, now + 200, None);
        let m = w.warning().unwrap();
        assert!(
            m.contains(&format!("ahead of this machine's: {} (300 s)", addr(2))),
            "{m}"
        );
        assert!(
            !m.contains(&addr(3).to_string()) && !m.contains("this machine's clock is"),
            "{m}"
        );
        // All of them 5 minutes behind: ours is ahead.
        let mut w = ClockWatch::default();
        w.on_decided(addr(1), now - 300_000, now, None);
        w.on_decided(addr(2), now - 299_000, now + 10, None);
        assert!(w
            .warning()
            .unwrap()
            .contains("about 300 s ahead of the other validators'"));
        // Within the bound, or forgotten: nothing to say; our own blocks say nothing.
        let mut w = ClockWatch::default();
        w.on_decided(addr(1), now - 800, now, None);
        w.on_decided(addr(9), now + 900_000, now, Some(addr(9)));
        assert_eq!(w.warning(), None);
        w.on_decided(addr(2), now + 900_000, now, None);
        w.on_decided(addr(3), now + 900_000, now, None);
        assert!(w.warning().is_some());
        w.forget();
        assert_eq!(w.warning(), None);
    }
}
