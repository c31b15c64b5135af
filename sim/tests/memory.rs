//! Memory stays flat as heights grow: decided heights are pruned (snapshots in the nodes'
//! stores, low-water marks in the checker) and the trace is streamed, never held.
//!
//! Its own test binary, because it counts every allocation of the process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tendr_sim::config::VerifyMode;
use tendr_sim::{run, SimConfig};

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak heap bytes above what was live before the run.
fn peak_during(heights: u64) -> usize {
    let mut cfg = SimConfig::new(4);
    cfg.verify = VerifyMode::Trusted;
    cfg.heights = heights;
    cfg.max_time_ms = u64::MAX / 4;
    // No transactions: the application's state and the bounded caches of transactions
    // (each mempool remembers 200,000 committed hashes) would grow until full and hide
    // whether consensus itself keeps anything per height.
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let r = run(cfg).unwrap();
    assert!(r.ok() && r.heights >= heights, "{:?}", r.violations);
    PEAK.load(Ordering::Relaxed) - base
}

#[test]
fn peak_memory_does_not_grow_with_heights() {
    // Past the first ~1,100 heights every store holds its 1,000 kept blocks; from then on
    // nothing may grow (the report keeps no per-height timeline unless asked).
    let short = peak_during(3_000);
    let long = peak_during(12_000);
    eprintln!("peak heap: {short} bytes for 3000 heights, {long} for 12000");
    assert!(
        long <= short + short / 50,
        "peak heap grew from {short} bytes (3000 heights) to {long} (12000 heights)"
    );
}
