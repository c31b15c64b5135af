//! Beyond f < n/3: Byzantine power above a third, equivocating (split proposals and split
//! votes), forks the chain; the simulator reports agreement broken, and the accountability
//! check convicts validators holding more than a third of the power, with evidence.

use tendr_sim::config::{Behaviour, Byzantine};
use tendr_sim::{run, Invariant, SimConfig};

#[test]
fn more_than_a_third_equivocating_forks_and_is_convicted() {
    let mut found = None;
    for seed in 0..20 {
        let mut c = SimConfig::new(4);
        c.seed = seed;
        c.byzantine = vec![
            Byzantine {
                node: 2,
                behaviour: Behaviour::Equivocate,
            },
            Byzantine {
                node: 3,
                behaviour: Behaviour::Equivocate,
            },
        ];
        c.heights = 10;
        c.max_time_ms = 60_000;
        assert!(!c.within_assumption());
        let r = run(c).unwrap();
        if !r.fork_heights.is_empty() {
            found = Some(r);
            break;
        }
    }
    let r = found.expect("2 of 4 equivocating validators fork the chain within 20 seeds");
    let broken = r.broken();
    assert!(broken.contains(&Invariant::Agreement));
    assert!(
        !broken.contains(&Invariant::Accountability),
        "culprits must be convicted: {:?}",
        r.violations
    );
    let convicted: u64 = r.convicted.iter().map(|(_, p)| p).sum();
    assert!(3 * convicted > 4, "convicted power {convicted} of 4");
    let culprits: Vec<&str> = r.convicted.iter().map(|(a, _)| a.as_str()).collect();
    for i in [2usize, 3] {
        let addr = tendr_sim::world::validator_key(i).address().to_string();
        assert!(culprits.contains(&addr.as_str()), "validator {i} ({addr}) convicted");
    }
}

#[test]
fn within_the_assumption_the_same_attack_does_not_fork() {
    for seed in 0..5 {
        let mut c = SimConfig::new(4);
        c.seed = seed;
        c.byzantine = vec![Byzantine {
            node: 3,
            behaviour: Behaviour::Equivocate,
        }];
        c.heights = 10;
        let r = run(c).unwrap();
        assert!(r.ok(), "seed {seed}: {:?}", r.violations);
        assert!(!r.convicted.is_empty(), "the equivocator is convicted");
    }
}
