use tendr_sim::world::World;

#[test]
#[ignore]
fn debug_stuck() {
    let seed = std::env::var("SEED").unwrap().parse().unwrap();
    let cfg = tendr_sim::SimConfig::from_seed(seed, None);
    println!("{cfg:?}");
    let mut w = World::new(cfg).unwrap();
    w.run_until(std::env::var("UNTIL").unwrap().parse().unwrap());
    for s in w.summaries() {
        println!("{s}");
    }
}
