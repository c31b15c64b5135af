//! The simulator as a library: put your own application under seeded Byzantine runs from your
//! own `cargo test`.
//!
//! ```no_run
//! use tendr_sim::{SimConfig, Simulation, Sweep};
//! # use tendr_kv::KvApp as MyApp;
//! // One run: four validators, one of them Byzantine, a partition that heals.
//! let report = Simulation::new(SimConfig::from_seed(7, Some(4)), |chain_id: &str| MyApp::new(chain_id))
//!     .run()
//!     .unwrap();
//! assert!(report.ok(), "{:?}", report.violations);
//!
//! // A sweep: many seeds on all cores; a failing seed panics with the text that replays it.
//! Sweep::new(0..200, |seed| Simulation::new(SimConfig::from_seed(seed, None), MyApp::new))
//!     .run()
//!     .assert_ok();
//! ```

use crate::adversary::Adversary;
use crate::checker::Invariant;
use crate::config::{Behaviour, Byzantine, SimConfig};
use crate::workload::{KvWorkload, NoLoad, Workload};
use crate::world::{AppInvariant, MakeApp, Plugins, Report, World};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tendr_core::traits::Application;

/// One simulated run of application `A`: the config (validators, network, faults, seed,
/// verification mode, built-in adversaries), plus what only code can give — the application,
/// its load, its invariants and adversaries of your own.
pub struct Simulation<A> {
    cfg: SimConfig,
    app: MakeApp<A>,
    workload: Option<Box<dyn Workload>>,
    invariants: Vec<Box<dyn AppInvariant<A>>>,
    adversaries: BTreeMap<u32, Box<dyn Adversary>>,
    trace: Option<Box<dyn std::io::Write>>,
}

impl Simulation<tendr_kv::KvApp> {
    /// The built-in key-value application with its load (`cfg.workload`): what `tendr sim`
    /// runs.
    pub fn kv(cfg: SimConfig) -> Self {
        let load = KvWorkload::new(cfg.workload.clone());
        Simulation::new(cfg, tendr_kv::KvApp::new).workload(load)
    }
}

impl<A: Application + 'static> Simulation<A> {
    /// A run of `cfg` where every node runs `app(chain_id)` (a fresh application each time a
    /// node starts or restarts). No transactions until [`Simulation::workload`].
    pub fn new(cfg: SimConfig, app: impl Fn(&str) -> A + 'static) -> Self {
        Simulation {
            cfg,
            app: Rc::new(app),
            workload: None,
            invariants: Vec::new(),
            adversaries: BTreeMap::new(),
            trace: None,
        }
    }

    /// The transaction load.
    pub fn workload(mut self, w: impl Workload + 'static) -> Self {
        self.workload = Some(Box::new(w));
        self
    }

    /// An invariant of the application, checked on every honest node after each decision
    /// (app-hash agreement is always checked).
    pub fn invariant(mut self, i: impl AppInvariant<A> + 'static) -> Self {
        self.invariants.push(Box::new(i));
        self
    }

    /// Makes validator `node` Byzantine with an adversary of your own (it replaces a built-in
    /// behaviour the config may give it). Its power counts as Byzantine for the assumption.
    pub fn adversary(mut self, node: u32, a: impl Adversary + 'static) -> Self {
        self.cfg.byzantine.retain(|b| b.node != node);
        self.cfg.byzantine.push(Byzantine {
            node,
            behaviour: Behaviour::Custom,
        });
        self.cfg.byzantine.sort_by_key(|b| b.node);
        self.adversaries.insert(node, Box::new(a));
        self
    }

    /// Streams the trace as JSON lines to `out`.
    pub fn trace_to(mut self, out: Box<dyn std::io::Write>) -> Self {
        self.trace = Some(out);
        self
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Changes the config (e.g. a sweep's shrunk or replayed one). An adversary of your own
    /// stays only while its node is still Byzantine with [`Behaviour::Custom`].
    pub fn configure(mut self, f: impl FnOnce(&mut SimConfig)) -> Self {
        f(&mut self.cfg);
        let custom: Vec<u32> = self
            .cfg
            .byzantine
            .iter()
            .filter(|b| b.behaviour == Behaviour::Custom)
            .map(|b| b.node)
            .collect();
        self.adversaries.retain(|node, _| custom.contains(node));
        self
    }

    /// Runs to the end and reports. `Err` only for a config that makes no sense.
    pub fn run(self) -> Result<Report, String> {
        let plugins = Plugins {
            app: self.app,
            workload: self.workload.unwrap_or_else(|| Box::new(NoLoad)),
            invariants: self.invariants,
            adversaries: self.adversaries,
        };
        let mut w = World::new(self.cfg, plugins)?;
        if let Some(out) = self.trace {
            w.trace.set_writer(out);
        }
        Ok(w.run())
    }
}

/// A failing seed of a [`Sweep`].
#[derive(Debug, Clone)]
pub struct Failure {
    pub seed: u64,
    /// The first invariant it broke.
    pub invariant: Invariant,
    pub detail: String,
    /// How to run this seed again.
    pub replay: String,
    pub report: Report,
    /// The smallest config found that still breaks the same invariant (fewer faults,
    /// Byzantine nodes, heights and less network noise), with where it was written as TOML.
    pub shrunk: Option<(SimConfig, Option<std::path::PathBuf>)>,
}

/// What a sweep found.
#[derive(Debug, Clone, Default)]
pub struct SweepResult {
    pub runs: u64,
    /// Runs whose liveness was not asserted (more than 1/3 of the power faulty at the end).
    pub safety_only: u64,
    pub failures: Vec<Failure>,
}

impl SweepResult {
    /// Panics with every failure and its replay when a seed failed.
    pub fn assert_ok(&self) {
        if self.failures.is_empty() {
            return;
        }
        let mut msg = format!("{} of {} seeds failed:\n", self.failures.len(), self.runs);
        for f in self.failures.iter().take(10) {
            msg += &format!(
                "- seed {}: {} ({})\n  replay: {}\n",
                f.seed,
                f.invariant.name(),
                f.detail,
                f.replay
            );
            if let Some((c, path)) = &f.shrunk {
                msg += &format!(
                    "  shrunk: {} faults, {} Byzantine, {} heights",
                    c.faults.len(),
                    c.byzantine.len(),
                    c.heights
                );
                if let Some(p) = path {
                    msg += &format!("; replay it: TENDR_SIM_CONFIG={} <the same command>", p.display());
                }
                msg += "\n";
            }
        }
        panic!("{msg}");
    }
}

/// Many seeds of one simulation, in parallel (one seed per thread, never one seed across
/// threads). `build(seed)` makes the run of a seed.
///
/// Set `TENDR_SIM_SEED=N` to run only seed `N` (that is the replay of a failure), or
/// `TENDR_SIM_CONFIG=FILE` to run only the config of a TOML file (a shrunk failure: the seed's
/// simulation with that config).
pub struct Sweep<F> {
    seeds: std::ops::Range<u64>,
    jobs: usize,
    build: F,
    progress: bool,
    stop_on_failure: bool,
    shrink_budget: usize,
}

impl<A, F> Sweep<F>
where
    A: Application + 'static,
    F: Fn(u64) -> Simulation<A> + Sync,
{
    pub fn new(seeds: std::ops::Range<u64>, build: F) -> Self {
        Sweep {
            seeds,
            jobs: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            build,
            progress: false,
            stop_on_failure: false,
            shrink_budget: 60,
        }
    }

    /// Runs at most this many smaller configs to shrink the first failure (default 60;
    /// 0: do not shrink). The shrunk config is written as TOML to the system's temporary
    /// folder and named in [`SweepResult::assert_ok`]'s message.
    pub fn shrink(mut self, budget: usize) -> Self {
        self.shrink_budget = budget;
        self
    }

    /// Threads to use (default: every core).
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Prints progress (seeds done, rate, failures, ETA) on stderr.
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Stops at the first failure found (the seeds below it still finish), for a search for
    /// a bug rather than a census of failures.
    pub fn stop_on_failure(mut self, on: bool) -> Self {
        self.stop_on_failure = on;
        self
    }

    /// The text that replays `seed` from the test (or program) named `caller`.
    fn replay(caller: Option<&str>, seed: u64) -> String {
        let cmd = match caller {
            Some(test) => format!("TENDR_SIM_SEED={seed} cargo test {test} -- --exact --nocapture"),
            None => format!("TENDR_SIM_SEED={seed} <the same command>"),
        };
        format!("{cmd}   (in code: the sweep's build({seed}).run())")
    }

    /// The seed's simulation with `cfg` in place of its own.
    fn run_config(&self, cfg: SimConfig) -> Option<Report> {
        (self.build)(cfg.seed).configure(|c| *c = cfg).run().ok()
    }

    /// Runs every seed (or only `TENDR_SIM_SEED`, or only `TENDR_SIM_CONFIG`).
    pub fn run(&self) -> SweepResult {
        if let Ok(path) = std::env::var("TENDR_SIM_CONFIG") {
            return self.run_file(&path);
        }
        let mut result = self.run_seeds();
        if let (Some(first), true) = (result.failures.first_mut(), self.shrink_budget > 0) {
            let cfg = (self.build)(first.seed).config().clone();
            let shrunk = crate::explore::shrink_with(&cfg, first.invariant, self.shrink_budget, |c| self.run_config(c));
            if let Some((small, _)) = shrunk {
                let path = std::env::temp_dir().join(format!("tendr-sim-shrunk-{}.toml", first.seed));
                let written = toml::to_string(&small)
                    .ok()
                    .and_then(|text| std::fs::write(&path, text).ok())
                    .map(|()| path);
                first.shrunk = Some((small, written));
            }
        }
        result
    }

    /// Runs the config of a TOML file (`TENDR_SIM_CONFIG`) as the sweep's simulation of its seed.
    fn run_file(&self, path: &str) -> SweepResult {
        let cfg = crate::cli::load_config(std::path::Path::new(path))
            .unwrap_or_else(|e| panic!("TENDR_SIM_CONFIG={path}: {e}"));
        let seed = cfg.seed;
        let report = self
            .run_config(cfg)
            .unwrap_or_else(|| panic!("TENDR_SIM_CONFIG={path}: the simulation's config is invalid"));
        let mut r = SweepResult {
            runs: 1,
            safety_only: u64::from(!report.liveness_checked),
            failures: vec![],
        };
        if let Some(v) = report.violations.first() {
            r.failures.push(Failure {
                seed,
                invariant: v.invariant,
                detail: v.detail.clone(),
                replay: format!("TENDR_SIM_CONFIG={path} <the same command>"),
                report: report.clone(),
                shrunk: None,
            });
        }
        r
    }

    fn run_seeds(&self) -> SweepResult {
        let seeds = match std::env::var("TENDR_SIM_SEED").ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(s) => s..s + 1,
            None => self.seeds.clone(),
        };
        // In `cargo test` the calling thread is named after the test: the replay names it.
        let caller = std::thread::current().name().filter(|n| *n != "main").map(String::from);
        let next = AtomicU64::new(seeds.start);
        let done = AtomicU64::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let result = Mutex::new(SweepResult::default());
        let started = crate::explore::Progress::new(self.progress, seeds.end - seeds.start);
        std::thread::scope(|s| {
            for _ in 0..self.jobs {
                s.spawn(|| loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= seeds.end || (self.stop_on_failure && stop.load(Ordering::SeqCst)) {
                        break;
                    }
                    let report = match (self.build)(seed).run() {
                        Ok(r) => r,
                        Err(e) => panic!("seed {seed}: the simulation's config is invalid: {e}"),
                    };
                    let mut r = result.lock().expect("no panics while holding");
                    r.runs += 1;
                    if !report.liveness_checked {
                        r.safety_only += 1;
                    }
                    if let Some(v) = report.violations.first() {
                        stop.store(true, Ordering::SeqCst);
                        r.failures.push(Failure {
                            seed,
                            invariant: v.invariant,
                            detail: v.detail.clone(),
                            replay: Self::replay(caller.as_deref(), seed),
                            report: report.clone(),
                            shrunk: None,
                        });
                    }
                    let failing = r.failures.len() as u64;
                    drop(r);
                    started.tick(done.fetch_add(1, Ordering::SeqCst) + 1, failing);
                });
            }
        });
        started.finish();
        let mut r = result.into_inner().expect("threads joined");
        r.failures.sort_by_key(|f| f.seed);
        r
    }
}
