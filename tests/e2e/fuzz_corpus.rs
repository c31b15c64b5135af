//! Issue 16: every fuzz target (`fuzz/targets.rs`) on its corpus (`fuzz/corpus/<target>/`,
//! seeded from real traffic by `fuzz/run seed`) and on every input that once made it fail
//! (`fuzz/regressions/<target>/`), so CI checks them without a fuzzer.

#[path = "../../fuzz/targets.rs"]
mod targets;

use std::path::PathBuf;

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn fuzz_corpora_and_regressions_replay_without_a_failure() {
    for (name, target) in targets::TARGETS {
        let corpus = inputs("corpus", name);
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} is empty: run `fuzz/run seed`");
        let regressions = inputs("regressions", name);
        for f in corpus.iter().chain(&regressions) {
            let data = std::fs::read(f).unwrap();
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                panic!("fuzz target {name} fails on {}", f.display());
            }
        }
        eprintln!(
            "fuzz target {name}: {} corpus inputs, {} regressions",
            corpus.len(),
            regressions.len()
        );
    }
}

/// The engine target's seed session gets through heights, so the fuzzer mutates a session
/// that decides blocks, not only the first height.
#[test]
fn the_engine_seed_session_decides_blocks() {
    let h = targets::engine_height(&targets::seed_script());
    assert!(h >= 3, "the seed session stops at height {h}");
}

/// Writes the corpus seeds (`fuzz/run seed` runs this): real traffic of an engine session,
/// files as `tendr testnet` writes them, RPC requests; each file named by its hash.
#[test]
#[ignore = "writes fuzz/corpus; run by `fuzz/run seed`"]
fn write_fuzz_seeds() {
    let s = super::Scratch::new("fuzz-seeds");
    let out = s.path("net");
    super::testnet(&out, 2, 26_100, "1");
    let mut files = Vec::new();
    for f in [
        "node1/tendermint_config.json",
        "node2/tendermint_config.json",
        "node1/genesis.json",
    ] {
        files.push((f, std::fs::read(out.join(f)).unwrap()));
    }
    files.push(("guide_config", super::guide_config(2, 26_101, 26_100).into_bytes()));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let seeds = targets::seeds(&files);
    for (target, bytes) in &seeds {
        let name = tendr_core::crypto::sha256(bytes).to_hex();
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{}", &name[..16])), bytes).unwrap();
    }
    eprintln!("{} seeds written under {}", seeds.len(), root.display());
}
