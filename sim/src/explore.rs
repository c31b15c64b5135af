//! Many seeds in parallel (one seed per thread, never one seed across threads), and shrinking
//! of a failing run to a smaller one that fails the same way.

use crate::checker::Invariant;
use crate::config::{FaultKind, Ratio, SimConfig, VerifyMode};
use crate::world::{run, Report};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Progress of a long sweep on stderr: seeds done, rate, failures so far and the time left. A
/// bar on a terminal; elsewhere (a batch job's log) one line per ~2% of the seeds.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    every: u64,
}

impl Progress {
    pub fn new(on: bool, total: u64) -> Progress {
        let bar = on.then(|| {
            let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} seeds  {per_sec}  eta {eta}  {msg}")
            {
                bar.set_style(style);
            }
            bar
        });
        Progress {
            bar,
            every: (total / 50).max(1),
        }
    }

    /// `done` seeds finished, `failing` of them failed.
    pub fn tick(&self, done: u64, failing: u64) {
        let Some(bar) = &self.bar else { return };
        bar.set_position(done);
        bar.set_message(format!("{failing} failing"));
        if bar.is_hidden() && (done.is_multiple_of(self.every) || Some(done) == bar.length()) {
            eprintln!(
                "{done}/{} seeds, {:.1} seeds/s, {failing} failing, eta {} s",
                bar.length().unwrap_or(0),
                bar.per_sec(),
                bar.eta().as_secs()
            );
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ExploreOpts {
    pub seeds: u64,
    pub start_seed: u64,
    pub jobs: usize,
    pub validators: Option<u32>,
    pub heights: Option<u64>,
    pub planted: Option<String>,
    pub verify: Option<VerifyMode>,
}

impl ExploreOpts {
    /// The configuration a seed stands for under these options.
    pub fn config(&self, seed: u64) -> SimConfig {
        let mut c = SimConfig::from_seed(seed, self.validators);
        if let Some(h) = self.heights {
            c.heights = h;
        }
        c.planted = self.planted.clone();
        if let Some(v) = self.verify {
            c.set_verify(v);
        }
        c
    }

    /// The one command that replays `seed`.
    pub fn replay_command(&self, seed: u64) -> String {
        let mut cmd = format!("tendr sim run --random --seed {seed}");
        if let Some(n) = self.validators {
            cmd += &format!(" --validators {n}");
        }
        if let Some(h) = self.heights {
            cmd += &format!(" --heights {h}");
        }
        if let Some(v) = self.verify {
            cmd += &format!(" --verify {}", v.name());
        }
        if let Some(p) = &self.planted {
            cmd = format!(
                "cargo run --release --features tendr-sim/planted-bugs -- {} --planted {p}",
                &cmd["tendr ".len()..]
            );
        }
        cmd
    }
}

/// Runs seeds `start_seed..start_seed + seeds` on `jobs` threads; `progress(done, failing)` is
/// called after each seed. Reports come back sorted by seed.
pub fn explore(opts: &ExploreOpts, progress: &(dyn Fn(u64, u64) + Sync)) -> Vec<Report> {
    let next = AtomicU64::new(opts.start_seed);
    let end = opts.start_seed + opts.seeds;
    let done = AtomicU64::new(0);
    let failing = AtomicU64::new(0);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            s.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= end {
                    break;
                }
                let report = match run(opts.config(seed)) {
                    Ok(r) => r,
                    Err(e) => panic!("seed {seed}: invalid generated config: {e}"),
                };
                if !report.ok() {
                    failing.fetch_add(1, Ordering::SeqCst);
                }
                results.lock().expect("no panics while holding").push(report);
                progress(done.fetch_add(1, Ordering::SeqCst) + 1, failing.load(Ordering::SeqCst));
            });
        }
    });
    let mut r = results.into_inner().expect("threads joined");
    r.sort_by_key(|r| r.seed);
    r
}

/// Searches seeds in order (in parallel) and stops at the first failing one found; returns the
/// failing report with the lowest seed among those run.
pub fn first_failure(opts: &ExploreOpts) -> Option<Report> {
    let next = AtomicU64::new(opts.start_seed);
    let end = opts.start_seed + opts.seeds;
    let found = Mutex::new(None::<Report>);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            s.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= end {
                        break;
                    }
                    let r = run(opts.config(seed)).expect("generated configs are valid");
                    if !r.ok() {
                        stop.store(true, Ordering::SeqCst);
                        let mut f = found.lock().expect("no panics while holding");
                        if f.as_ref().is_none_or(|b| b.seed > r.seed) {
                            *f = Some(r);
                        }
                    }
                }
            });
        }
    });
    found.into_inner().expect("threads joined")
}

/// Shrinks `cfg` (which breaks `invariant`) by removing faults, Byzantine nodes, network
/// noise and heights while the smaller run still breaks the same invariant. At most
/// `budget` runs.
pub fn shrink(cfg: &SimConfig, invariant: Invariant, budget: usize) -> (SimConfig, Report) {
    shrink_with(cfg, invariant, budget, |c| run(c).ok()).expect("the built-in application runs every valid config")
}

/// [`shrink`] for any run: `run_config` runs a config (for your own application, e.g. the
/// sweep's simulation with the config replaced) and gives `None` for a config it cannot run.
/// `None` when `cfg` itself cannot run.
pub fn shrink_with(
    cfg: &SimConfig,
    invariant: Invariant,
    budget: usize,
    run_config: impl Fn(SimConfig) -> Option<Report>,
) -> Option<(SimConfig, Report)> {
    let fails = |c: &SimConfig| -> Option<Report> {
        let r = run_config(c.clone())?;
        r.broken().contains(&invariant).then_some(r)
    };
    let mut best = cfg.clone();
    let mut best_report = match fails(&best) {
        Some(r) => r,
        None => return run_config(best.clone()).map(|r| (best, r)),
    };
    let mut runs = 1;
    let mut improved = true;
    while improved && runs < budget {
        improved = false;
        let mut candidates: Vec<SimConfig> = vec![];
        if best.heights > 1 {
            let mut c = best.clone();
            c.heights = best.heights / 2;
            candidates.push(c);
        }
        for i in 0..best.faults.len() {
            if best.faults[i].kind == FaultKind::Heal {
                continue;
            }
            let mut c = best.clone();
            c.faults.remove(i);
            candidates.push(c);
        }
        for i in 0..best.byzantine.len() {
            let mut c = best.clone();
            c.byzantine.remove(i);
            candidates.push(c);
        }
        if best.buggify != crate::config::Buggify::default() {
            let mut c = best.clone();
            c.buggify = crate::config::Buggify::default();
            candidates.push(c);
        }
        for which in 0..3 {
            let mut c = best.clone();
            let r = match which {
                0 => &mut c.network.loss,
                1 => &mut c.network.duplicate,
                _ => &mut c.network.reorder,
            };
            if r.0 > 0 {
                *r = Ratio::ZERO;
                candidates.push(c);
            }
        }
        let first = best_report
            .violations
            .iter()
            .find(|v| v.invariant == invariant)
            .map(|v| v.at_ms);
        if let Some(t) = first {
            if t + 1_000 < best.max_time_ms && invariant != Invariant::Liveness {
                let mut c = best.clone();
                c.max_time_ms = t + 1_000;
                candidates.push(c);
            }
        }
        for c in candidates {
            if runs >= budget {
                break;
            }
            runs += 1;
            if c.faults.iter().all(|f| f.kind == FaultKind::Heal) {
                let mut c2 = c.clone();
                c2.faults.clear();
                if let Some(r) = fails(&c2) {
                    best = c2;
                    best_report = r;
                    improved = true;
                    break;
                }
            }
            if let Some(r) = fails(&c) {
                best = c;
                best_report = r;
                improved = true;
                break;
            }
        }
    }
    Some((best, best_report))
}
