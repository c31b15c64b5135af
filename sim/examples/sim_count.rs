//! One simulated run, for counting instructions rather than timing them (this VM's speed
//! drifts by about ±30%; callgrind's counts are exact):
//!
//! ```text
//! cargo build --release -p tendr-sim --example sim_count
//! valgrind --tool=callgrind target/release/examples/sim_count 2000          # trusted, 4 validators
//! VALS=100 valgrind --tool=callgrind target/release/examples/sim_count 6    # 100 validators
//! CACHED=1 valgrind --tool=callgrind target/release/examples/sim_count 20   # cached verification
//! WIRE=1 valgrind --tool=callgrind target/release/examples/sim_count 2000   # through the wire codec
//! ```
//!
//! Prints the heights decided and the trace hash. Valgrind runs SHA-256 without the CPU's SHA
//! instructions, so report its share apart (`callgrind_annotate --auto=no`, `sha2::` lines).
use tendr_sim::config::VerifyMode;

fn main() {
    let heights: u64 = std::env::args().nth(1).map_or(1000, |s| s.parse().expect("heights"));
    let validators: u32 = std::env::var("VALS").map_or(4, |s| s.parse().expect("VALS"));
    let mut cfg = tendr_sim::SimConfig::new(validators);
    cfg.heights = heights;
    cfg.verify = if std::env::var("CACHED").is_ok() {
        VerifyMode::Cached
    } else {
        VerifyMode::Trusted
    };
    cfg.wire_codec = std::env::var("WIRE").is_ok();
    cfg.max_time_ms = u64::MAX / 4;
    let r = tendr_sim::run(cfg).expect("valid config");
    println!("{} heights, trace hash {}", r.heights, r.trace_hash);
}
