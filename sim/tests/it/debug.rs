use tendr_sim::world::World;

#[test]
#[ignore]
fn debug_stuck() {
    let mut cfg = tendr_sim::cli::load_config(std::path::Path::new("../tendr-sim-shrunk-5.toml")).unwrap();
    cfg.seed = std::env::var("SEED").unwrap().parse().unwrap();
    let mut w = World::new(cfg).unwrap();
    w.run_until(std::env::var("UNTIL").unwrap().parse().unwrap());
    for s in w.summaries() {
        println!("{s}");
    }
}
