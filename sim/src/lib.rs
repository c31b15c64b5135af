//! `tendr-sim`: a whole network of tendr validators in one process, on virtual time,
//! reproducible from one seed, with every safety property checked as it runs.
//!
//! What it does: runs the core's `Node` driver, unchanged, over a virtual clock, a simulated
//! network (latency, loss, duplication, reordering, bandwidth, partitions), in-memory storage
//! that survives crashes, and Byzantine wrappers; checks agreement, validity, commit
//! integrity, no honest double-sign, persist-before-send, accountability and liveness; hashes
//! the whole trace. What it does not do: read the wall clock, the OS random source, or use
//! threads inside a run (parallel exploration runs one seed per thread).
#![forbid(unsafe_code)]

pub mod adversary;
pub mod checker;
pub mod cli;
pub mod config;
pub mod explore;
pub mod picture;
pub mod queue;
pub mod rng;
pub mod scenario;
pub mod simulation;
pub mod trace;
pub mod twins;
pub mod workload;
pub mod world;

pub use adversary::{Adversary, AdversaryCtx, Sends};
pub use checker::{Invariant, Violation};
pub use config::{Behaviour, SimConfig};
pub use rng::Rng;
pub use simulation::{Failure, Simulation, Sweep, SweepResult};
pub use workload::{KvWorkload, Workload, WorkloadCtx};
pub use world::{run, AppInvariant, Payload, Report};
