//! Scenario files: a run configuration (TOML) plus the outcome it is expected to have, and
//! `check`, which runs every scenario over its seeds and compares.
//!
//! The format is documented in `scenarios/README.md`.

use crate::checker::Invariant;
use crate::config::{SafetyExpect, SimConfig};
use crate::world::{run, validator_key, Report};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub config: SimConfig,
}

/// Parses a scenario; errors carry the line, column and field that are wrong.
pub fn parse(text: &str) -> Result<Scenario, String> {
    let mut config: SimConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    if let Some(ms) = config.expect.as_ref().and_then(|e| e.recover_within_ms) {
        config.liveness_bound_ms = ms;
    }
    config.validate()?;
    Ok(Scenario {
        name: String::new(),
        config,
    })
}

pub fn load(path: &Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let mut s = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    s.name = path
        .file_stem()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok(s)
}

/// Scenario files (`*.toml`) of a directory, sorted by name.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: cannot read directory: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

/// The verdict of one run against its scenario's expectation.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub ok: bool,
    pub expected: String,
    pub seen: String,
}

pub fn expected_text(cfg: &SimConfig) -> String {
    match cfg.expect.as_ref().map(|e| e.safety).unwrap_or_default() {
        SafetyExpect::Holds => format!("safe, live by {} ms", cfg.liveness_bound_ms),
        SafetyExpect::Breaks => "fork, culprits convicted".into(),
    }
}

pub fn judge(cfg: &SimConfig, r: &Report) -> Verdict {
    let expected = expected_text(cfg);
    let broken = r.broken();
    let names: Vec<&str> = broken.iter().map(|i| i.name()).collect();
    let (ok, seen) = match cfg.expect.as_ref().map(|e| e.safety).unwrap_or_default() {
        SafetyExpect::Holds => {
            let seen = if r.ok() {
                match r.recovery_ms {
                    Some(ms) => format!("safe, recovered in {ms} ms"),
                    None => "safe, live".into(),
                }
            } else {
                format!("broken: {}", names.join(", "))
            };
            (r.ok(), seen)
        }
        SafetyExpect::Breaks => {
            let forked = broken.contains(&Invariant::Agreement);
            let accountable = !broken.contains(&Invariant::Accountability);
            let culprits = cfg.expect.as_ref().map(|e| e.culprits.clone()).unwrap_or_default();
            let named: Vec<String> = culprits
                .iter()
                .map(|&i| validator_key(i as usize).address().to_string())
                .collect();
            let convicted_all = named.iter().all(|a| r.convicted.iter().any(|(c, _)| c == a));
            let seen = if forked {
                format!(
                    "fork at {:?}, {} convicted{}",
                    r.fork_heights,
                    r.convicted.len(),
                    if accountable { "" } else { " (too few)" }
                )
            } else {
                format!(
                    "no fork ({})",
                    if names.is_empty() {
                        "all held".to_string()
                    } else {
                        names.join(", ")
                    }
                )
            };
            (forked && accountable && convicted_all, seen)
        }
    };
    Verdict { ok, expected, seen }
}

/// One row of `tendr sim check`.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub seeds: Vec<u64>,
    pub expected: String,
    pub failures: Vec<(u64, String)>,
    pub seen: String,
    pub heights: u64,
    pub mean_rounds: f64,
    pub recovery_ms: Option<u64>,
}

impl Row {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Runs every (scenario, seed) pair on `jobs` threads (one run per thread at a time).
pub fn check(scenarios: &[Scenario], jobs: usize, progress: &(dyn Fn() + Sync)) -> Vec<Row> {
    let mut work: Vec<(usize, u64)> = vec![];
    for (i, s) in scenarios.iter().enumerate() {
        let seeds = if s.config.seeds.is_empty() {
            vec![1, 2, 3]
        } else {
            s.config.seeds.clone()
        };
        work.extend(seeds.into_iter().map(|seed| (i, seed)));
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::<(usize, u64, Report)>::new());
    std::thread::scope(|sc| {
        for _ in 0..jobs.max(1) {
            sc.spawn(|| loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let Some(&(i, seed)) = work.get(k) else { break };
                let mut cfg = scenarios[i].config.clone();
                cfg.seed = seed;
                let r = run(cfg).expect("scenarios are validated when loaded");
                results.lock().expect("no panics while holding").push((i, seed, r));
                progress();
            });
        }
    });
    let mut results = results.into_inner().expect("threads joined");
    results.sort_by_key(|(i, seed, _)| (*i, *seed));
    scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let runs: Vec<&(usize, u64, Report)> = results.iter().filter(|(j, _, _)| *j == i).collect();
            let verdicts: Vec<(u64, Verdict)> = runs.iter().map(|(_, seed, r)| (*seed, judge(&s.config, r))).collect();
            let failures: Vec<(u64, String)> = verdicts
                .iter()
                .filter(|(_, v)| !v.ok)
                .map(|(seed, v)| (*seed, v.seen.clone()))
                .collect();
            let n = runs.len().max(1) as f64;
            Row {
                scenario: s.name.clone(),
                seeds: runs.iter().map(|(_, seed, _)| *seed).collect(),
                expected: expected_text(&s.config),
                seen: failures
                    .first()
                    .map(|f| f.1.clone())
                    .unwrap_or_else(|| verdicts.first().map(|v| v.1.seen.clone()).unwrap_or_default()),
                failures,
                heights: runs.iter().map(|(_, _, r)| r.heights).min().unwrap_or(0),
                mean_rounds: runs.iter().map(|(_, _, r)| r.mean_rounds).sum::<f64>() / n,
                recovery_ms: runs.iter().filter_map(|(_, _, r)| r.recovery_ms).max(),
            }
        })
        .collect()
}
