//! The event queue: events come out in order of (virtual time, order of scheduling), the
//! world's (time, sequence number).
//!
//! One FIFO bucket per millisecond that has events. In a large network most events share a
//! few instants (a broadcast to 99 peers lands within the link latencies), so a push or pop
//! touches a short ordered map and a deque, not a heap of every event in flight.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, VecDeque};

pub struct EventQueue<E> {
    buckets: BTreeMap<u64, VecDeque<E>>,
    /// Emptied buckets, kept for their capacity.
    spare: Vec<VecDeque<E>>,
    len: usize,
}

const MAX_SPARE: usize = 256;

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            buckets: BTreeMap::new(),
            spare: Vec::new(),
            len: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `ev` at `at`, after everything already scheduled at `at`.
    pub fn push(&mut self, at: u64, ev: E) {
        match self.buckets.entry(at) {
            Entry::Occupied(mut o) => o.get_mut().push_back(ev),
            Entry::Vacant(v) => {
                let mut q = self.spare.pop().unwrap_or_default();
                q.push_back(ev);
                v.insert(q);
            }
        }
        self.len += 1;
    }

    /// The earliest event (the first scheduled among equals) and its time.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        let mut first = self.buckets.first_entry()?;
        let at = *first.key();
        let ev = first
            .get_mut()
            .pop_front()
            .expect("a bucket is removed when it empties");
        if first.get().is_empty() {
            let q = first.remove();
            if self.spare.len() < MAX_SPARE {
                self.spare.push(q);
            }
        }
        self.len -= 1;
        Some((at, ev))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Pops come out as a stable sort by time of the pushes: (time, sequence) order,
        /// also when pops and pushes interleave.
        #[test]
        fn pops_in_time_then_push_order(ops in proptest::collection::vec((0u64..20, any::<bool>()), 0..300)) {
            let mut q = EventQueue::default();
            let mut model: Vec<(u64, usize)> = vec![];
            let mut now = 0;
            for (seq, (dt, pop)) in ops.into_iter().enumerate() {
                if pop {
                    model.sort();
                    let want = if model.is_empty() { None } else { Some(model.remove(0)) };
                    let got = q.pop();
                    prop_assert_eq!(got, want);
                    if let Some((t, _)) = got {
                        now = t;
                    }
                } else {
                    // Events are never scheduled in the past.
                    q.push(now + dt, seq);
                    model.push((now + dt, seq));
                }
                prop_assert_eq!(q.len(), model.len());
            }
        }
    }
}
