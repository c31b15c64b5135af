//! `tendr sim`.
use clap::Args;

#[derive(Args, Debug)]
pub struct SimArgs {}

pub fn run(_args: SimArgs) -> i32 {
    eprintln!("tendr sim: not built yet");
    2
}
