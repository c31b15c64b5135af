//! Simulator benchmarks (criterion): decided heights per wall-clock second for 4 validators
//! (cached and full verification over 50 heights, trusted over 1,000), and a workload through
//! a partition that heals.
//! `tendr sim bench` prints the fuller tables (16 and 100 validators, per-phase latencies).
//! Run: `cargo bench --bench sim`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tendr::sim::config::VerifyMode;
use tendr::sim::{run, SimConfig};

fn heights(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim_4_validators_50_heights");
    g.sample_size(10);
    g.throughput(Throughput::Elements(50));
    for verify in [VerifyMode::Cached, VerifyMode::Full] {
        g.bench_function(format!("{verify:?}").to_lowercase(), |b| {
            b.iter(|| {
                let mut cfg = SimConfig::new(4);
                cfg.heights = 50;
                cfg.verify = verify;
                let r = run(cfg).unwrap();
                assert!(r.ok() && r.heights >= 50);
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("sim_4_validators_1000_heights");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1000));
    g.bench_function("trusted", |b| {
        b.iter(|| {
            let mut cfg = SimConfig::new(4);
            cfg.heights = 1000;
            cfg.verify = VerifyMode::Trusted;
            cfg.max_time_ms = cfg.max_time_ms.max(1000 * 3 * cfg.timeouts.commit_ms);
            let r = run(cfg).unwrap();
            assert!(r.ok() && r.heights >= 1000);
        })
    });
    g.finish();
}

fn partition_workload(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim_partition_workload");
    g.sample_size(10);
    g.bench_function("7_validators_200tps_split_2_5_for_5s", |b| {
        b.iter(|| {
            let cfg = SimConfig::partition_workload(200, 5_000, 10_000, 15_000);
            let r = run(cfg).unwrap();
            assert!(r.ok() && !r.tx_latencies.is_empty());
        })
    });
    g.finish();
}

criterion_group!(benches, heights, partition_workload);
criterion_main!(benches);
