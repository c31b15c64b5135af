//! The scenario library: every scenario meets its expectation; a wrong expectation fails the
//! check; malformed files are named precisely.

use std::path::Path;
use tendr_sim::scenario::{check, list, load, parse};
use tendr_sim::world::validator_key;

fn dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios"))
}

#[test]
fn every_scenario_meets_its_expectation() {
    let files = list(dir()).unwrap();
    assert!(files.len() >= 15, "at least 15 scenarios, found {}", files.len());
    let scenarios: Vec<_> = files.iter().map(|p| load(p).unwrap()).collect();
    for s in &scenarios {
        assert!(!s.config.description.is_empty(), "{} has a description", s.name);
    }
    let rows = check(&scenarios, 2, &|| {});
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.ok())
        .map(|r| format!("{}: {:?}", r.scenario, r.failures))
        .collect();
    assert!(bad.is_empty(), "scenarios not as expected:\n{}", bad.join("\n"));
}

#[test]
fn a_wrong_expectation_fails_the_check() {
    let text = std::fs::read_to_string(dir().join("fork-beyond-third.toml")).unwrap();
    let wrong = text.replace("safety = \"breaks\"", "safety = \"holds\"");
    let mut s = parse(&wrong).unwrap();
    s.name = "wrong".into();
    let rows = check(&[s], 2, &|| {});
    assert!(!rows[0].ok(), "expecting safety from a forking scenario must fail");
    let text = std::fs::read_to_string(dir().join("happy-path.toml")).unwrap();
    let wrong = text.replace("safety = \"holds\"", "safety = \"breaks\"");
    let mut s = parse(&wrong).unwrap();
    s.name = "wrong2".into();
    assert!(!check(&[s], 2, &|| {})[0].ok());
}

#[test]
fn malformed_scenarios_name_line_and_field() {
    let e = parse("validators = 4\nheights = \"ten\"\n").unwrap_err();
    assert!(e.contains("line 2") && e.contains("heights"), "{e}");
    let e = parse("validators = 4\nvalidatorz = 3\n").unwrap_err();
    assert!(e.contains("validatorz"), "{e}");
    let e = parse("validators = 4\n[[faults]]\nat_ms = 1\nkind = \"crash\"\nnode = 9\n").unwrap_err();
    assert!(e.contains("node"), "{e}");
    let e = parse("validators = 4\n[[byzantine]]\nnode = 1\nbehaviour = \"sneaky\"\n").unwrap_err();
    assert!(e.contains("line 4") && e.contains("sneaky"), "{e}");
}

#[test]
fn validator_changes_take_effect_under_partition() {
    let s = load(&dir().join("validator-change-under-partition.toml")).unwrap();
    let mut cfg = s.config.clone();
    cfg.seed = 1;
    let r = tendr_sim::run(cfg).unwrap();
    assert!(r.ok(), "{:?}", r.violations);
    let added = validator_key(4).address().to_string();
    let removed = validator_key(0).address().to_string();
    assert!(
        r.final_validators.contains(&added),
        "node 4 was added: {:?}",
        r.final_validators
    );
    assert!(
        !r.final_validators.contains(&removed),
        "node 0 was removed: {:?}",
        r.final_validators
    );
}

#[test]
fn majority_partition_stops_progress_until_healed() {
    let s = load(&dir().join("majority-partition.toml")).unwrap();
    let mut cfg = s.config.clone();
    cfg.seed = 2;
    cfg.timeline = true;
    let r = tendr_sim::run(cfg).unwrap();
    assert!(r.ok(), "{:?}", r.violations);
    // In-flight heights may finish just after the split; then nothing until the heal.
    let during = r.decisions.iter().filter(|(t, _)| (2_000..8_000).contains(t)).count();
    assert_eq!(during, 0, "decisions during a 2/2 split: {:?}", r.decisions);
    assert!(r.decisions.iter().any(|(t, _)| *t > 8_000), "progress after the heal");
}

/// A short Byzantine run with a partition, traced and drawn: the pictures parse back and carry
/// the lanes, arrows, markers and bands they should.
#[test]
fn pictures_of_a_short_run_are_well_formed() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Buf(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.borrow_mut().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut cfg = load(&dir().join("majority-partition.toml")).unwrap().config;
    cfg.byzantine = vec![tendr_sim::config::Byzantine {
        node: 3,
        behaviour: tendr_sim::Behaviour::Replay,
    }];
    cfg.expect = None;
    let buf = Buf::default();
    let r = tendr_sim::world::run_traced(cfg, Box::new(buf.clone())).unwrap();
    assert!(r.ok(), "{:?}", r.violations);
    let text = String::from_utf8(buf.0.borrow().clone()).unwrap();
    let events = tendr_sim::picture::parse_trace(&text).unwrap();
    let svg = tendr_sim::picture::space_time_svg(
        &events,
        &tendr_sim::picture::Window {
            from_ms: 0,
            to_ms: 1500,
        },
    );
    let doc = roxmltree::Document::parse(&svg).expect("space-time SVG is well-formed");
    let class_count = |d: &roxmltree::Document, c: &str| {
        d.descendants()
            .filter(|n| n.attribute("class").is_some_and(|a| a.split(' ').any(|x| x == c)))
            .count()
    };
    assert_eq!(class_count(&doc, "lane"), 4);
    assert_eq!(class_count(&doc, "byzantine"), 1, "node 3's lane is marked Byzantine");
    assert!(class_count(&doc, "prevote") > 10 && class_count(&doc, "proposal") > 0);
    assert!(class_count(&doc, "decided") >= 4);
    assert_eq!(class_count(&doc, "partition"), 1);
    let plot = tendr_sim::picture::height_plot_svg(&events);
    let doc = roxmltree::Document::parse(&plot).expect("plot SVG is well-formed");
    assert_eq!(class_count(&doc, "height-line"), 4);
}
