//! The `tendr` command line.

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "tendr",
    version,
    about = "Tendermint BFT consensus: a seeded simulator and real QUIC nodes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Deterministic simulation: run, explore and replay seeded Byzantine scenarios.
    Sim(tendr_sim::cli::SimArgs),
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => tendr_sim::cli::run(args),
    }
}
