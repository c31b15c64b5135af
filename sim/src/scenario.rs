//! Scenario files (TOML): a run configuration plus the outcome it is expected to have.

use crate::config::SimConfig;

#[derive(Debug, Clone)]
pub struct Scenario {
    pub config: SimConfig,
}

/// Parses a scenario; errors carry the line, column and field that are wrong.
pub fn parse(text: &str) -> Result<Scenario, String> {
    let config: SimConfig = toml::from_str(text).map_err(|e| e.to_string())?;
    config.validate()?;
    Ok(Scenario { config })
}
