//! `tendr sim`: run, explore, replay and benchmark simulations.
//!
//! The simulator never reads the wall clock: the binary passes in a stopwatch (`wall_ms`) that
//! is used only to report how long runs took.

use crate::checker::Invariant;
use crate::config::{Behaviour, Byzantine, Fault, FaultKind, Latency, Ratio, SimConfig, VerifyMode};
use crate::explore::{explore, shrink, ExploreOpts};
use crate::world::{run_traced, Report};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct SimArgs {
    #[command(subcommand)]
    pub command: SimCommand,
}

#[derive(Subcommand, Debug)]
pub enum SimCommand {
    /// Run one simulation and print its summary and trace hash.
    Run(RunArgs),
    /// Run many seeds in parallel; print every failing seed with the command that replays it.
    Explore(ExploreArgs),
    /// Re-run one seed, optionally writing its trace as JSON lines.
    Replay(ReplayArgs),
    /// Run every scenario of a directory over its seeds; compare with the expected outcomes.
    Check(CheckArgs),
    /// Benchmarks: simulated heights per wall-clock second, and throughput under a partition.
    Bench(BenchArgs),
    /// Draw pictures from a JSON-lines trace written by `tendr sim replay --trace`.
    Plot(PlotArgs),
    /// Exhaustive Twins: every scenario of 4 validators, one twin pair and one partition of
    /// the five slots per round for `--rounds` rounds (`4 * 16^rounds` runs).
    Twins(TwinsArgs),
    /// Merge the `--out` results of explore runs (shards of a seed range run anywhere) into
    /// one report: counts, gaps in the seed range, every failing seed with its replay.
    Merge(MergeArgs),
}

#[derive(Args, Debug)]
pub struct TwinsArgs {
    /// Rounds with a partition before the network heals.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Threads (one scenario per thread at a time).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// A planted core bug (builds with the planted-bugs feature only).
    #[arg(long)]
    pub planted: Option<String>,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Result files written by `tendr sim explore --out` (JSON lines).
    #[arg(required = true)]
    pub files: Vec<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// The trace file (JSON lines).
    pub trace: std::path::PathBuf,
    /// Height and throughput plot output (SVG).
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// Space-time diagram output (SVG).
    #[arg(long)]
    pub svg: Option<std::path::PathBuf>,
    /// Window of the space-time diagram, `FROM-TO` virtual milliseconds.
    #[arg(long, default_value = "0-2000")]
    pub window_ms: String,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Heights per speed measurement.
    #[arg(long, default_value_t = 300)]
    pub heights: u64,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Only the throughput-under-partition part.
    #[arg(long)]
    pub partition_only: bool,
    /// Only these network sizes (repeat or separate with commas; default 4, 16 and 100).
    #[arg(long, value_delimiter = ',')]
    pub validators: Vec<u32>,
    /// Only these verification modes: full, cached, trusted (default all three).
    #[arg(long, value_delimiter = ',')]
    pub verify: Vec<VerifyMode>,
    /// Skip the throughput-under-partition part.
    #[arg(long, conflicts_with = "partition_only")]
    pub speed_only: bool,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Directory of scenario files.
    #[arg(default_value = "scenarios")]
    pub dir: std::path::PathBuf,
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
}

/// How to build the run's configuration (flags override the file or the seed's draw).
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// A scenario file (TOML), e.g. scenarios/split-vote.toml.
    #[arg(value_name = "SCENARIO")]
    pub scenario: Option<std::path::PathBuf>,
    /// A scenario or config file (TOML); same as the positional SCENARIO.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Draw validators, adversaries, network and faults from the seed.
    #[arg(long)]
    pub random: bool,
    /// The run's seed (default: the config file's, else 1).
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub validators: Option<u32>,
    /// Comma-separated voting powers, one per validator.
    #[arg(long, value_delimiter = ',')]
    pub powers: Vec<u64>,
    /// How many validators are Byzantine (the last ones).
    #[arg(long)]
    pub byzantine: Option<u32>,
    /// Byzantine behaviours, used in turn: silent, equivocate, split-vote, amnesia, always-nil,
    /// bad-signatures, garbage, future-spam, replay, twin.
    #[arg(long, value_delimiter = ',')]
    pub behaviour: Vec<Behaviour>,
    /// Link latency as `MIN-MAX` milliseconds (uniform).
    #[arg(long)]
    pub latency_ms: Option<String>,
    /// Loss probability as `NUM/DEN`.
    #[arg(long)]
    pub loss: Option<String>,
    /// Split the validators in two halves at this virtual time...
    #[arg(long)]
    pub partition_at_ms: Option<u64>,
    /// ...and heal at this one.
    #[arg(long)]
    pub heal_at_ms: Option<u64>,
    /// Crash a node: `NODE@MS`; restart with `--restart NODE@MS`.
    #[arg(long)]
    pub crash: Vec<String>,
    #[arg(long)]
    pub restart: Vec<String>,
    #[arg(long)]
    pub heights: Option<u64>,
    #[arg(long)]
    pub max_time_ms: Option<u64>,
    /// full, cached, or trusted (no verification; simulator only).
    #[arg(long)]
    pub verify: Option<VerifyMode>,
    #[arg(long)]
    pub txs_per_sec: Option<u32>,
    /// Crashes keep unsynced writes (default: a crash loses what the node had not synced).
    #[arg(long)]
    pub keep_unsynced: bool,
    /// Pass every message through the wire codec (encode, frame limit, decode) as a real node
    /// receives it, instead of delivering message values.
    #[arg(long)]
    pub wire_codec: bool,
    /// Keep every decision time and transaction latency in the JSON report (they grow with
    /// the run; off by default so memory stays flat).
    #[arg(long)]
    pub timeline: bool,
    /// Each node snapshots every this many heights (0: never; default 100).
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// Decided blocks each node keeps below its newest (0: all; default 1000).
    #[arg(long)]
    pub retain_blocks: Option<u64>,
    /// A planted core bug (builds with the planted-bugs feature only).
    #[arg(long)]
    pub planted: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the run's whole configuration (as drawn from the seed, with every flag applied)
    /// to this TOML file: `tendr sim run FILE` runs it again, and it can become a scenario.
    #[arg(long)]
    pub save_config: Option<std::path::PathBuf>,
    /// Draw a space-time diagram of the run (SVG): lanes, messages, decisions, partitions.
    #[arg(long)]
    pub svg: Option<std::path::PathBuf>,
    /// The window of the diagram, `FROM-TO` virtual milliseconds (default 0-2000).
    #[arg(long, default_value = "0-2000")]
    pub window_ms: String,
    /// Plot decided height and throughput over virtual time (SVG).
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct ExploreArgs {
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    #[arg(long, default_value_t = 0)]
    pub start_seed: u64,
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    #[arg(long)]
    pub validators: Option<u32>,
    #[arg(long)]
    pub heights: Option<u64>,
    #[arg(long)]
    pub verify: Option<VerifyMode>,
    #[arg(long)]
    pub planted: Option<String>,
    /// Do not shrink the first failing seed.
    #[arg(long)]
    pub no_shrink: bool,
    /// Stop at the first failing seed: print it, how many seeds it took and the wall time
    /// (how the README's seeds-to-find table is measured).
    #[arg(long)]
    pub first_failure: bool,
    /// Write one JSON line per seed here (seed, verdict, broken invariants, trace hash, replay
    /// command): shard a long sweep by `--start-seed`/`--seeds` across machines, then
    /// `tendr sim merge` the files.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Write the trace as JSON lines here.
    #[arg(long)]
    pub trace: Option<std::path::PathBuf>,
}

impl std::str::FromStr for VerifyMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "full" => Ok(VerifyMode::Full),
            "cached" => Ok(VerifyMode::Cached),
            "trusted" => Ok(VerifyMode::Trusted),
            _ => Err(format!("unknown verify mode `{s}` (full, cached, trusted)")),
        }
    }
}

fn ratio(s: &str) -> Result<Ratio, String> {
    let (a, b) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}`: expected NUM/DEN, e.g. 1/10"))?;
    let p = |x: &str| {
        x.trim()
            .parse::<u32>()
            .map_err(|_| format!("`{s}`: expected NUM/DEN with whole numbers"))
    };
    Ok(Ratio(p(a)?, p(b)?))
}

fn node_at(s: &str) -> Result<(u32, u64), String> {
    let (n, t) = s
        .split_once('@')
        .ok_or_else(|| format!("`{s}`: expected NODE@MS, e.g. 2@1500"))?;
    let n = n.parse().map_err(|_| format!("`{s}`: node must be a number"))?;
    let t = t.parse().map_err(|_| format!("`{s}`: time must be milliseconds"))?;
    Ok((n, t))
}

/// Loads a config or scenario file (TOML); errors name the file, line and field.
pub fn load_config(path: &std::path::Path) -> Result<SimConfig, String> {
    crate::scenario::load(path).map(|s| s.config)
}

/// Builds the configuration from the flags.
pub fn build_config(a: &RunArgs) -> Result<SimConfig, String> {
    let file = a.scenario.as_ref().or(a.config.as_ref());
    let mut c = match (file, a.random) {
        (Some(p), _) => load_config(p)?,
        (None, true) => SimConfig::from_seed(a.seed.unwrap_or(1), a.validators),
        (None, false) => SimConfig::new(a.validators.unwrap_or(4)),
    };
    let default_seed = if file.is_some() {
        c.seeds.first().copied().unwrap_or(c.seed)
    } else {
        1
    };
    c.seed = a.seed.unwrap_or(default_seed);
    if let Some(n) = a.validators {
        c.validators = n;
    }
    if !a.powers.is_empty() {
        c.powers = a.powers.clone();
    }
    if let Some(b) = a.byzantine {
        let behaviours = if a.behaviour.is_empty() {
            vec![Behaviour::Silent]
        } else {
            a.behaviour.clone()
        };
        c.byzantine = (0..b)
            .map(|i| Byzantine {
                node: c.validators - 1 - i,
                behaviour: behaviours[i as usize % behaviours.len()],
            })
            .collect();
    }
    if let Some(l) = &a.latency_ms {
        let (lo, hi) = l.split_once('-').unwrap_or((l, l));
        let p = |x: &str| {
            x.parse::<u64>()
                .map_err(|_| format!("--latency-ms `{l}`: expected MIN-MAX milliseconds"))
        };
        c.network.latency = Latency::Uniform {
            min_ms: p(lo)?,
            max_ms: p(hi)?,
        };
    }
    if let Some(l) = &a.loss {
        c.network.loss = ratio(l)?;
    }
    if let Some(t) = a.partition_at_ms {
        let n = c.validators;
        c.faults.push(Fault {
            at_ms: t,
            kind: FaultKind::Partition {
                groups: vec![(0..n / 2).collect(), (n / 2..n).collect()],
            },
        });
    }
    if let Some(t) = a.heal_at_ms {
        c.faults.push(Fault {
            at_ms: t,
            kind: FaultKind::Heal,
        });
    }
    for s in &a.crash {
        let (node, at_ms) = node_at(s)?;
        c.faults.push(Fault {
            at_ms,
            kind: FaultKind::Crash { node },
        });
    }
    for s in &a.restart {
        let (node, at_ms) = node_at(s)?;
        c.faults.push(Fault {
            at_ms,
            kind: FaultKind::Restart { node },
        });
    }
    c.faults.sort_by_key(|f| f.at_ms);
    if let Some(h) = a.heights {
        c.heights = h;
    }
    if let Some(t) = a.max_time_ms {
        c.max_time_ms = t;
    }
    if let Some(v) = a.verify {
        c.set_verify(v);
    }
    if let Some(t) = a.txs_per_sec {
        c.workload.txs_per_sec = t;
    }
    if a.keep_unsynced {
        c.storage.lose_unsynced = false;
    }
    c.timeline |= a.timeline;
    c.wire_codec |= a.wire_codec;
    if let Some(n) = a.snapshot_every {
        c.storage.snapshot_every = n;
    }
    if let Some(n) = a.retain_blocks {
        c.storage.retain_blocks = n;
    }
    if a.planted.is_some() {
        c.planted = a.planted.clone();
    }
    c.validate()?;
    Ok(c)
}

pub fn print_report(r: &Report, wall_ms: u64) {
    println!("seed            {}", r.seed);
    println!("validators      {} (byzantine: {})", r.validators, fmt_byz(r));
    println!(
        "heights         {} decided by every honest node (highest {})",
        r.heights, r.max_height
    );
    println!("rounds/height   {:.2}", r.mean_rounds);
    if r.buggify != "off" {
        println!("buggify         {} ({} crashes)", r.buggify, r.buggify_crashes);
    }
    println!(
        "messages        {} sent, {} delivered, {} dropped, {} rejected",
        r.stats.sent, r.stats.delivered, r.stats.dropped, r.stats.rejected
    );
    println!(
        "storage         {} writes lost in crashes, at most {} blocks kept per node",
        r.stats.lost_writes, r.blocks_kept
    );
    let ratio = if wall_ms > 0 {
        r.virtual_ms as f64 / wall_ms as f64
    } else {
        f64::INFINITY
    };
    println!(
        "time            {} ms virtual, {wall_ms} ms wall ({ratio:.0}x)",
        r.virtual_ms
    );
    if r.violations.is_empty() {
        println!(
            "invariants      all held ({})",
            Invariant::ALL.map(|i| i.name()).join(", ")
        );
    } else {
        println!("invariants      BROKEN");
        for v in &r.violations {
            println!("  {} at {} ms: {}", v.invariant.name(), v.at_ms, v.detail);
        }
    }
    if !r.convicted.is_empty() {
        let c: Vec<String> = r.convicted.iter().map(|(a, p)| format!("{a} (power {p})")).collect();
        println!("convicted       {}", c.join(", "));
    }
    println!("trace hash      {}", r.trace_hash);
}

fn fmt_byz(r: &Report) -> String {
    if r.byzantine.is_empty() {
        return "none".into();
    }
    r.byzantine
        .iter()
        .map(|(n, b)| format!("{n}:{b}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs a `tendr sim` command. `wall_ms` reads a wall-clock stopwatch in milliseconds; it only
/// feeds the reports (runs are decided by their seed alone).
pub fn run(args: SimArgs, wall_ms: &dyn Fn() -> u64) -> i32 {
    let result = match args.command {
        SimCommand::Run(a) => cmd_run(&a, None, wall_ms),
        SimCommand::Replay(a) => cmd_run(&a.run, a.trace.as_deref(), wall_ms),
        SimCommand::Explore(a) => cmd_explore(&a, wall_ms),
        SimCommand::Check(a) => cmd_check(&a, wall_ms),
        SimCommand::Bench(a) => cmd_bench(&a, wall_ms),
        SimCommand::Plot(a) => cmd_plot(&a),
        SimCommand::Merge(a) => cmd_merge(&a),
        SimCommand::Twins(a) => cmd_twins(&a, wall_ms),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}

fn cmd_twins(a: &TwinsArgs, wall_ms: &dyn Fn() -> u64) -> Result<i32, String> {
    if a.rounds > 6 {
        return Err(format!(
            "--rounds {}: at most 6 ({} scenarios)",
            a.rounds,
            crate::twins::count(6)
        ));
    }
    let total = crate::twins::count(a.rounds);
    let progress = crate::explore::Progress::new(true, total);
    let t0 = wall_ms();
    let mut probe = crate::twins::scenario(a.rounds, 0);
    probe.planted = a.planted.clone();
    probe.validate()?;
    let r = crate::twins::enumerate(a.rounds, a.jobs, a.planted.as_deref(), &|done| progress.tick(done, 0));
    progress.finish();
    let wall = wall_ms() - t0;
    println!(
        "twins: {} scenarios (4 validators, one twin pair, {} rounds of partitions), {} heights decided, {} failing; {wall} ms wall",
        r.scenarios,
        a.rounds,
        r.heights,
        r.failing.len()
    );
    for (i, rep) in r.failing.iter().take(20) {
        let broken: Vec<&str> = rep.broken().iter().map(|v| v.name()).collect();
        let cfg = crate::twins::scenario(a.rounds, *i);
        println!("FAIL scenario {i} ({}): {:?}", broken.join(", "), cfg.faults);
    }
    Ok(if r.failing.is_empty() { 0 } else { 1 })
}

fn cmd_run(a: &RunArgs, trace: Option<&std::path::Path>, wall_ms: &dyn Fn() -> u64) -> Result<i32, String> {
    let cfg = build_config(a)?;
    if let Some(p) = &a.save_config {
        let text = toml::to_string(&cfg).map_err(|e| e.to_string())?;
        std::fs::write(p, text).map_err(|e| format!("{}: cannot write the config: {e}", p.display()))?;
    }
    let cfg_copy = cfg.clone();
    let t0 = wall_ms();
    let pictures = a.svg.is_some() || a.plot.is_some();
    let buf = SharedBuf::default();
    let report = match (trace, pictures) {
        (Some(p), _) => {
            let f = std::fs::File::create(p).map_err(|e| format!("{}: cannot create trace file: {e}", p.display()))?;
            run_traced(cfg, Box::new(f))?
        }
        (None, true) => run_traced(cfg, Box::new(buf.clone()))?,
        (None, false) => crate::world::run(cfg)?,
    };
    if pictures {
        let text = match trace {
            Some(p) => std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
            None => String::from_utf8_lossy(&buf.0.borrow()).to_string(),
        };
        draw(&text, a.svg.as_deref(), a.plot.as_deref(), &a.window_ms)?;
    }
    let wall = wall_ms() - t0;
    let verdict = crate::scenario::judge(&cfg_copy, &report);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
    } else {
        print_report(&report, wall);
        if let Some(p) = trace {
            println!("trace           {}", p.display());
        }
        if cfg_copy.expect.is_some() {
            println!("expected        {}", verdict.expected);
            println!(
                "outcome         {} ({})",
                verdict.seen,
                if verdict.ok { "as expected" } else { "NOT as expected" }
            );
        }
    }
    let ok = if cfg_copy.expect.is_some() {
        verdict.ok
    } else {
        report.ok()
    };
    Ok(if ok { 0 } else { 1 })
}

fn cmd_check(a: &CheckArgs, wall_ms: &dyn Fn() -> u64) -> Result<i32, String> {
    let files = crate::scenario::list(&a.dir)?;
    if files.is_empty() {
        return Err(format!("{}: no scenario files (*.toml)", a.dir.display()));
    }
    let scenarios = files
        .iter()
        .map(|p| crate::scenario::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let total: usize = scenarios
        .iter()
        .map(|s| {
            if s.config.seeds.is_empty() {
                3
            } else {
                s.config.seeds.len()
            }
        })
        .sum();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} runs").map_err(|e| e.to_string())?);
    let t0 = wall_ms();
    let rows = crate::scenario::check(&scenarios, a.jobs, &|| bar.inc(1));
    bar.finish_and_clear();
    println!(
        "{:<34} {:>5}  {:<28} {:<44} {:>7} {:>6} {:>9}",
        "scenario", "seeds", "expected", "seen", "heights", "rounds", "recover"
    );
    for r in &rows {
        let rec = r.recovery_ms.map(|m| format!("{m} ms")).unwrap_or("-".into());
        let mark = if r.ok() { "" } else { "  <-- differs" };
        println!(
            "{:<34} {:>5}  {:<28} {:<44} {:>7} {:>6.2} {:>9}{mark}",
            r.scenario,
            r.seeds.len(),
            r.expected,
            r.seen,
            r.heights,
            r.mean_rounds,
            rec
        );
        for (seed, seen) in &r.failures {
            println!(
                "    seed {seed}: {seen}: tendr sim run {}/{}.toml --seed {seed}",
                a.dir.display(),
                r.scenario
            );
        }
    }
    let bad = rows.iter().filter(|r| !r.ok()).count();
    println!(
        "\n{} scenarios, {} as expected, {} differ; {} ms wall",
        rows.len(),
        rows.len() - bad,
        bad,
        (wall_ms() - t0)
    );
    Ok(if bad == 0 { 0 } else { 1 })
}

fn cmd_explore(a: &ExploreArgs, wall_ms: &dyn Fn() -> u64) -> Result<i32, String> {
    let opts = ExploreOpts {
        seeds: a.seeds,
        start_seed: a.start_seed,
        jobs: a.jobs,
        validators: a.validators,
        heights: a.heights,
        planted: a.planted.clone(),
        verify: a.verify,
    };
    opts.config(opts.start_seed).validate()?;
    if a.first_failure {
        let t0 = wall_ms();
        let found = crate::explore::first_failure(&opts);
        let wall = wall_ms() - t0;
        return Ok(match found {
            Some(r) => {
                let broken: Vec<&str> = r.broken().iter().map(|i| i.name()).collect();
                println!(
                    "first failing seed {} ({} seeds from {}), breaks {}; {wall} ms wall; replay: {}",
                    r.seed,
                    r.seed - opts.start_seed + 1,
                    opts.start_seed,
                    broken.join(", "),
                    opts.replay_command(r.seed)
                );
                1
            }
            None => {
                println!(
                    "no failing seed in {} seeds from {}; {wall} ms wall",
                    opts.seeds, opts.start_seed
                );
                0
            }
        });
    }
    let progress = crate::explore::Progress::new(true, a.seeds);
    let t0 = wall_ms();
    let reports = explore(&opts, &|done, failing| progress.tick(done, failing));
    progress.finish();
    let wall = wall_ms() - t0;
    let results: Vec<SeedResult> = reports.iter().map(|r| SeedResult::of(r, &opts)).collect();
    if let Some(path) = &a.out {
        let mut text = String::new();
        for r in &results {
            text += &serde_json::to_string(r).map_err(|e| e.to_string())?;
            text.push('\n');
        }
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let heights: u64 = reports.iter().map(|r| r.heights).sum();
    print_summary(&results);
    println!("{heights} heights decided; {wall} ms wall");
    let failing: Vec<&Report> = reports.iter().filter(|r| !r.ok()).collect();
    if let (Some(first), false) = (failing.first(), a.no_shrink) {
        let inv = *first.broken().iter().next().expect("a failing report has a violation");
        let (small, _) = shrink(&opts.config(first.seed), inv, 40);
        let path = format!("tendr-sim-shrunk-{}.toml", first.seed);
        let text = toml::to_string(&small).map_err(|e| e.to_string())?;
        std::fs::write(&path, text).map_err(|e| format!("{path}: {e}"))?;
        println!(
            "shrunk seed {} to {} faults, {} byzantine, {} heights (still breaks {}): tendr sim run --config {path}{}",
            first.seed,
            small.faults.len(),
            small.byzantine.len(),
            small.heights,
            inv.name(),
            if opts.planted.is_some() {
                " (with --features tendr-sim/planted-bugs)"
            } else {
                ""
            }
        );
    }
    Ok(if failing.is_empty() { 0 } else { 1 })
}

/// One seed's outcome as `tendr sim explore --out` writes it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SeedResult {
    pub seed: u64,
    pub ok: bool,
    pub broken: Vec<String>,
    pub heights: u64,
    /// Liveness was asserted (more than 2/3 honest and running after the last fault).
    pub liveness_checked: bool,
    pub trace_hash: String,
    pub replay: String,
}

impl SeedResult {
    fn of(r: &Report, opts: &ExploreOpts) -> SeedResult {
        SeedResult {
            seed: r.seed,
            ok: r.ok(),
            broken: r.broken().iter().map(|i| i.name().to_string()).collect(),
            heights: r.heights,
            liveness_checked: r.liveness_checked,
            trace_hash: r.trace_hash.clone(),
            replay: opts.replay_command(r.seed),
        }
    }
}

/// The table of broken invariants, the counts and every failing seed with its replay.
fn print_summary(results: &[SeedResult]) {
    println!("\n{:<24} {:>8} {:>12}", "invariant", "broken", "first seed");
    for inv in Invariant::ALL {
        let seeds: Vec<u64> = results
            .iter()
            .filter(|r| r.broken.iter().any(|b| b == inv.name()))
            .map(|r| r.seed)
            .collect();
        let first = seeds.first().map(|s| s.to_string()).unwrap_or("-".into());
        println!("{:<24} {:>8} {:>12}", inv.name(), seeds.len(), first);
    }
    let failed = results.iter().filter(|r| !r.ok).count();
    let safety_only = results.iter().filter(|r| !r.liveness_checked).count();
    println!(
        "\n{} seeds, {} passed, {} failed; {safety_only} safety-only (more than 1/3 of the power faulty at the end: \
         liveness not asserted)",
        results.len(),
        results.len() - failed,
        failed
    );
    for r in results.iter().filter(|r| !r.ok) {
        println!("FAIL seed {} ({}): {}", r.seed, r.broken.join(", "), r.replay);
    }
}

fn cmd_merge(a: &MergeArgs) -> Result<i32, String> {
    let mut all = std::collections::BTreeMap::new();
    for path in &a.files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let r: SeedResult = serde_json::from_str(line).map_err(|e| {
                format!(
                    "{} line {}: not a result line of `tendr sim explore --out` ({e})",
                    path.display(),
                    i + 1
                )
            })?;
            all.insert(r.seed, r);
        }
    }
    let results: Vec<SeedResult> = all.into_values().collect();
    print_summary(&results);
    let gaps: Vec<String> = results
        .windows(2)
        .filter(|w| w[1].seed > w[0].seed + 1)
        .map(|w| format!("{}-{}", w[0].seed + 1, w[1].seed - 1))
        .collect();
    if let (Some(lo), Some(hi)) = (results.first(), results.last()) {
        println!(
            "seeds {}-{}; missing: {}",
            lo.seed,
            hi.seed,
            if gaps.is_empty() {
                "none".into()
            } else {
                gaps.join(", ")
            }
        );
    }
    Ok(if results.iter().all(|r| r.ok) { 0 } else { 1 })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn cmd_bench(a: &BenchArgs, wall_ms: &dyn Fn() -> u64) -> Result<i32, String> {
    if !a.partition_only {
        println!(
            "Simulated consensus speed (one core, 1 s target block time, 5-15 ms links), median of {}:",
            a.reps
        );
        println!(
            "{:>10} {:>9} {:>14} {:>16} {:>12}",
            "validators", "verify", "heights/s", "virtual/wall", "wall ms"
        );
        let sizes = if a.validators.is_empty() {
            vec![4u32, 16, 100]
        } else {
            a.validators.clone()
        };
        let modes = if a.verify.is_empty() {
            vec![VerifyMode::Full, VerifyMode::Cached, VerifyMode::Trusted]
        } else {
            a.verify.clone()
        };
        for &n in &sizes {
            for &verify in &modes {
                let heights = match n {
                    51.. => (a.heights / 30).max(5),
                    11.. => (a.heights / 5).max(10),
                    _ => a.heights,
                };
                // Trusted runs are ~20x faster: give them enough heights to time.
                let heights = if verify == VerifyMode::Trusted {
                    heights * 20
                } else {
                    heights
                };
                let mut rates = vec![];
                let mut ratios = vec![];
                let mut walls = vec![];
                for rep in 0..a.reps {
                    let mut c = SimConfig::new(n);
                    c.seed = rep as u64 + 1;
                    c.heights = heights;
                    c.verify = verify;
                    c.timeouts.commit_ms = 1000;
                    c.network.latency = Latency::Uniform { min_ms: 5, max_ms: 15 };
                    // Room for every height (the default stops at ten virtual minutes).
                    c.max_time_ms = c.max_time_ms.max(heights * 3 * c.timeouts.commit_ms);
                    let t0 = wall_ms();
                    let r = crate::world::run(c)?;
                    let wall = ((wall_ms() - t0) as f64 / 1000.0).max(1e-3);
                    if !r.ok() {
                        return Err(format!("bench run broke invariants: {:?}", r.violations));
                    }
                    rates.push(r.heights as f64 / wall);
                    ratios.push(r.virtual_ms as f64 / 1000.0 / wall);
                    walls.push(wall * 1000.0);
                }
                let (rate, ratio) = (median(rates), median(ratios));
                let digits = |x: f64| if x < 10.0 { 1 } else { 0 };
                println!(
                    "{:>10} {:>9} {:>14.*} {:>15.*}x {:>12.0}",
                    n,
                    verify.name(),
                    digits(rate),
                    rate,
                    digits(ratio),
                    ratio,
                    median(walls)
                );
            }
        }
    }
    if a.speed_only {
        return Ok(0);
    }
    println!(
        "\nThroughput under a partition (7 validators, 500 tx/s of 100 bytes, 2/5 split at 20 s, heal at 40 s, 60 s):"
    );
    let mut c = SimConfig::partition_workload(500, 20_000, 40_000, 60_000);
    c.timeouts.commit_ms = 200;
    c.workload.tx_bytes = 100;
    c.network.latency = Latency::Uniform { min_ms: 5, max_ms: 25 };
    let t0 = wall_ms();
    let r = crate::world::run(c)?;
    let wall = wall_ms() - t0;
    println!(
        "{:<8} {:>14} {:>10} {:>10} {:>10}",
        "phase", "committed tx/s", "p50 ms", "p99 ms", "heights"
    );
    for (name, lo, hi) in [
        ("before", 0u64, 20_000u64),
        ("during", 20_000, 40_000),
        ("after", 40_000, 60_000),
    ] {
        let mut lat: Vec<u64> = r
            .tx_latencies
            .iter()
            .filter(|(t, _)| (lo..hi).contains(t))
            .map(|(_, l)| *l)
            .collect();
        lat.sort_unstable();
        let heights = r.decisions.iter().filter(|(t, _)| (lo..hi).contains(t)).count();
        println!(
            "{:<8} {:>14.0} {:>10} {:>10} {:>10}",
            name,
            lat.len() as f64 / ((hi - lo) as f64 / 1000.0),
            percentile(&lat, 50),
            percentile(&lat, 99),
            heights
        );
    }
    println!(
        "invariants: {}; wall {wall} ms for 60 s virtual",
        if r.ok() { "all held" } else { "BROKEN" }
    );
    Ok(if r.ok() { 0 } else { 1 })
}

/// An in-memory trace sink for drawing pictures of a run.
#[derive(Clone, Default)]
struct SharedBuf(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);
impl std::io::Write for SharedBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn parse_window(s: &str) -> Result<crate::picture::Window, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("--window-ms `{s}`: expected FROM-TO in milliseconds, e.g. 0-2000"))?;
    let p = |x: &str| {
        x.trim()
            .parse::<u64>()
            .map_err(|_| format!("--window-ms `{s}`: expected whole milliseconds"))
    };
    let w = crate::picture::Window {
        from_ms: p(a)?,
        to_ms: p(b)?,
    };
    if w.to_ms <= w.from_ms {
        return Err(format!("--window-ms `{s}`: TO must be after FROM"));
    }
    Ok(w)
}

fn draw(text: &str, svg: Option<&std::path::Path>, plot: Option<&std::path::Path>, window: &str) -> Result<(), String> {
    let events = crate::picture::parse_trace(text)?;
    if let Some(p) = svg {
        let w = parse_window(window)?;
        std::fs::write(p, crate::picture::space_time_svg(&events, &w)).map_err(|e| format!("{}: {e}", p.display()))?;
        println!("picture         {} (space-time, {window} ms)", p.display());
    }
    if let Some(p) = plot {
        std::fs::write(p, crate::picture::height_plot_svg(&events)).map_err(|e| format!("{}: {e}", p.display()))?;
        println!("plot            {} (height and throughput over time)", p.display());
    }
    Ok(())
}

fn cmd_plot(a: &PlotArgs) -> Result<i32, String> {
    if a.out.is_none() && a.svg.is_none() {
        return Err("nothing to draw: give --out PLOT.svg and/or --svg DIAGRAM.svg".into());
    }
    let text =
        std::fs::read_to_string(&a.trace).map_err(|e| format!("{}: cannot read trace: {e}", a.trace.display()))?;
    draw(&text, a.svg.as_deref(), a.out.as_deref(), &a.window_ms).map_err(|e| format!("{}: {e}", a.trace.display()))?;
    Ok(0)
}
