//! `tendr-sim`: a whole network of tendr validators in one process, on virtual time.
pub mod cli;
