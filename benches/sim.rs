//! Simulator benchmarks (criterion): decided heights per wall-clock second for 4 validators
//! (cached and full verification), and a workload through a partition that heals.
//! `tendr sim bench` prints the fuller tables (16 and 100 validators, per-phase latencies).
//! Run: `cargo bench --bench sim`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tendr::sim::config::{Fault, FaultKind, VerifyMode};
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
}

fn partition_workload(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim_partition_workload");
    g.sample_size(10);
    g.bench_function("7_validators_200tps_split_2_5_for_5s", |b| {
        b.iter(|| {
            let mut cfg = SimConfig::new(7);
            cfg.heights = 1_000_000;
            cfg.max_time_ms = 15_000;
            cfg.workload.txs_per_sec = 200;
            cfg.faults = vec![
                Fault {
                    at_ms: 5_000,
                    kind: FaultKind::Partition {
                        groups: vec![vec![0, 1], vec![2, 3, 4, 5, 6]],
                    },
                },
                Fault {
                    at_ms: 10_000,
                    kind: FaultKind::Heal,
                },
            ];
            let r = run(cfg).unwrap();
            assert!(r.ok() && !r.tx_latencies.is_empty());
        })
    });
    g.finish();
}

criterion_group!(benches, heights, partition_workload);
criterion_main!(benches);
