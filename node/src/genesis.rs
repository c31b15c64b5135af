//! `genesis.json`: chain id, genesis time, the genesis validators, consensus parameters and the
//! validator admission policy. Its hash (SHA-256 of the compact JSON of the parsed file, field
//! order fixed by the struct) identifies the network: peers with another hash are refused.
//! Its `app_hash` is the application's ([`AppFactory::initial_app_hash`]), so a genesis made
//! for one application is refused by a node running another.

use crate::app::AppFactory;
use crate::error::{CliError, CliResult};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tendr_core::chain::ChainState;
use tendr_core::crypto::{sha256, PublicKey};
use tendr_core::limits::{MAX_BLOCK_BYTES, MAX_BLOCK_TXS, MAX_CHAIN_ID_BYTES, MAX_VALIDATORS};
use tendr_core::types::{Hash, TimeMs, VotingPower};
use tendr_core::{TimeoutConfig, ValidatorSet};

/// The only admission policy the framework implements ([`tendr_core::governance`]): a
/// validator-set change takes effect once validators holding more than 2/3 of the current
/// power approved it.
pub const POLICY_SUPERMAJORITY: &str = "validators-over-two-thirds";
pub const DEFAULT_POWER: u64 = 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisValidator {
    pub name: String,
    pub address: String,
    pub pub_key: String,
    pub power: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusParams {
    pub timeouts: TimeoutConfig,
    pub max_block_txs: u64,
    pub max_block_bytes: u64,
    pub max_validators: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Genesis {
    pub chain_id: String,
    /// RFC 3339, UTC, milliseconds.
    pub genesis_time: String,
    pub validators: Vec<GenesisValidator>,
    pub consensus_params: ConsensusParams,
    pub admission_policy: String,
    /// The application's hash before the first block.
    pub app_hash: String,
}

/// A genesis whose contents were checked.
#[derive(Debug, Clone)]
pub struct LoadedGenesis {
    pub genesis: Genesis,
    pub hash: Hash,
    pub time: TimeMs,
    pub validators: ValidatorSet,
    /// The application's hash before the first block (checked against the factory's).
    pub app_hash: Hash,
}

impl LoadedGenesis {
    pub fn chain_state(&self) -> ChainState {
        ChainState::genesis(
            &self.genesis.chain_id,
            self.validators.clone(),
            self.app_hash,
            self.time,
        )
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn format_time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

impl Genesis {
    /// A new genesis with the given validators (name, key, power), for the application that
    /// `app_hash` is the initial hash of ([`AppFactory::initial_app_hash`]).
    pub fn new(
        chain_id: &str,
        time_ms: u64,
        validators: &[(String, PublicKey, u64)],
        timeouts: TimeoutConfig,
        app_hash: Hash,
    ) -> Self {
        Genesis {
            chain_id: chain_id.to_string(),
            genesis_time: format_time(time_ms),
            validators: validators
                .iter()
                .map(|(name, pk, power)| GenesisValidator {
                    name: name.clone(),
                    address: pk.address().to_string(),
                    pub_key: hex::encode(pk.0),
                    power: *power,
                })
                .collect(),
            consensus_params: ConsensusParams {
                timeouts,
                max_block_txs: MAX_BLOCK_TXS as u64,
                max_block_bytes: MAX_BLOCK_BYTES as u64,
                max_validators: MAX_VALIDATORS as u64,
            },
            admission_policy: POLICY_SUPERMAJORITY.into(),
            app_hash: app_hash.to_hex(),
        }
    }

    pub fn hash(&self) -> Hash {
        sha256(&serde_json::to_vec(self).expect("genesis serialises"))
    }

    pub fn to_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("genesis serialises") + "\n"
    }

    /// Checks everything that can be wrong in a genesis someone handed us, including that its
    /// `app_hash` is the initial hash of the application `app` builds.
    pub fn check(self, path: &Path, app: &impl AppFactory) -> CliResult<LoadedGenesis> {
        let bad =
            |field: &str, msg: String| CliError::input(format!("genesis `{}`: field `{field}`: {msg}", path.display()));
        if self.chain_id.is_empty() || self.chain_id.len() > MAX_CHAIN_ID_BYTES {
            return Err(bad("chain_id", format!("must be 1-{MAX_CHAIN_ID_BYTES} bytes")));
        }
        let t = humantime::parse_rfc3339(&self.genesis_time).map_err(|e| {
            bad(
                "genesis_time",
                format!(
                    "`{}`: {e}; expected RFC 3339 UTC like 2026-01-31T12:00:00.000Z",
                    self.genesis_time
                ),
            )
        })?;
        let time = t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut members = Vec::new();
        for (i, v) in self.validators.iter().enumerate() {
            let f = |n: &str| format!("validators[{i}].{n}");
            let pk = PublicKey::from_hex(v.pub_key.trim_start_matches("0x"))
                .map_err(|e| bad(&f("pub_key"), format!("not a public key ({e})")))?;
            if pk.address().to_string() != v.address {
                return Err(bad(
                    &f("address"),
                    format!(
                        "`{}` does not belong to the public key; expected `{}`",
                        v.address,
                        pk.address()
                    ),
                ));
            }
            members.push((pk, VotingPower(v.power)));
        }
        let validators = ValidatorSet::new(members).map_err(|e| bad("validators", e.to_string()))?;
        if self.admission_policy != POLICY_SUPERMAJORITY {
            return Err(bad(
                "admission_policy",
                format!(
                    "`{}` is not supported; expected `{POLICY_SUPERMAJORITY}`",
                    self.admission_policy
                ),
            ));
        }
        let app_hash = app.initial_app_hash(&self.chain_id);
        if self.app_hash != app_hash.to_hex() {
            return Err(bad(
                "app_hash",
                format!(
                    "`{}` is not this application's initial hash for this chain id (`{}`): the genesis \
                     was made for another application (or edited); use the genesis.json of this \
                     application's network",
                    self.app_hash,
                    app_hash.to_hex()
                ),
            ));
        }
        let tc = &self.consensus_params.timeouts;
        if tc.propose_ms == 0 || tc.prevote_ms == 0 || tc.precommit_ms == 0 || tc.rebroadcast_ms == 0 {
            return Err(bad(
                "consensus_params.timeouts",
                "propose, prevote, precommit and rebroadcast must be at least 1 ms".into(),
            ));
        }
        Ok(LoadedGenesis {
            hash: self.hash(),
            genesis: self,
            time: TimeMs(time),
            validators,
            app_hash,
        })
    }
}

/// Reads and checks `genesis.json` for the application `app` builds.
pub fn load(path: &Path, app: &impl AppFactory) -> CliResult<LoadedGenesis> {
    let text = crate::config::read_file("genesis", path)?;
    let g: Genesis = crate::config::parse_json("genesis", path, &text)?;
    g.check(path, app)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tendr_core::crypto::PrivateKey;
    use tendr_kv::KvApp;

    fn sample() -> Genesis {
        let k = PrivateKey::from_seed(b"g");
        Genesis::new(
            "tendr-test",
            1_700_000_000_123,
            &[("node1".into(), k.public_key(), 10)],
            TimeoutConfig::default(),
            KvApp::new.initial_app_hash("tendr-test"),
        )
    }

    #[test]
    fn round_trip_keeps_the_hash() {
        let g = sample();
        let p = Path::new("genesis.json");
        let back: Genesis = crate::config::parse_json("genesis", p, &g.to_pretty()).unwrap();
        let l = back.check(p, &KvApp::new).unwrap();
        assert_eq!(l.hash, g.hash());
        assert_eq!(l.time, TimeMs(1_700_000_000_123));
        assert_eq!(l.validators.len(), 1);
    }

    #[test]
    fn malformed_genesis_is_named() {
        let p = Path::new("genesis.json");
        let mut g = sample();
        g.validators[0].address = "0x1234".into();
        assert!(g
            .clone()
            .check(p, &KvApp::new)
            .unwrap_err()
            .message
            .contains("validators[0].address"));
        let mut g = sample();
        g.validators[0].power = 0;
        assert!(g
            .check(p, &KvApp::new)
            .unwrap_err()
            .message
            .contains("zero voting power"));
        let mut g = sample();
        g.validators.clear();
        assert!(g
            .check(p, &KvApp::new)
            .unwrap_err()
            .message
            .contains("field `validators`"));
        let mut g = sample();
        g.admission_policy = "anyone".into();
        assert!(g
            .check(p, &KvApp::new)
            .unwrap_err()
            .message
            .contains("admission_policy"));
        let mut g = sample();
        g.genesis_time = "yesterday".into();
        assert!(g.check(p, &KvApp::new).unwrap_err().message.contains("genesis_time"));
        let mut g = sample();
        g.app_hash = "00".into();
        assert!(g.check(p, &KvApp::new).unwrap_err().message.contains("app_hash"));
    }

    /// An application other than the one the genesis was made for.
    struct Other;
    impl tendr_core::traits::Application for Other {
        fn initial_app_hash(&self) -> Hash {
            Hash([7; 32])
        }
        fn check_tx(&self, _: &[u8]) -> Result<(), String> {
            Ok(())
        }
        fn validate_block(&self, _: &tendr_core::types::Block) -> bool {
            true
        }
        fn execute_block(
            &mut self,
            _: &tendr_core::types::Block,
            _: &ValidatorSet,
        ) -> Result<tendr_core::traits::ExecResult, tendr_core::traits::AppError> {
            unimplemented!("never executed by these tests")
        }
    }

    #[test]
    fn the_app_hash_comes_from_the_factory() {
        let p = Path::new("genesis.json");
        let e = sample().check(p, &|_: &str| Other).unwrap_err().message;
        assert!(
            e.contains("field `app_hash`") && e.contains("another application"),
            "{e}"
        );
        let k = PrivateKey::from_seed(b"g");
        let g = Genesis::new(
            "c",
            1,
            &[("n".into(), k.public_key(), 10)],
            TimeoutConfig::default(),
            Hash([7; 32]),
        );
        let l = g.check(p, &|_: &str| Other).unwrap();
        assert_eq!(l.chain_state().app_hash, Hash([7; 32]));
    }
}
