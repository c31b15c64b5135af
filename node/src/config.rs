//! `tendermint_config.json`: the guide's fields, our own with defaults, and one clear error
//! naming the file, the field and what is expected for anything wrong.
//!
//! The guide's example carries `//` comments (and people add trailing commas); both are
//! removed outside strings before the strict parse (`deny_unknown_fields`).

use crate::error::{CliError, CliResult};
use serde::{Deserialize, Deserializer, Serialize};
use std::io::Read;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use tendr_core::types::Address;

pub const DEFAULT_CONFIG_FILE: &str = "tendermint_config.json";
/// The RPC port is the node's port plus this offset (minus it when that would overflow), so
/// nodes that differ only in `port` also differ in their RPC port.
pub const RPC_PORT_OFFSET: u16 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedNode {
    pub host: String,
    #[serde(deserialize_with = "de_port")]
    pub port: u16,
}

/// Consensus timeouts in milliseconds; each one given overrides the genesis value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutOverrides {
    pub propose_ms: Option<u64>,
    pub prevote_ms: Option<u64>,
    pub precommit_ms: Option<u64>,
    pub delta_ms: Option<u64>,
    pub rebroadcast_ms: Option<u64>,
    pub sync_retry_ms: Option<u64>,
}

/// The RPC's limits (CometBFT's `[rpc]` settings); each one given overrides the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcLimitOverrides {
    pub max_open_connections: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub timeout_broadcast_tx_commit_ms: Option<u64>,
    pub header_timeout_ms: Option<u64>,
    pub body_timeout_ms: Option<u64>,
}

/// The file as written. Paths inside it are relative to the file's folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub node_id: String,
    #[serde(default = "default_host")]
    pub host: String,
    #[serde(deserialize_with = "de_port")]
    pub port: u16,
    /// The guide's "will be populated automatically": the validator set lives in the genesis
    /// and changes only through `add-validator`. Addresses listed here are checked for form and
    /// reported by `start` if they are not validators.
    #[serde(default)]
    pub validators: Vec<String>,
    #[serde(default)]
    pub seed_nodes: Vec<SeedNode>,
    #[serde(default = "default_true")]
    pub is_validator: bool,
    /// Seconds between blocks (fractions allowed; 0 means as fast as consensus goes).
    pub target_block_time: Option<f64>,
    #[serde(default = "default_log_level")]
    pub log_level: String,
    // ---- ours ----
    /// Where keys and the database live; default: the config file's folder.
    pub home: Option<PathBuf>,
    /// Default: `<home>/genesis.json`.
    pub genesis_file: Option<PathBuf>,
    /// HTTP/JSON RPC and `/metrics`; default `127.0.0.1:<port + 10000>`.
    pub rpc_addr: Option<String>,
    /// Address announced to peers (NAT: the public `ip:port`).
    pub advertise: Option<String>,
    pub max_peers: Option<usize>,
    pub timeouts: Option<TimeoutOverrides>,
    /// Prefix of the CometBFT-named metrics on `/metrics` (default `cometbft`).
    pub metrics_namespace: Option<String>,
    pub rpc_limits: Option<RpcLimitOverrides>,
    /// Snapshot of the chain and application every this many heights (default
    /// [`DEFAULT_SNAPSHOT_INTERVAL`]; 0: none, and nothing is pruned).
    pub snapshot_interval: Option<u64>,
    /// Decided blocks kept below the newest snapshot (default [`DEFAULT_RETAIN_BLOCKS`]; 0:
    /// every block forever). Older blocks, their transaction history and log are deleted.
    pub retain_blocks: Option<u64>,
    /// Heights block sync requests at once from peers (default 64).
    pub sync_window: Option<u64>,
    /// Start from a peer's snapshot instead of replaying every block (see `join --state-sync`).
    pub state_sync: Option<StateSyncConfig>,
    /// An ABCI application to run instead of the built-in one (CometBFT's `proxy_app`):
    /// `tcp://127.0.0.1:26658` or `unix:///path/to/app.sock`.
    pub proxy_app: Option<String>,
    /// Longest one ABCI call may take (default 5000).
    pub proxy_app_timeout_ms: Option<u64>,
    /// Test links only: latency, jitter, loss, duplication and reordering added to every
    /// datagram this node sends (`tendr_net::shaping`).
    pub link_shaping: Option<tendr_net::shaping::LinkShaping>,
}

/// State sync's trust anchor: a decided block the operator trusts (read from a node they
/// trust, e.g. its `/commit` or `tendr status`), like CometBFT's `trust_height`/`trust_hash`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSyncConfig {
    pub trust_height: u64,
    /// The block id (hex) at `trust_height`.
    pub trust_hash: String,
}

impl StateSyncConfig {
    /// The trusted block, checked: `Err((field, what is wrong))`.
    pub fn check(&self) -> Result<tendr_core::statesync::TrustAnchor, (&'static str, String)> {
        if self.trust_height == 0 {
            return Err(("trust_height", "must be a decided height (1 or more)".into()));
        }
        let bytes = hex::decode(&self.trust_hash)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| {
                (
                    "trust_hash",
                    format!(
                        "`{}` is not a block id: expected 64 hex digits (the `block_id.hash` of the trusted height)",
                        self.trust_hash
                    ),
                )
            })?;
        let mut id = [0u8; 32];
        id.copy_from_slice(&bytes);
        Ok(tendr_core::statesync::TrustAnchor {
            height: tendr_core::types::Height(self.trust_height),
            block_id: tendr_core::types::Hash(id),
        })
    }
}

pub const DEFAULT_SNAPSHOT_INTERVAL: u64 = 1_000;
pub const DEFAULT_RETAIN_BLOCKS: u64 = 10_000;

fn default_host() -> String {
    "0.0.0.0".into()
}
fn default_true() -> bool {
    true
}
fn default_log_level() -> String {
    "info".into()
}

fn de_port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match v.as_i64() {
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Some(p) => Err(serde::de::Error::custom(format!("{p} is not a valid port (1-65535)"))),
        None => Err(serde::de::Error::custom(format!(
            "{v} is not a valid port: expected a number 1-65535"
        ))),
    }
}

/// serde's type names, in words for people.
fn plain_types(msg: &str) -> String {
    msg.replace("expected f64", "expected a number")
        .replace("expected u64", "expected a whole number")
        .replace("expected i64", "expected a whole number")
        .replace("expected usize", "expected a whole number")
        .replace("expected u32", "expected a whole number")
}

/// A loaded and checked config, with every default resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub file: ConfigFile,
    pub home: PathBuf,
    pub listen: SocketAddr,
    pub rpc_addr: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    pub advertise: Option<SocketAddr>,
    pub target_block_time_ms: Option<u64>,
}

impl Config {
    pub fn genesis_path(&self) -> PathBuf {
        match &self.file.genesis_file {
            Some(p) => self.home.join(p),
            None => self.home.join("genesis.json"),
        }
    }
    pub fn validator_key_path(&self) -> PathBuf {
        self.home.join("validator_key.json")
    }
    pub fn node_key_path(&self) -> PathBuf {
        self.home.join("node_key.json")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.home.join("data")
    }
    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join("tendr.redb")
    }
}

/// Removes `//` and `/* */` comments and trailing commas outside strings.
pub fn strip_json(text: &str) -> String {
    let mut stripped = String::with_capacity(text.len());
    // json_comments replaces comments with spaces, so line and column numbers stay right.
    let _ = json_comments::StripComments::new(text.as_bytes()).read_to_string(&mut stripped);
    remove_trailing_commas(&stripped)
}

fn remove_trailing_commas(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let (mut in_str, mut escaped) = (false, false);
    for (i, &c) in chars.iter().enumerate() {
        if in_str {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        if c == ',' {
            let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            if matches!(next, Some('}') | Some(']')) {
                out.push(' ');
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// Parses JSON text (comments allowed) into `T`, naming the field on error.
pub fn parse_json<T: for<'de> Deserialize<'de>>(what: &str, path: &Path, text: &str) -> CliResult<T> {
    let clean = strip_json(text);
    let mut de = serde_json::Deserializer::from_str(&clean);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let msg = plain_types(&inner.to_string());
        // serde_json appends " at line L column C"; keep it, it helps find the spot.
        if inner.is_syntax() || inner.is_eof() {
            // Not a field's fault (the path is then `?`): the text is not JSON there.
            CliError::input(syntax_error(what, path, &msg))
        } else if field == "." || field.is_empty() {
            CliError::input(format!("{what} `{}`: {msg}", path.display()))
        } else {
            CliError::input(format!("{what} `{}`: field `{field}`: {msg}", path.display()))
        }
    })?;
    de.end()
        .map_err(|e| CliError::input(syntax_error(what, path, &e.to_string())))?;
    Ok(value)
}

/// "syntax error" with serde_json's line and column (comments are blanked, not removed, so
/// they are the file's own).
fn syntax_error(what: &str, path: &Path, msg: &str) -> String {
    format!(
        "{what} `{}`: syntax error: {msg} (look for a missing comma, quote or brace there or just before)",
        path.display()
    )
}

pub fn read_file(what: &str, path: &Path) -> CliResult<String> {
    std::fs::read_to_string(path).map_err(|e| {
        let fix = if e.kind() == std::io::ErrorKind::NotFound {
            match what {
                "config" => " (create it from the example in the README, or pass --config FILE)",
                _ => "",
            }
        } else {
            ""
        };
        CliError::input(format!("{what} `{}`: cannot read it: {e}{fix}", path.display()))
    })
}

pub fn load(path: &Path) -> CliResult<Config> {
    let text = read_file("config", path)?;
    let file: ConfigFile = parse_json("config", path, &text)?;
    resolve(path, file)
}

fn field_err(path: &Path, field: &str, msg: impl std::fmt::Display) -> CliError {
    CliError::input(format!("config `{}`: field `{field}`: {msg}", path.display()))
}

/// Checks a parsed config and resolves its defaults; `path` is where it was read from.
pub fn resolve(path: &Path, file: ConfigFile) -> CliResult<Config> {
    if file.node_id.trim().is_empty() || file.node_id.len() > 64 {
        return Err(field_err(path, "node_id", "must be 1-64 characters, e.g. \"node1\""));
    }
    let ip: IpAddr = file.host.parse().map_err(|_| {
        field_err(
            path,
            "host",
            format!(
                "`{}` is not an IP address to listen on (e.g. \"0.0.0.0\" or \"192.168.1.101\")",
                file.host
            ),
        )
    })?;
    let listen = SocketAddr::new(ip, file.port);
    if let Some(l) = &file.rpc_limits {
        let checks = [
            (
                "max_open_connections",
                l.max_open_connections.map(|v| v as u64),
                1,
                65_536,
            ),
            ("max_body_bytes", l.max_body_bytes.map(|v| v as u64), 1024, 64 << 20),
            (
                "timeout_broadcast_tx_commit_ms",
                l.timeout_broadcast_tx_commit_ms,
                1,
                600_000,
            ),
            ("header_timeout_ms", l.header_timeout_ms, 100, 600_000),
            ("body_timeout_ms", l.body_timeout_ms, 100, 600_000),
        ];
        for (name, v, lo, hi) in checks {
            if let Some(v) = v.filter(|v| !(lo..=hi).contains(v)) {
                let field = format!("rpc_limits.{name}");
                return Err(field_err(path, &field, format!("{v} is out of range ({lo}-{hi})")));
            }
        }
    }
    if let Some(e) = file.link_shaping.as_ref().and_then(|l| l.check().err()) {
        return Err(CliError::input(format!("config `{}`: {e}", path.display())));
    }
    if let Some(ns) = &file.metrics_namespace {
        let mut chars = ns.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(field_err(
                path,
                "metrics_namespace",
                format!("`{ns}` is not a Prometheus name prefix: letters, digits and `_`, not starting with a digit (e.g. \"cometbft\")"),
            ));
        }
    }
    if file.retain_blocks.is_some_and(|r| r > 0) && file.snapshot_interval == Some(0) {
        return Err(field_err(
            path,
            "retain_blocks",
            "blocks are pruned only below a snapshot: set `snapshot_interval` above 0, or `retain_blocks` to 0 to keep every block",
        ));
    }
    if let Some(w) = file.sync_window.filter(|w| !(1..=1024).contains(w)) {
        return Err(field_err(path, "sync_window", format!("{w} is out of range (1-1024)")));
    }
    if let Some(ss) = &file.state_sync {
        ss.check()
            .map_err(|(field, e)| field_err(path, &format!("state_sync.{field}"), e))?;
    }
    if let Some(p) = &file.proxy_app {
        crate::abci::ProxyApp::parse(p).map_err(|e| field_err(path, "proxy_app", e))?;
    }
    if let Some(ms) = file.proxy_app_timeout_ms.filter(|ms| !(100..=600_000).contains(ms)) {
        return Err(field_err(
            path,
            "proxy_app_timeout_ms",
            format!("{ms} is out of range (100-600000)"),
        ));
    }
    for (i, v) in file.validators.iter().enumerate() {
        v.parse::<Address>()
            .map_err(|e| field_err(path, &format!("validators[{i}]"), e))?;
    }
    let mut seeds = Vec::new();
    for (i, s) in file.seed_nodes.iter().enumerate() {
        let addr = resolve_host(&s.host, s.port).map_err(|e| field_err(path, &format!("seed_nodes[{i}].host"), e))?;
        seeds.push(addr);
    }
    let target_block_time_ms = match file.target_block_time {
        None => None,
        Some(t) if t.is_finite() && (0.0..=3600.0).contains(&t) => Some((t * 1000.0).round() as u64),
        Some(t) => {
            return Err(field_err(
                path,
                "target_block_time",
                format!("{t} is not a block time in seconds (0-3600)"),
            ))
        }
    };
    if !["trace", "debug", "info", "warn", "error", "off"].contains(&file.log_level.to_ascii_lowercase().as_str()) {
        return Err(field_err(
            path,
            "log_level",
            format!(
                "`{}` is not a level (trace, debug, info, warn, error, off)",
                file.log_level
            ),
        ));
    }
    let rpc_addr = match &file.rpc_addr {
        Some(a) => a.parse().map_err(|_| {
            field_err(
                path,
                "rpc_addr",
                format!("`{a}` is not an ip:port (e.g. \"127.0.0.1:18001\")"),
            )
        })?,
        None => default_rpc_addr(file.port),
    };
    let advertise = match &file.advertise {
        Some(a) => Some(a.parse().map_err(|_| {
            field_err(
                path,
                "advertise",
                format!("`{a}` is not an ip:port (e.g. \"203.0.113.7:8001\")"),
            )
        })?),
        None => None,
    };
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let home = match &file.home {
        Some(h) => dir.join(h),
        None => dir,
    };
    Ok(Config {
        path: path.to_path_buf(),
        file,
        home,
        listen,
        rpc_addr,
        seeds,
        advertise,
        target_block_time_ms,
    })
}

pub fn default_rpc_addr(port: u16) -> SocketAddr {
    let rpc_port = port
        .checked_add(RPC_PORT_OFFSET)
        .unwrap_or_else(|| port - RPC_PORT_OFFSET);
    SocketAddr::from(([127, 0, 0, 1], rpc_port))
}

fn resolve_host(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("`{host}` is neither an IP address nor a host name that resolves"))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const GUIDE_EXAMPLE: &str = r#"{
  "node_id": "node1",  // Unique identifier for this node
  "host": "0.0.0.0",   // Listen on all interfaces
  "port": 8001,        // Unique port for this node
  "validators": [],    // Will be populated automatically
  "seed_nodes": [      // List of nodes to connect to on startup
    {"host": "192.168.1.101", "port": 8001},  // IP of another node in the network
    {"host": "192.168.1.102", "port": 8001}
  ],
  "is_validator": true,     // Whether this node is a validator
  "target_block_time": 15,  // Target time between blocks in seconds
  "log_level": "info"
}"#;

    fn load_str(text: &str) -> CliResult<Config> {
        let p = Path::new("/x/tendermint_config.json");
        resolve(p, parse_json("config", p, text)?)
    }

    #[test]
    fn the_guides_example_loads_as_written() {
        let c = load_str(GUIDE_EXAMPLE).unwrap();
        assert_eq!(c.file.node_id, "node1");
        assert_eq!(c.listen, "0.0.0.0:8001".parse().unwrap());
        assert_eq!(c.seeds.len(), 2);
        assert_eq!(c.target_block_time_ms, Some(15_000));
        assert_eq!(c.rpc_addr, "127.0.0.1:18001".parse().unwrap());
        assert_eq!(c.home, PathBuf::from("/x"));
    }

    #[test]
    fn metrics_namespace_is_a_prometheus_prefix() {
        let c = load_str(r#"{"node_id": "n", "port": 9000, "metrics_namespace": "acme_1"}"#).unwrap();
        assert_eq!(c.file.metrics_namespace.as_deref(), Some("acme_1"));
        for bad in ["", "1abc", "a-b", "a b"] {
            let text = format!(r#"{{"node_id": "n", "port": 9000, "metrics_namespace": "{bad}"}}"#);
            let e = load_str(&text).unwrap_err().message;
            assert!(
                e.contains("field `metrics_namespace`") && e.contains("not a Prometheus name prefix"),
                "{e}"
            );
        }
    }

    #[test]
    fn link_shaping_is_checked() {
        let c = load_str(
            r#"{"node_id": "n", "port": 9000, "link_shaping": {"latency_ms": 100, "jitter_ms": 5, "loss": 0.01, "seed": 7}}"#,
        )
        .unwrap();
        let l = c.file.link_shaping.unwrap();
        assert_eq!((l.latency_ms, l.jitter_ms, l.loss, l.seed), (100, 5, 0.01, 7));
        let e = load_str(r#"{"node_id": "n", "port": 9000, "link_shaping": {"loss": 1.5}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("field `link_shaping.loss`: 1.5 is out of range (a fraction from 0 to 1"),
            "{e}"
        );
        let e = load_str(r#"{"node_id": "n", "port": 9000, "link_shaping": {"delay": 5}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("link_shaping") && e.contains("delay"), "{e}");
    }

    #[test]
    fn rpc_limits_are_checked() {
        let c = load_str(r#"{"node_id": "n", "port": 9000, "rpc_limits": {"max_open_connections": 10}}"#).unwrap();
        assert_eq!(c.file.rpc_limits.unwrap().max_open_connections, Some(10));
        let e = load_str(r#"{"node_id": "n", "port": 9000, "rpc_limits": {"max_body_bytes": 5}}"#)
            .unwrap_err()
            .message;
        assert!(
            e.contains("field `rpc_limits.max_body_bytes`: 5 is out of range"),
            "{e}"
        );
        let e = load_str(r#"{"node_id": "n", "port": 9000, "rpc_limits": {"max_conns": 5}}"#)
            .unwrap_err()
            .message;
        assert!(e.contains("max_conns"), "{e}");
    }

    #[test]
    fn trailing_commas_and_strings_with_slashes() {
        let c = load_str(r#"{"node_id": "a//b,}", "port": 9000, "seed_nodes": [{"host":"127.0.0.1","port":1},],}"#)
            .unwrap();
        assert_eq!(c.file.node_id, "a//b,}");
        assert_eq!(c.seeds.len(), 1);
    }

    #[test]
    fn errors_name_file_field_and_expectation() {
        let cases = [
            (
                r#"{"node_id":"n","port":70000}"#,
                "field `port`: 70000 is not a valid port (1-65535)",
            ),
            (
                r#"{"node_id":"n","port":"x"}"#,
                "field `port`: \"x\" is not a valid port: expected a number 1-65535",
            ),
            (
                r#"{"node_id":"n","port":1,"target_block_time":"x"}"#,
                "field `target_block_time`: invalid type: string \"x\", expected a number",
            ),
            (r#"{"node_id":"n","port":1,"colour":1}"#, "unknown field `colour`"),
            (
                r#"{"node_id":"n","port":1,"is_validator":"yes"}"#,
                "field `is_validator`: invalid type",
            ),
            (
                r#"{"node_id":"n","port":1,"seed_nodes":[{"host":"1.2.3.4","port":0}]}"#,
                "field `seed_nodes[0].port`: 0 is not a valid port",
            ),
            (r#"{"node_id":"n","port":1,"host":"nowhere"}"#, "field `host`"),
            (r#"{"node_id":"n","port":1,"log_level":"loud"}"#, "field `log_level`"),
            (
                r#"{"node_id":"n","port":1,"target_block_time":-1}"#,
                "field `target_block_time`",
            ),
            (r#"{"port":1}"#, "missing field `node_id`"),
            (r#"{"node_id":"n","port":1"#, "syntax error: EOF"),
            // Issue 18, item 7: a missing comma is a syntax error at its line, not field `?`.
            (
                "{\n  \"node_id\": \"n\" // the id\n  \"port\": 1\n}",
                "syntax error: expected `,` or `}` at line 3 column 3",
            ),
            (r#"{"node_id":"n","port":1} x"#, "syntax error: trailing characters"),
        ];
        for (text, want) in cases {
            let e = load_str(text).unwrap_err();
            assert_eq!(e.code, 2);
            assert!(
                e.message.contains("config `/x/tendermint_config.json`"),
                "{}",
                e.message
            );
            assert!(e.message.contains(want), "{text}: {}", e.message);
            assert!(!e.message.contains("field `?`"), "{}", e.message);
        }
    }

    #[test]
    fn comment_and_comma_stripping_respects_strings() {
        assert_eq!(remove_trailing_commas(r#"{"a": "x\",]", }"#), r#"{"a": "x\",]"  }"#);
        assert_eq!(strip_json("[1, // c\n 2,]"), "[1,     \n 2 ]");
        assert_eq!(strip_json(r#"{"u": "http://x/*y*/"}"#), r#"{"u": "http://x/*y*/"}"#);
    }

    #[test]
    fn rpc_port_derivation_never_overflows() {
        assert_eq!(default_rpc_addr(8001).port(), 18001);
        assert_eq!(default_rpc_addr(65535).port(), 55535);
    }
}
