//! What a simulation run is: validators, adversaries, network model, fault timeline, workload.
//! A config is plain data (TOML or JSON); `SimConfig::from_seed` draws one from a seed, so a
//! seed describes its whole run.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use tendr_core::state_machine::TimeoutKind;
use tendr_core::TimeoutConfig;

/// A probability as a ratio of integers, written `[num, den]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ratio(pub u32, pub u32);

impl Ratio {
    pub const ZERO: Ratio = Ratio(0, 1);
}

impl Default for Ratio {
    fn default() -> Self {
        Ratio::ZERO
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Latency {
    Fixed {
        ms: u64,
    },
    Uniform {
        min_ms: u64,
        max_ms: u64,
    },
    /// Mean plus a symmetric jitter drawn as the average of four uniforms (close to normal).
    Normal {
        mean_ms: u64,
        jitter_ms: u64,
    },
    /// Usually `base_ms` (+ up to 20% jitter); with probability `tail`, up to `tail_ms` more.
    LongTail {
        base_ms: u64,
        tail_ms: u64,
        tail: Ratio,
    },
}

impl Default for Latency {
    fn default() -> Self {
        Latency::Uniform { min_ms: 5, max_ms: 20 }
    }
}

impl Latency {
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match *self {
            Latency::Fixed { ms } => ms,
            Latency::Uniform { min_ms, max_ms } => rng.range(min_ms, max_ms),
            Latency::Normal { mean_ms, jitter_ms } => {
                let s: u64 = (0..4).map(|_| rng.range(0, 2 * jitter_ms)).sum::<u64>() / 4;
                (mean_ms + s).saturating_sub(jitter_ms)
            }
            Latency::LongTail { base_ms, tail_ms, tail } => {
                let b = base_ms + rng.range(0, base_ms / 5);
                if rng.chance(tail.0, tail.1) {
                    b + rng.range(0, tail_ms)
                } else {
                    b
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NetworkModel {
    #[serde(default)]
    pub latency: Latency,
    /// Each message is lost with this probability.
    #[serde(default)]
    pub loss: Ratio,
    /// Each message is delivered twice with this probability.
    #[serde(default)]
    pub duplicate: Ratio,
    /// Each message is held back (by up to 5x the latency) with this probability: reordering.
    #[serde(default)]
    pub reorder: Ratio,
    /// Per-link bandwidth in bytes per millisecond (0: unlimited).
    #[serde(default)]
    pub bandwidth_bytes_per_ms: u64,
}

/// Byzantine behaviours. Each is a small wrapper around an honest node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Sends nothing.
    Silent,
    /// As proposer, two different proposals to the two halves; votes split the same way.
    Equivocate,
    /// Different votes to the two halves of the network.
    SplitVote,
    /// Forgets its lock and votes at each new round (wipes its consensus log).
    Amnesia,
    /// Every vote re-signed as nil.
    AlwaysNil,
    /// Every signature it sends is corrupted.
    BadSignatures,
    /// Honest, plus garbage, truncated and oversized byte strings.
    Garbage,
    /// Honest, plus signed votes for far heights and rounds.
    FutureSpam,
    /// Honest, plus re-sends of old messages.
    Replay,
    /// Two honest engines share this key, each seeing half of the network.
    Twin,
    /// Honest, plus with each of its votes a lone signed nil prevote and precommit of a higher
    /// round (1-3 ahead): less than f+1, so L55 must not move anyone.
    RoundJump,
    /// Honest, plus with each of its votes a proposal for the next round although it is not
    /// that round's proposer (a copy of the height's latest block, signed as its own). Needs
    /// signatures: in trusted mode it sends lone higher-round votes instead (`round-jump`).
    OutOfTurn,
    /// A user's own adversary, given in code (`Simulation::adversary`); never drawn by a seed.
    Custom,
}

impl Behaviour {
    pub const ALL: [Behaviour; 12] = [
        Behaviour::Silent,
        Behaviour::Equivocate,
        Behaviour::SplitVote,
        Behaviour::Amnesia,
        Behaviour::AlwaysNil,
        Behaviour::BadSignatures,
        Behaviour::Garbage,
        Behaviour::FutureSpam,
        Behaviour::Replay,
        Behaviour::Twin,
        Behaviour::RoundJump,
        Behaviour::OutOfTurn,
    ];
    /// The behaviours a seed drew first (the `config` stream); later ones come from a second
    /// stream (see [`SimConfig::from_seed`]), so that a seed keeps the run it named before.
    const FIRST_DRAWN: usize = 10;
    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl std::str::FromStr for Behaviour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
            let names: Vec<String> = Behaviour::ALL.iter().map(|b| b.name()).collect();
            format!("unknown behaviour `{s}`; one of: {}", names.join(", "))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Byzantine {
    pub node: u32,
    pub behaviour: Behaviour,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultKind {
    /// Only nodes in the same group hear each other (nodes in no group are isolated).
    Partition {
        groups: Vec<Vec<u32>>,
    },
    /// Messages from `from` to `to` are dropped; the other direction works.
    OneWay {
        from: Vec<u32>,
        to: Vec<u32>,
    },
    Isolate {
        node: u32,
    },
    /// Removes every partition.
    Heal,
    Crash {
        node: u32,
    },
    /// Brings a crashed or halted node back (a failed disk is replaced).
    Restart {
        node: u32,
    },
    /// The node's disk fails: every write from now on returns an error. The node halts at
    /// its first failed write, having sent nothing that depends on it; `restart` repairs it.
    DiskFail {
        node: u32,
    },
    /// The node's clock reads `skew_ms` off and runs `drift_ppm` parts per million fast/slow.
    Clock {
        node: u32,
        skew_ms: i64,
        drift_ppm: i64,
    },
    /// Every message to and timer of the node is delayed by `delay_ms` (0 ends it).
    Slow {
        node: u32,
        delay_ms: u64,
    },
    /// Validators holding more than 2/3 of the power approve setting `node`'s power (0 removes).
    SetPower {
        node: u32,
        power: u64,
    },
    /// A partition of the network's slots rather than its nodes, for Twins: slots are the
    /// node numbers in order, with a twin's second copy right after its first (so with a twin
    /// at node 1 of 4: slots 0, 1, 1', 2, 3 are numbers 0-4). Only slots in the same group hear
    /// each other; a twin's copies then hear whom their groups say, not a fixed half of the
    /// network, for the rest of the run (a `heal` joins every slot).
    SlotPartition {
        groups: Vec<Vec<u32>>,
    },
    /// Swizzle-clogging (FoundationDB's): `nodes` nodes, drawn by the run's seed, are clogged
    /// one by one, `step_ms` apart, then unclogged one by one in another drawn order. A clogged
    /// node's links hold every message to or from it until it is unclogged (nothing is lost:
    /// the backlog arrives at once).
    Swizzle {
        nodes: u32,
        step_ms: u64,
    },
}

impl FaultKind {
    /// How long the fault keeps acting after it starts (a swizzle unclogs its last node
    /// `2 * nodes * step_ms` after it starts; every other fault acts at once).
    pub fn duration_ms(&self) -> u64 {
        match self {
            FaultKind::Swizzle { nodes, step_ms } => 2 * u64::from(*nodes) * step_ms,
            _ => 0,
        }
    }
}

/// BUGGIFY (FoundationDB's): rare, legal but unusual behaviour of the simulated world, each
/// knob enabled per run by the seed (`SimConfig::from_seed`) and printed with the report.
/// They live in the simulator only: a real node pays nothing for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Buggify {
    /// An honest broadcast reaches only as many peers as make, with the sender, just over 2/3
    /// of the power (the least a correct protocol may count on; re-broadcasts fill the rest).
    #[serde(default)]
    pub quorum_sends: Ratio,
    /// A delivered message is delivered once more, 1-5 s later (an old message re-delivered).
    #[serde(default)]
    pub redeliver_late: Ratio,
    /// At a sync with writes pending, an honest node crashes just before the sync (the persist
    /// delayed to the last moment, then lost) and restarts 50-500 ms later.
    #[serde(default)]
    pub crash_before_sync: Ratio,
    /// At a timer, an honest node crashes and restarts 50-500 ms later (in the middle of a
    /// height, wherever it was).
    #[serde(default)]
    pub restart_mid_height: Ratio,
}

/// At most this many buggified crashes per run, so a run with faults still ends.
pub const MAX_BUGGIFY_CRASHES: u32 = 4;

impl Buggify {
    pub fn any(&self) -> bool {
        [
            self.quorum_sends,
            self.redeliver_late,
            self.crash_before_sync,
            self.restart_mid_height,
        ]
        .iter()
        .any(|r| r.0 > 0)
    }

    /// The knobs that are on, as `name num/den`.
    pub fn describe(&self) -> String {
        let knobs = [
            ("quorum-sends", self.quorum_sends),
            ("redeliver-late", self.redeliver_late),
            ("crash-before-sync", self.crash_before_sync),
            ("restart-mid-height", self.restart_mid_height),
        ];
        let on: Vec<String> = knobs
            .iter()
            .filter(|(_, r)| r.0 > 0)
            .map(|(n, r)| format!("{n} {}/{}", r.0, r.1))
            .collect();
        if on.is_empty() {
            "off".into()
        } else {
            on.join(", ")
        }
    }

    /// Each knob on with probability 1/2, at a rare rate.
    fn draw(rng: &mut Rng) -> Buggify {
        let mut knob = |num: u32, den: u32| if rng.chance(1, 2) { Ratio(num, den) } else { Ratio::ZERO };
        Buggify {
            quorum_sends: knob(1, 10),
            redeliver_late: knob(1, 200),
            crash_before_sync: knob(1, 500),
            restart_mid_height: knob(1, 2000),
        }
    }
}

/// A fault at a virtual time. (Unknown fields are caught by `FaultKind`; serde cannot deny
/// them here because of the flattened tag.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub at_ms: u64,
    #[serde(flatten)]
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyMode {
    /// Every node verifies every signature it has not verified before (as a real node does).
    #[default]
    Full,
    /// One cache for the whole run: each distinct signature is verified once.
    Cached,
    /// No verification at all. Only for large sweeps; never available to a real node, and
    /// refused together with adversaries that forge signatures.
    Trusted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Transactions submitted per virtual second, spread over honest nodes.
    #[serde(default)]
    pub txs_per_sec: u32,
    #[serde(default = "default_tx_bytes")]
    pub tx_bytes: u32,
    /// Write keys `k0..k{keys-1}` over and over (bounded application state); 0: every
    /// transaction writes a new key.
    #[serde(default)]
    pub keys: u32,
    /// Closed-loop clients, as real load generators are (`tendr bench-rpc`): each node is sent
    /// `txs_per_sec / nodes` at most, and never more than this many of its transactions are
    /// uncommitted at once; a node whose clients wait gets nothing more until some commit.
    /// 0: open loop (`txs_per_sec` whatever happens).
    #[serde(default)]
    pub window_per_node: u32,
}

fn default_tx_bytes() -> u32 {
    64
}

/// How the simulated disks behave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageModel {
    /// A crash loses every write the node had not synced yet (it syncs before it sends).
    #[serde(default = "yes")]
    pub lose_unsynced: bool,
    /// Each node snapshots its chain and application every this many heights (0: never)...
    #[serde(default = "default_snapshot_every")]
    pub snapshot_every: u64,
    /// ...and keeps only this many decided blocks below the newest (0: all), so memory stays
    /// flat as heights grow. A node further behind than this cannot catch up from its peers.
    #[serde(default = "default_retain")]
    pub retain_blocks: u64,
    /// A node that (re)starts behind state-syncs: it trusts the newest block an honest node
    /// has decided (as an operator copies a trusted height and hash) and restores a peer's
    /// snapshot proven by it, instead of replaying blocks its peers may no longer keep.
    #[serde(default)]
    pub state_sync: bool,
}

fn yes() -> bool {
    true
}
fn default_snapshot_every() -> u64 {
    100
}
fn default_retain() -> u64 {
    1000
}

impl Default for StorageModel {
    fn default() -> Self {
        StorageModel {
            lose_unsynced: true,
            snapshot_every: default_snapshot_every(),
            retain_blocks: default_retain(),
            state_sync: false,
        }
    }
}

/// What a scenario is expected to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SafetyExpect {
    /// Every invariant holds (the run stays within f < n/3, or shows it does not matter).
    #[default]
    Holds,
    /// Agreement breaks (beyond the assumption) and the culprits are convicted by evidence.
    Breaks,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub safety: SafetyExpect,
    /// Every honest running validator decides within this long after the last fault
    /// (virtual ms). Sets `liveness_bound_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recover_within_ms: Option<u64>,
    /// Validators that must be convicted when safety breaks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub culprits: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// What the scenario shows (scenario files).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Seeds `tendr sim check` runs this scenario with (default: 1, 2, 3).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<Expect>,
    #[serde(default)]
    pub seed: u64,
    pub validators: u32,
    /// Voting powers (empty: all 1).
    #[serde(default)]
    pub powers: Vec<u64>,
    /// Non-validator nodes that start with power 0 (they follow, and may be added).
    #[serde(default)]
    pub spares: u32,
    #[serde(default)]
    pub byzantine: Vec<Byzantine>,
    #[serde(default)]
    pub network: NetworkModel,
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Stop once every honest running node decided this many heights (and liveness is shown).
    #[serde(default = "default_heights")]
    pub heights: u64,
    /// Hard stop in virtual time.
    #[serde(default = "default_max_time")]
    pub max_time_ms: u64,
    #[serde(default = "sim_timeouts")]
    pub timeouts: TimeoutConfig,
    #[serde(default)]
    pub workload: Workload,
    #[serde(default)]
    pub storage: StorageModel,
    #[serde(default)]
    pub verify: VerifyMode,
    /// After the last fault, every honest running node must decide within this virtual time.
    #[serde(default = "default_liveness")]
    pub liveness_bound_ms: u64,
    /// A planted core bug (needs the `planted-bugs` feature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planted: Option<String>,
    /// Deliver every message as a real node receives it: encoded by the wire codec, refused
    /// above the frame limit, and decoded by the node's one fallible decoder
    /// (`Node::on_bytes`). Off by default: the message values themselves are delivered, which
    /// is faster and, since decoding an encoded message gives it back, decides the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wire_codec: bool,
    /// Rare, legal but unusual behaviour of the world (see [`Buggify`]); off by default.
    #[serde(default, skip_serializing_if = "is_default")]
    pub buggify: Buggify,
    /// Keep the time of every decided height and the latency of every committed transaction
    /// in the report (`Report::decisions`, `Report::tx_latencies`), for per-phase statistics.
    /// Off unless asked for: both grow with the run, and a long run's memory must not.
    #[serde(skip)]
    pub timeline: bool,
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

fn default_heights() -> u64 {
    20
}
fn default_max_time() -> u64 {
    600_000
}
fn default_liveness() -> u64 {
    60_000
}

/// Timeouts for simulated networks with tens of milliseconds of latency.
pub fn sim_timeouts() -> TimeoutConfig {
    TimeoutConfig {
        propose_ms: 300,
        propose_delta_ms: 100,
        prevote_ms: 200,
        prevote_delta_ms: 100,
        precommit_ms: 200,
        precommit_delta_ms: 100,
        commit_ms: 100,
        rebroadcast_ms: 500,
        sync_retry_ms: 200,
    }
}

impl VerifyMode {
    /// The name `--verify` takes.
    pub fn name(self) -> &'static str {
        match self {
            VerifyMode::Full => "full",
            VerifyMode::Cached => "cached",
            VerifyMode::Trusted => "trusted",
        }
    }
}

impl SimConfig {
    pub fn new(validators: u32) -> Self {
        SimConfig {
            description: String::new(),
            seeds: vec![],
            expect: None,
            seed: 0,
            validators,
            powers: vec![],
            spares: 0,
            byzantine: vec![],
            network: NetworkModel::default(),
            faults: vec![],
            heights: default_heights(),
            max_time_ms: default_max_time(),
            timeouts: sim_timeouts(),
            workload: Workload::default(),
            storage: StorageModel::default(),
            verify: VerifyMode::Full,
            liveness_bound_ms: default_liveness(),
            planted: None,
            wire_codec: false,
            buggify: Buggify::default(),
            timeline: false,
        }
    }

    /// Sets the verification mode. Trusted mode cannot tell a forged signature from a real
    /// one, so a drawn `bad-signatures` adversary sends garbage instead, and an `out-of-turn`
    /// one (whose proposals only a signature check can refuse) sends lone higher-round votes.
    pub fn set_verify(&mut self, mode: VerifyMode) {
        self.verify = mode;
        if mode == VerifyMode::Trusted {
            for b in &mut self.byzantine {
                if b.behaviour == Behaviour::BadSignatures {
                    b.behaviour = Behaviour::Garbage;
                }
                if b.behaviour == Behaviour::OutOfTurn {
                    b.behaviour = Behaviour::RoundJump;
                }
            }
        }
    }

    pub fn power(&self, i: u32) -> u64 {
        if i >= self.validators {
            return 0;
        }
        self.powers.get(i as usize).copied().unwrap_or(1)
    }

    pub fn total_power(&self) -> u64 {
        (0..self.validators).map(|i| self.power(i)).sum()
    }

    pub fn byzantine_power(&self) -> u64 {
        self.byzantine.iter().map(|b| self.power(b.node)).sum()
    }

    /// Whether the run stays within the protocol's assumption (Byzantine power below 1/3).
    pub fn within_assumption(&self) -> bool {
        3 * self.byzantine_power() < self.total_power()
    }

    /// Whether Tendermint promises liveness for this run: more than 2/3 of the power honest and
    /// running after the last fault. Byzantine validators are faulty, and so is a node that
    /// crashed or whose disk failed without a later restart.
    pub fn liveness_expected(&self) -> bool {
        let mut faults: Vec<&Fault> = self.faults.iter().collect();
        faults.sort_by_key(|f| f.at_ms);
        let mut down = std::collections::BTreeSet::new();
        for f in faults {
            match f.kind {
                FaultKind::Crash { node } | FaultKind::DiskFail { node } => {
                    down.insert(node);
                }
                FaultKind::Restart { node } => {
                    down.remove(&node);
                }
                _ => {}
            }
        }
        let faulty: u64 = (0..self.validators)
            .filter(|i| down.contains(i) || self.behaviour(*i).is_some())
            .map(|i| self.power(i))
            .sum();
        3 * faulty < self.total_power()
    }

    pub fn behaviour(&self, node: u32) -> Option<Behaviour> {
        self.byzantine.iter().find(|b| b.node == node).map(|b| b.behaviour)
    }

    /// Virtual time the last fault ends (0 when none): the liveness phase starts there.
    pub fn faults_end_ms(&self) -> u64 {
        self.faults
            .iter()
            .map(|f| f.at_ms + f.kind.duration_ms())
            .max()
            .unwrap_or(0)
    }

    /// Checks that the config makes sense; the message names the field and the fix.
    pub fn validate(&self) -> Result<(), String> {
        let nodes = self.validators + self.spares;
        if self.validators == 0 || self.validators > 1000 {
            return Err(format!("`validators` = {}: must be 1-1000", self.validators));
        }
        if !self.powers.is_empty() && self.powers.len() != self.validators as usize {
            return Err(format!(
                "`powers` has {} entries for {} validators",
                self.powers.len(),
                self.validators
            ));
        }
        if self.powers.contains(&0) {
            return Err("`powers`: every validator needs power >= 1 (use `spares` for non-validators)".into());
        }
        for b in &self.byzantine {
            if b.node >= self.validators {
                return Err(format!(
                    "`byzantine`: node {} is not a validator (0-{})",
                    b.node,
                    self.validators - 1
                ));
            }
            if self.verify == VerifyMode::Trusted
                && matches!(b.behaviour, Behaviour::BadSignatures | Behaviour::OutOfTurn)
            {
                return Err(format!(
                    "`verify = trusted` cannot be combined with the {} behaviour (only a signature check refuses it)",
                    b.behaviour.name()
                ));
            }
        }
        let node_ok = |n: &u32| *n < nodes;
        for f in &self.faults {
            let ok = match &f.kind {
                FaultKind::Partition { groups } => groups.iter().flatten().all(node_ok),
                FaultKind::OneWay { from, to } => from.iter().chain(to).all(node_ok),
                FaultKind::Isolate { node }
                | FaultKind::Crash { node }
                | FaultKind::Restart { node }
                | FaultKind::DiskFail { node }
                | FaultKind::Clock { node, .. }
                | FaultKind::Slow { node, .. }
                | FaultKind::SetPower { node, .. } => node_ok(node),
                FaultKind::Heal => true,
                FaultKind::SlotPartition { groups } => {
                    let twins = self.byzantine.iter().filter(|b| b.behaviour == Behaviour::Twin).count() as u32;
                    groups.iter().flatten().all(|s| *s < nodes + twins)
                }
                FaultKind::Swizzle { nodes: k, step_ms } => {
                    if *step_ms == 0 || *k == 0 {
                        return Err(format!("swizzle at {} ms: needs nodes >= 1 and step_ms >= 1", f.at_ms));
                    }
                    *k <= nodes
                }
            };
            if !ok {
                return Err(format!("fault at {} ms names a node outside 0-{}", f.at_ms, nodes - 1));
            }
        }
        if let Some(p) = &self.planted {
            #[cfg(feature = "planted-bugs")]
            p.parse::<tendr_core::PlantedBug>()?;
            #[cfg(not(feature = "planted-bugs"))]
            return Err(format!(
                "`planted = \"{p}\"` needs a build with planted bugs: cargo run --features tendr-sim/planted-bugs -- sim ..."
            ));
        }
        let b = &self.buggify;
        for r in [
            self.network.loss,
            self.network.duplicate,
            self.network.reorder,
            b.quorum_sends,
            b.redeliver_late,
            b.crash_before_sync,
            b.restart_mid_height,
        ] {
            if r.1 == 0 || r.0 > r.1 {
                return Err(format!(
                    "probability [{}, {}] is not a ratio num/den with 0 <= num <= den, den > 0",
                    r.0, r.1
                ));
            }
        }
        Ok(())
    }

    /// A transaction workload through a partition that heals: 7 validators, nodes 0 and 1 cut
    /// off from the other five between `split_ms` and `heal_ms`, the run ending at `end_ms`.
    /// Used by `tendr sim bench` and the criterion bench.
    pub fn partition_workload(txs_per_sec: u32, split_ms: u64, heal_ms: u64, end_ms: u64) -> SimConfig {
        let mut c = SimConfig::new(7);
        c.seed = 1;
        c.heights = u64::MAX;
        c.max_time_ms = end_ms;
        c.workload.txs_per_sec = txs_per_sec;
        c.timeline = true;
        c.faults = vec![
            Fault {
                at_ms: split_ms,
                kind: FaultKind::Partition {
                    groups: vec![vec![0, 1], vec![2, 3, 4, 5, 6]],
                },
            },
            Fault {
                at_ms: heal_ms,
                kind: FaultKind::Heal,
            },
        ];
        c
    }

    /// Draws a whole run from `seed`: size, Byzantine nodes (at most f, mixed behaviours),
    /// network model, and a fault timeline of partitions and crashes that ends with a heal.
    pub fn from_seed(seed: u64, validators: Option<u32>) -> SimConfig {
        let mut rng = Rng::stream(seed, "config");
        let n = validators.unwrap_or(*rng.pick(&[4u32, 7, 10]));
        let mut c = SimConfig::new(n);
        c.seed = seed;
        c.heights = 8;
        if rng.chance(1, 2) {
            c.powers = (0..n).map(|_| rng.range(1, 10)).collect();
        }
        // Byzantine nodes, keeping their power below a third of the total.
        let f = (n - 1) / 3;
        let byz = rng.range(0, f as u64) as u32;
        let mut nodes: Vec<u32> = (0..n).collect();
        for _ in 0..byz {
            let i = rng.below(nodes.len() as u64) as usize;
            let node = nodes.remove(i);
            let behaviour = *rng.pick(&Behaviour::ALL[..Behaviour::FIRST_DRAWN]);
            c.byzantine.push(Byzantine { node, behaviour });
            if !c.within_assumption() {
                c.byzantine.pop();
            }
        }
        c.network.latency = match rng.below(3) {
            0 => Latency::Uniform {
                min_ms: 2,
                max_ms: rng.range(5, 60),
            },
            1 => Latency::Normal {
                mean_ms: rng.range(10, 50),
                jitter_ms: rng.range(1, 20),
            },
            _ => Latency::LongTail {
                base_ms: rng.range(5, 30),
                tail_ms: rng.range(100, 800),
                tail: Ratio(1, 20),
            },
        };
        c.network.loss = Ratio(rng.range(0, 10) as u32, 100);
        c.network.duplicate = Ratio(rng.range(0, 5) as u32, 100);
        c.network.reorder = Ratio(rng.range(0, 10) as u32, 100);
        let mut t = 0;
        for _ in 0..rng.range(0, 4) {
            t += rng.range(200, 3000);
            let kind = match rng.below(5) {
                0 => {
                    let cut = rng.range(1, n as u64 - 1) as u32;
                    FaultKind::Partition {
                        groups: vec![(0..cut).collect(), (cut..n).collect()],
                    }
                }
                1 => FaultKind::Isolate {
                    node: rng.below(n as u64) as u32,
                },
                2 => FaultKind::OneWay {
                    from: vec![rng.below(n as u64) as u32],
                    to: (0..n).collect(),
                },
                3 => {
                    let node = rng.below(n as u64) as u32;
                    let kind = if rng.below(2) == 0 {
                        FaultKind::Crash { node }
                    } else {
                        FaultKind::DiskFail { node }
                    };
                    c.faults.push(Fault { at_ms: t, kind });
                    t += rng.range(100, 3000);
                    FaultKind::Restart { node }
                }
                _ => FaultKind::Clock {
                    node: rng.below(n as u64) as u32,
                    skew_ms: rng.range(0, 2000) as i64 - 1000,
                    drift_ppm: rng.range(0, 2000) as i64 - 1000,
                },
            };
            c.faults.push(Fault { at_ms: t, kind });
        }
        if !c.faults.is_empty() {
            t += rng.range(500, 4000);
            c.faults.push(Fault {
                at_ms: t,
                kind: FaultKind::Heal,
            });
        }
        c.draw_extras(t);
        c.liveness_bound_ms = c.liveness_bound_ms.max(c.rotation_bound_ms());
        c.max_time_ms = c.max_time_ms.max(c.faults_end_ms() + c.liveness_bound_ms + 10_000);
        c
    }

    /// What came after the first draws (newer adversaries, swizzle-clogging, BUGGIFY) draws
    /// from its own stream, so the first draws keep their values (a seed's size, network and
    /// fault timeline are what they were) and these come on top: a third of the Byzantine
    /// nodes get a newer behaviour, one run in twelve links slower than the first timeouts, a
    /// quarter of the runs a swizzle within the fault phase (which ends at `t`), half of them
    /// BUGGIFY knobs.
    fn draw_extras(&mut self, t: u64) {
        let mut extra = Rng::stream(self.seed, "config-extras");
        for b in &mut self.byzantine {
            if extra.chance(1, 3) {
                b.behaviour = *extra.pick(&Behaviour::ALL[Behaviour::FIRST_DRAWN..]);
            }
        }
        if extra.chance(1, 12) {
            // Links slower than the first rounds' timeouts: a height is decided only once the
            // timeouts have grown past the latency (the paper's partial synchrony).
            self.network.latency = Latency::Uniform {
                min_ms: 350,
                max_ms: extra.range(400, 600),
            };
        }
        let n = u64::from(self.validators);
        if extra.chance(1, 4) {
            let at_ms = extra.range(0, t.max(3000));
            self.faults.push(Fault {
                at_ms,
                kind: FaultKind::Swizzle {
                    nodes: extra.range(1, n) as u32,
                    step_ms: extra.range(50, 500),
                },
            });
        }
        if extra.chance(1, 2) {
            self.buggify = Buggify::draw(&mut extra);
        }
    }

    /// Virtual time for enough rounds that every honest validator has been proposer once after
    /// the faults end. Tendermint promises a decision after GST only from a round whose
    /// proposer can lead the honest validators to it: when the one honest validator needed
    /// for +2/3 is locked on a value the others never saw a POL for, that is the round it
    /// proposes itself (seed 13301: power 1 of 27, proposer in round 28, 87 s after the heal).
    /// Proposer priorities give a validator of power `p` its turn within `ceil(total / p) + 1`
    /// rounds; two more for the round in progress, and the timeouts grow with the round.
    pub fn rotation_bound_ms(&self) -> u64 {
        let byz: std::collections::BTreeSet<u32> = self.byzantine.iter().map(|b| b.node).collect();
        let min_honest = (0..self.validators)
            .filter(|i| !byz.contains(i))
            .map(|i| self.power(i))
            .min()
            .unwrap_or(1)
            .max(1);
        let rounds = self.total_power().div_ceil(min_honest) + 3;
        let t = &self.timeouts;
        let per_round = |r: u64| {
            [TimeoutKind::Propose, TimeoutKind::Prevote, TimeoutKind::Precommit]
                .into_iter()
                .map(|k| t.duration_ms(k, tendr_core::Round(r as u32)))
                .sum::<u64>()
        };
        (0..rounds).map(per_round).sum::<u64>() + t.commit_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_describes_its_run() {
        assert_eq!(SimConfig::from_seed(5, None), SimConfig::from_seed(5, None));
        let distinct: std::collections::BTreeSet<String> = (0..20)
            .map(|s| format!("{:?}", SimConfig::from_seed(s, None)))
            .collect();
        assert!(distinct.len() > 15);
        for s in 0..200 {
            let c = SimConfig::from_seed(s, None);
            c.validate().unwrap();
            assert!(c.within_assumption(), "seed {s}: at most f Byzantine");
        }
    }

    #[test]
    fn config_roundtrips_through_toml() {
        let c = SimConfig::from_seed(3, Some(7));
        let s = toml::to_string(&c).unwrap();
        let back: SimConfig = toml::from_str(&s).unwrap();
        assert_eq!(back, c);
    }
}
