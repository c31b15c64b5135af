//! The `tendr` command line: the guide's workflow (`init`, `start`, `join`, `status`,
//! `add-validator`, `transactions`), plus `tx`, `query`, `testnet` and the simulator, for any
//! application: [`main_with`] takes the application's [`AppFactory`].
//!
//! What it does not do: the `sim` subcommands run the simulator's own applications (the
//! built-in key-value app), not the factory's.

use crate::abci;
use crate::app::AppFactory;
use crate::config::{self, Config, DEFAULT_CONFIG_FILE};
use crate::error::{CliError, CliResult};
use crate::genesis::{self, Genesis, LoadedGenesis, DEFAULT_POWER};
use crate::keys;
use crate::rpc;
use crate::runtime::{self, NodeSetup};
use crate::status::{QueryView, Status, TxView};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tendr_core::crypto::PublicKey;
use tendr_core::governance::{ValidatorApproval, REQUEST_QUERY_PATH};
use tendr_core::traits::QueryResult;
use tendr_core::types::{Address, Hash};
use tendr_core::TimeoutConfig;

/// How long `add-validator --address` waits for a just-joined node's published key.
const PUBLISH_WAIT_SECS: u64 = 20;

const AFTER_HELP: &str = "\
The guide's workflow:
  1. on the genesis machine:  tendr init --config tendermint_config.json
                              tendr start --config tendermint_config.json
     copy genesis.json to every other machine
  2. on each other machine:   tendr join --config tendermint_config.json --genesis genesis.json
  3. anywhere:                tendr status
  4. to make a joined node a validator, the operators of the current validators (together
     holding more than 2/3 of the voting power) each run, on their own machine:
                              tendr add-validator --address 0x<address printed by `join`>
  5. history:                 tendr transactions
One machine, four nodes:      tendr testnet --validators 4 --out ./testnet";

#[derive(Parser, Debug)]
#[command(
    name = "tendr",
    version,
    about = "Tendermint BFT consensus: a seeded simulator and real QUIC nodes",
    after_help = AFTER_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Parses the command line under the name the binary was started as (`ledger-node --help`
/// shows `ledger-node start`, not `tendr start`).
fn parse_cli() -> Cli {
    let name = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "tendr".into());
    let mut cmd = Cli::command().bin_name(name.clone());
    if name != "tendr" {
        cmd = cmd.after_help(AFTER_HELP.replace("tendr ", &format!("{name} ")));
    }
    let matches = cmd.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Where a read command finds the node: its RPC address, or the config that names it.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The node's config file (its `rpc_addr`, or 127.0.0.1:<port + 10000>).
    #[arg(long, default_value = DEFAULT_CONFIG_FILE)]
    pub config: PathBuf,
    /// The node's RPC address, e.g. 127.0.0.1:18001 (overrides --config).
    #[arg(long)]
    pub rpc: Option<SocketAddr>,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Create genesis.json and this node's key files (the genesis node).
    ///
    /// Writes, beside the config file: genesis.json (chain id, genesis time, this node as the
    /// only genesis validator, consensus parameters, the admission policy), validator_key.json
    /// and node_key.json (mode 0600). Never overwrites existing files without --force.
    Init {
        #[arg(long, default_value = DEFAULT_CONFIG_FILE)]
        config: PathBuf,
        /// Chain id (default: tendr-<random>).
        #[arg(long)]
        chain_id: Option<String>,
        /// Replace existing genesis, keys and chain data. The old chain and keys are lost.
        #[arg(long)]
        force: bool,
    },
    /// Run an initialised node (the genesis node, or any node after `join`).
    Start {
        #[arg(long, default_value = DEFAULT_CONFIG_FILE)]
        config: PathBuf,
        /// Rebuild a missing validator_state.json (what the validator key signed last) from the
        /// store. Only when the file was lost or never written, and this key has signed nothing
        /// beyond what this node's data folder holds (it is not in use anywhere else).
        #[arg(long)]
        rebuild_signing_state: bool,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Join an existing network: create keys if missing, connect to the seed nodes, catch up
    /// and follow the chain. With `is_validator: true` it prints the `add-validator` command
    /// the current validators must run. Refuses a genesis that differs from the network's.
    Join {
        #[arg(long, default_value = DEFAULT_CONFIG_FILE)]
        config: PathBuf,
        /// The network's genesis.json, copied from the genesis node.
        #[arg(long)]
        genesis: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Peers, height and last block time, the validator set, consensus status.
    Status {
        #[command(flatten)]
        target: Target,
        /// Print the RPC's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Approve a validator-set change (add a validator, change its power, or --power 0 to
    /// remove it), signed with THIS node's validator key.
    ///
    /// A change takes effect once validators holding more than 2/3 of the current voting
    /// power have approved the same (address, power): each operator of a current validator
    /// runs this same command on their own machine. A node that is not a validator cannot
    /// approve; forged approvals are refused. The joining node publishes its public key when
    /// it joins; --pub-key gives it directly instead.
    AddValidator {
        /// Address of the validator to add (printed by `tendr join`).
        #[arg(long)]
        address: Address,
        /// Voting power to give it (0 removes it).
        #[arg(long, default_value_t = DEFAULT_POWER)]
        power: u64,
        /// The validator's public key (hex), if it has not published it by joining.
        #[arg(long)]
        pub_key: Option<String>,
        #[command(flatten)]
        target: Target,
        /// Return once submitted, without waiting for the block that includes it.
        #[arg(long)]
        no_wait: bool,
    },
    /// The transaction history: height, index, hash, payload, result (newest first).
    Transactions {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        json: bool,
    },
    /// Submit a transaction, e.g. `tendr tx 'color=blue'`.
    ///
    /// A duplicate (bytes identical to a transaction still waiting in the mempool, or to one
    /// committed in the last 10 blocks) is refused; after that window the same payload is
    /// accepted again, e.g. to set a key back to an earlier value.
    Tx {
        /// `key=value`
        payload: String,
        #[command(flatten)]
        target: Target,
        /// Wait until it is in a decided block and print its result.
        #[arg(long)]
        wait: bool,
    },
    /// Ask the application (its `Application::query`), e.g. `tendr query color` reads a key
    /// of the built-in key-value app.
    Query {
        /// The query's data: a key for the default path (with --hex: the bytes, in hex).
        #[arg(default_value = "")]
        key: String,
        /// The application's query path ("" is its default: a key lookup for the built-in app).
        #[arg(long, default_value = "")]
        path: String,
        /// KEY is hex (binary data).
        #[arg(long)]
        hex: bool,
        #[command(flatten)]
        target: Target,
        /// Print the RPC's JSON (code, value, value_hex, log, height).
        #[arg(long)]
        json: bool,
    },
    /// Configs, keys and a shared genesis for an N-node network on this machine.
    Testnet {
        #[arg(long, default_value_t = 4)]
        validators: usize,
        #[arg(long)]
        out: PathBuf,
        /// Port of node1; node i uses base + i - 1 (UDP), RPC on port + 10000 (TCP).
        #[arg(long, default_value_t = 8001)]
        base_port: u16,
        /// Seconds between blocks.
        #[arg(long, default_value_t = 1.0)]
        target_block_time: f64,
        #[arg(long)]
        force: bool,
        /// Run an ABCI application per node instead of the built-in one: node i's config gets
        /// `proxy_app = tcp://127.0.0.1:<this + i - 1>` (start the applications there).
        #[arg(long)]
        proxy_app_base_port: Option<u16>,
    },
    /// Load through the CometBFT RPC of running nodes: unique transactions via
    /// `broadcast_tx_sync` (or `--async`) from `--senders` connections per node, bounded by
    /// `--max-pending` waiting transactions per node; prints committed tx/s and commit latency.
    BenchRpc {
        /// A node's RPC address (repeat for each node), e.g. --rpc 127.0.0.1:18001.
        #[arg(long = "rpc", required = true)]
        nodes: Vec<SocketAddr>,
        #[arg(long, default_value_t = 8)]
        senders: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 250)]
        tx_bytes: usize,
        /// Senders to a node pause while its mempool holds this many transactions.
        #[arg(long, default_value_t = 700)]
        max_pending: u64,
        /// Use broadcast_tx_async instead of broadcast_tx_sync.
        #[arg(long)]
        r#async: bool,
    },
    /// Deterministic simulation: run, explore and replay seeded Byzantine scenarios.
    Sim(tendr_sim::cli::SimArgs),
}

/// Runs the whole CLI for the application `app` builds; returns the process exit code.
///
/// A downstream binary gets the node (`init`, `start`, `join`, `status`, `add-validator`,
/// `tx`, `transactions`, `query`, `testnet`) for its own application with one line:
///
/// ```no_run
/// # use tendr_core::traits::{AppError, Application, ExecResult};
/// # use tendr_core::{types::{Block, Hash}, validator::ValidatorSet};
/// # struct MyApp;
/// # impl MyApp { fn new(_chain_id: &str) -> Self { MyApp } }
/// # impl Application for MyApp {
/// #     fn initial_app_hash(&self) -> Hash { Hash::default() }
/// #     fn check_tx(&self, _tx: &[u8]) -> Result<(), String> { Ok(()) }
/// #     fn validate_block(&self, _b: &Block) -> bool { true }
/// #     fn execute_block(&mut self, _b: &Block, _v: &ValidatorSet) -> Result<ExecResult, AppError> { unimplemented!() }
/// # }
/// fn main() {
///     std::process::exit(tendr_node::cli::main_with(|chain_id: &str| MyApp::new(chain_id)));
/// }
/// ```
///
/// `tendr add-validator` needs the application to route the governance transactions to
/// `tendr_core::governance::Approvals` (see that module) and to answer its query path.
/// Runs `$call` with `$a` bound to the config's ABCI application factory when the config names
/// a `proxy_app` (`$abci` is [`abci::factory_for`]), else to `$app`.
macro_rules! with_app {
    ($abci:expr, $app:expr, |$a:ident| $call:expr) => {
        match $abci {
            Err(e) => Err(e),
            Ok(Some(f)) => {
                let $a = &f;
                $call
            }
            Ok(None) => {
                let $a = $app;
                $call
            }
        }
    };
}

pub fn main_with(app: impl AppFactory) -> i32 {
    let cli = parse_cli();
    let result = match cli.command {
        Command::Sim(args) => {
            // The simulator never reads the clock; this stopwatch only times its reports.
            let t0 = std::time::Instant::now();
            return tendr_sim::cli::run(args, &|| t0.elapsed().as_millis() as u64);
        }
        Command::Init {
            config,
            chain_id,
            force,
        } => with_app!(abci::factory_for(&config, None), &app, |a| init(
            &config, chain_id, force, a
        )),
        Command::Start {
            config,
            rebuild_signing_state,
            trust,
        } => with_app!(abci::factory_for(&config, None), &app, |a| start(
            &config,
            rebuild_signing_state,
            &trust,
            a
        )),
        Command::Join { config, genesis, trust } => {
            with_app!(abci::factory_for(&config, Some(&genesis)), &app, |a| join(
                &config, &genesis, &trust, a
            ))
        }
        Command::Status { target, json } => status(&target, json),
        Command::AddValidator {
            address,
            power,
            pub_key,
            target,
            no_wait,
        } => add_validator(address, power, pub_key, &target, no_wait),
        Command::Transactions { limit, target, json } => transactions(limit, &target, json),
        Command::Tx { payload, target, wait } => submit(&payload, &target, wait),
        Command::Query {
            key,
            path,
            hex,
            target,
            json,
        } => query(&path, &key, hex, &target, json),
        Command::BenchRpc {
            nodes,
            senders,
            seconds,
            tx_bytes,
            max_pending,
            r#async,
        } => crate::bench::run(crate::bench::BenchConfig {
            nodes,
            senders,
            seconds,
            tx_bytes,
            max_pending,
            r#async,
        }),
        Command::Testnet {
            validators,
            out,
            base_port,
            target_block_time,
            force,
            proxy_app_base_port,
        } => {
            let net = TestnetArgs {
                n: validators,
                out: &out,
                base_port,
                block_time: target_block_time,
                force,
                proxy_app_base_port,
            };
            testnet(net, &app)
        }
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {}", e.message);
            e.code
        }
    }
}

fn random_chain_id() -> CliResult<String> {
    let k = keys::generate()?;
    Ok(format!("tendr-{}", &hex::encode(k.address().0)[..8]))
}

fn genesis_timeouts(cfg: &Config) -> TimeoutConfig {
    let mut t = TimeoutConfig::default();
    if let Some(ms) = cfg.target_block_time_ms {
        t.commit_ms = ms;
    }
    t
}

/// Refuses when any of `paths` exists (unless `force`), before anything is written.
fn refuse_existing(paths: &[PathBuf], force: bool) -> CliResult<()> {
    if force {
        return Ok(());
    }
    let existing: Vec<String> = paths
        .iter()
        .filter(|p| p.exists())
        .map(|p| format!("`{}`", p.display()))
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    Err(CliError::input(format!(
        "already initialised: {} exist; refusing to overwrite (keys and chain data would be lost). \
         Run `tendr start` to run this node, use a fresh folder, or pass --force to start over",
        existing.join(", ")
    )))
}

fn write_new(path: &Path, text: &str) -> CliResult<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| CliError::failure(format!("cannot write `{}`: {e}", path.display())))
}

fn init(config_path: &Path, chain_id: Option<String>, force: bool, app: &impl AppFactory) -> CliResult<()> {
    let cfg = config::load(config_path)?;
    if !cfg.file.is_validator {
        return Err(CliError::input(format!(
            "config `{}`: field `is_validator`: the genesis node must be a validator (set it to true), \
             or run `tendr join` to add an observer to an existing network",
            config_path.display()
        )));
    }
    let (gpath, vkey, nkey, data) = (
        cfg.genesis_path(),
        cfg.validator_key_path(),
        cfg.node_key_path(),
        cfg.data_dir(),
    );
    refuse_existing(&[gpath.clone(), vkey.clone(), nkey.clone(), data.clone()], force)?;
    let chain_id = match chain_id {
        Some(c) => c,
        None => random_chain_id()?,
    };
    let validator = keys::generate()?;
    let node = keys::generate()?;
    let g = Genesis::new(
        &chain_id,
        genesis::now_ms(),
        &[(cfg.file.node_id.clone(), validator.public_key(), DEFAULT_POWER)],
        genesis_timeouts(&cfg),
        app.initial_app_hash(&chain_id),
    );
    let loaded = g.clone().check(&gpath, app)?;
    std::fs::create_dir_all(&cfg.home)
        .map_err(|e| CliError::failure(format!("cannot create `{}`: {e}", cfg.home.display())))?;
    if force && data.exists() {
        std::fs::remove_dir_all(&data)
            .map_err(|e| CliError::failure(format!("cannot remove `{}`: {e}", data.display())))?;
    }
    keys::write(&vkey, &validator, force)?;
    keys::write(&nkey, &node, force)?;
    write_new(&gpath, &g.to_pretty())?;
    println!("Initialised node `{}` for chain `{chain_id}`.", cfg.file.node_id);
    println!("  wrote {}  (genesis hash {})", gpath.display(), loaded.hash.to_hex());
    println!(
        "  wrote {}  (validator {}, mode 0600)",
        vkey.display(),
        validator.address()
    );
    println!("  wrote {}  (node id {}, mode 0600)", nkey.display(), node.address());
    println!("Next steps:");
    println!(
        "  1. start this node:      tendr start --config {}",
        config_path.display()
    );
    println!("  2. copy {} to every other machine", gpath.display());
    println!("  3. on each of them:      tendr join --config tendermint_config.json --genesis genesis.json");
    println!(
        "     (their seed_nodes must list this machine's address and port {})",
        cfg.listen.port()
    );
    println!("  4. check:                tendr status");
    Ok(())
}

fn load_setup(cfg: Config, genesis: LoadedGenesis) -> CliResult<NodeSetup> {
    let node_key = keys::read(&cfg.node_key_path(), "node key")?;
    // An observer may keep a validator key (it votes once added); a validator must have one.
    let validator_key = if cfg.file.is_validator || cfg.validator_key_path().exists() {
        Some(keys::read(&cfg.validator_key_path(), "validator key")?)
    } else {
        None
    };
    Ok(NodeSetup {
        cfg,
        genesis,
        validator_key,
        node_key,
        rebuild_signing_state: false,
    })
}

/// State sync: start from a peer's snapshot proven by a block you trust instead of replaying
/// every block (needed when peers no longer keep the blocks this node lacks). Read both values
/// from a node you trust: `tendr status` (height and last block id) or its `/commit`. Overrides
/// the config's `state_sync`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// A decided height you trust (state sync).
    #[arg(long, requires = "trust_hash")]
    pub trust_height: Option<u64>,
    /// The block id (64 hex digits) at --trust-height.
    #[arg(long, requires = "trust_height")]
    pub trust_hash: Option<String>,
}

impl TrustArgs {
    /// Puts the flags into the config (checked like the config's own `state_sync`).
    fn apply(&self, cfg: &mut Config) -> CliResult<()> {
        if let (Some(h), Some(hash)) = (self.trust_height, &self.trust_hash) {
            let ss = config::StateSyncConfig {
                trust_height: h,
                trust_hash: hash.clone(),
            };
            ss.check()
                .map_err(|(field, e)| CliError::input(format!("--{}: {e}", field.replace('_', "-"))))?;
            cfg.file.state_sync = Some(ss);
        }
        Ok(())
    }
}

fn start(config_path: &Path, rebuild_signing_state: bool, trust: &TrustArgs, app: &impl AppFactory) -> CliResult<()> {
    let mut cfg = config::load(config_path)?;
    trust.apply(&mut cfg)?;
    let gpath = cfg.genesis_path();
    if !gpath.exists() {
        return Err(CliError::input(format!(
            "genesis `{}` is missing: run `tendr init --config {}` on the genesis node, or \
             `tendr join --config {} --genesis genesis.json` with the network's genesis",
            gpath.display(),
            config_path.display(),
            config_path.display()
        )));
    }
    let g = genesis::load(&gpath, app)?;
    let mut setup = load_setup(cfg, g)?;
    setup.rebuild_signing_state = rebuild_signing_state;
    run_node(setup, app)
}

fn join(config_path: &Path, genesis_path: &Path, trust: &TrustArgs, app: &impl AppFactory) -> CliResult<()> {
    let mut cfg = config::load(config_path)?;
    trust.apply(&mut cfg)?;
    let given = genesis::load(genesis_path, app)?;
    let local = cfg.genesis_path();
    if local.exists() {
        let have = genesis::load(&local, app)?;
        if have.hash != given.hash {
            return Err(CliError::input(format!(
                "genesis `{}` (chain `{}`, hash {}) differs from this node's `{}` (chain `{}`, hash {}): \
                 this node already belongs to another network. Use a fresh folder to join this one",
                genesis_path.display(),
                given.genesis.chain_id,
                given.hash.to_hex(),
                local.display(),
                have.genesis.chain_id,
                have.hash.to_hex()
            )));
        }
    }
    init_tracing(&cfg.file.log_level);
    // The network's answer first (it works across machines), then the seeds' RPC when it is
    // reachable (same machine, or an RPC opened to the LAN).
    tokio_runtime()?.block_on(crate::netwire::probe_seeds(&cfg, &given))?;
    crate::netwire::check_network_genesis(&cfg, &given)?;
    // Check existing keys before writing anything.
    for (p, what) in [
        (cfg.node_key_path(), "node key"),
        (cfg.validator_key_path(), "validator key"),
    ] {
        if p.exists() {
            keys::read(&p, what)?;
        }
    }
    std::fs::create_dir_all(&cfg.home)
        .map_err(|e| CliError::failure(format!("cannot create `{}`: {e}", cfg.home.display())))?;
    if !cfg.node_key_path().exists() {
        keys::write(&cfg.node_key_path(), &keys::generate()?, false)?;
        println!("wrote {} (mode 0600)", cfg.node_key_path().display());
    }
    if cfg.file.is_validator && !cfg.validator_key_path().exists() {
        keys::write(&cfg.validator_key_path(), &keys::generate()?, false)?;
        println!("wrote {} (mode 0600)", cfg.validator_key_path().display());
    }
    if !local.exists() {
        write_new(&local, &given.genesis.to_pretty())?;
        println!("wrote {} (genesis hash {})", local.display(), given.hash.to_hex());
    }
    let setup = load_setup(cfg, given)?;
    if let Some(k) = &setup.validator_key {
        if setup.genesis.validators.index_of(&k.address()).is_none() && setup.cfg.file.is_validator {
            println!("This node's validator address: {}", k.address());
            println!("It follows the chain as an observer until the validators approve it. On validators");
            println!("holding more than 2/3 of the voting power, each operator runs:");
            println!(
                "  tendr add-validator --address {} --power {DEFAULT_POWER}",
                k.address()
            );
        }
    }
    run_node(setup, app)
}

/// Logs to stderr at `level` (RUST_LOG overrides), plus the refusal watcher.
fn init_tracing(level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let level = level.to_ascii_lowercase();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("warn,tendr_node={level},tendr_net={level},tendr={level}"))
    });
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(fmt).try_init();
}

fn tokio_runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("tokio runtime: {e}")))
}

fn run_node(setup: NodeSetup, app: &impl AppFactory) -> CliResult<()> {
    init_tracing(&setup.cfg.file.log_level);
    tokio_runtime()?.block_on(runtime::run(setup, app))
}

// ---- RPC clients ----

fn rpc_addr(t: &Target) -> CliResult<SocketAddr> {
    if let Some(a) = t.rpc {
        return Ok(a);
    }
    Ok(config::load(&t.config)?.rpc_addr)
}

fn fail(e: String) -> CliError {
    CliError::failure(e)
}

fn status(t: &Target, json: bool) -> CliResult<()> {
    let addr = rpc_addr(t)?;
    if json {
        let v: serde_json::Value = rpc::get_json(addr, "/tendr/status").map_err(fail)?;
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    let s: Status = rpc::get_json(addr, "/tendr/status").map_err(fail)?;
    print!("{}", render_status(&s));
    Ok(())
}

pub fn render_status(s: &Status) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "node       {} (peer id {})", s.node_id, s.peer_id);
    let _ = writeln!(
        o,
        "chain      {} (genesis {})",
        s.chain_id,
        &s.genesis_hash[..16.min(s.genesis_hash.len())]
    );
    let role = match (&s.validator_address, s.in_validator_set) {
        (Some(a), true) => format!("validator {a}"),
        (Some(a), false) => format!("observer (validator key {a} is not in the validator set)"),
        (None, _) => "observer".into(),
    };
    let _ = writeln!(o, "role       {role}");
    let _ = writeln!(
        o,
        "height     {} (last block {})",
        s.latest_height,
        s.latest_block_time.as_deref().unwrap_or("none yet")
    );
    if let Some(id) = &s.latest_block_id {
        let _ = writeln!(o, "block id   {id} (a trust hash for state sync at this height)");
    }
    let y = &s.sync;
    if !y.mode.is_empty() {
        let mut line = y.mode.clone();
        if let Some(t) = y.target_height {
            line += &format!(", target {t}, {:.0} blocks/s", y.blocks_per_sec);
            if let Some(eta) = y.eta_secs {
                line += &format!(", about {eta} s left");
            }
        }
        if let Some(ss) = &y.state_sync {
            line += &format!("; state sync: {ss}");
        }
        if y.dropped_peers > 0 {
            line += &format!("; {} peers dropped for serving false blocks", y.dropped_peers);
        }
        let _ = writeln!(o, "sync       {line}");
    }
    let c = &s.consensus;
    let catching = match c.catching_up_to {
        Some(h) => format!(", catching up to {h}"),
        None => String::new(),
    };
    let _ = writeln!(
        o,
        "consensus  height {} round {} step {}{catching}",
        c.height, c.round, c.step
    );
    let _ = writeln!(o, "mempool    {} transactions", s.mempool_size);
    let _ = writeln!(o, "validators {} (total power {})", s.validators.len(), s.total_power);
    for v in &s.validators {
        let _ = writeln!(o, "  {}  power {}", v.address, v.power);
    }
    let _ = writeln!(o, "peers      {}", s.peers.len());
    for p in &s.peers {
        let dir = if p.outbound { "out" } else { "in" };
        let _ = writeln!(o, "  {}  {}  {} ({dir})", p.id, p.addr, p.role);
    }
    if let Some(why) = &s.unhealthy {
        let _ = writeln!(o, "health     NOT HEALTHY: {why}");
    }
    for w in &s.warnings {
        let _ = writeln!(o, "warning    {w}");
    }
    o
}

fn transactions(limit: usize, t: &Target, json: bool) -> CliResult<()> {
    let addr = rpc_addr(t)?;
    let txs: Vec<TxView> = rpc::get_json(addr, &format!("/tendr/transactions?limit={limit}")).map_err(fail)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&txs).expect("json"));
        return Ok(());
    }
    if txs.is_empty() {
        println!("no transactions yet");
    }
    for tx in txs {
        let payload: String = if tx.payload.len() > 60 {
            format!("{}...", &tx.payload.chars().take(57).collect::<String>())
        } else {
            tx.payload.clone()
        };
        let result = if tx.code == 0 {
            "ok".to_string()
        } else {
            format!("error {}", tx.code)
        };
        let log = if tx.log.is_empty() {
            String::new()
        } else {
            format!(" ({})", tx.log)
        };
        println!(
            "{:>6} {:>3}  {}  {payload}  {result}{log}",
            tx.height,
            tx.index,
            &tx.hash[..16]
        );
    }
    Ok(())
}

fn post_tx(addr: SocketAddr, tx: &[u8]) -> CliResult<String> {
    let v: serde_json::Value = rpc::post_json(addr, "/tendr/tx", tx).map_err(|e| {
        if e.starts_with("cannot reach") {
            CliError::failure(e)
        } else {
            CliError::input(format!("transaction refused: {e}"))
        }
    })?;
    Ok(v["hash"].as_str().unwrap_or_default().to_string())
}

/// Blocks decided, with the transaction in none of them and no longer in the node's mempool,
/// after which `--wait` says it was lost instead of waiting on.
const LOST_AFTER_BLOCKS: u64 = 3;

/// Polls until the transaction is in a decided block, for at most `secs` seconds. Gives up
/// early when blocks go by and the transaction is no longer in the node's mempool (lost with a
/// crash or restart: the mempool is not durable), and says which of the two happened.
fn wait_for_tx(addr: SocketAddr, hash: &str, secs: u64) -> CliResult<TxView> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut since: Option<u64> = None;
    loop {
        // The status first: a transaction committed between the two requests is then found.
        let status = rpc::get_json::<Status>(addr, "/tendr/status").ok();
        if let Ok(tx) = rpc::get_json::<TxView>(addr, &format!("/tendr/tx?hash={hash}")) {
            return Ok(tx);
        }
        if let Some(s) = &status {
            let from = *since.get_or_insert(s.latest_height);
            if let Some(lost) = lost_tx(hash, from, s) {
                return Err(lost);
            }
        }
        if Instant::now() > deadline {
            return Err(not_in_a_block(hash, secs, since, status.as_ref()));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The error when the transaction is in no block since height `from` and the node's mempool
/// is empty although [`LOST_AFTER_BLOCKS`] blocks were decided.
fn lost_tx(hash: &str, from: u64, s: &Status) -> Option<CliError> {
    let decided = s.latest_height.saturating_sub(from);
    (s.mempool_size == 0 && decided >= LOST_AFTER_BLOCKS).then(|| {
        CliError::failure(format!(
            "transaction {hash} was accepted but is no longer in the node's mempool, and the {decided} \
             blocks decided since do not include it: it was lost (a crash or restart empties the \
             mempool, which is not durable); submit it again"
        ))
    })
}

/// The error at the deadline: blocks stopped, or they go on without the transaction.
fn not_in_a_block(hash: &str, secs: u64, since: Option<u64>, s: Option<&Status>) -> CliError {
    let moved = match (since, s) {
        (Some(from), Some(s)) => s.latest_height.saturating_sub(from),
        _ => 0,
    };
    CliError::failure(if moved == 0 {
        format!("transaction {hash} not in a block after {secs} s, and no block was decided: check `tendr status` (are blocks being produced?)")
    } else {
        format!(
            "transaction {hash} not in a block after {secs} s although {moved} blocks were decided; it still waits in the mempool ({} transactions): check later with `tendr transactions`",
            s.map_or(0, |s| s.mempool_size)
        )
    })
}

fn submit(payload: &str, t: &Target, wait: bool) -> CliResult<()> {
    let addr = rpc_addr(t)?;
    let hash = post_tx(addr, payload.as_bytes())?;
    println!("submitted {hash}");
    if wait {
        let tx = wait_for_tx(addr, &hash, 60)?;
        println!(
            "committed at height {} index {}: code {} {}",
            tx.height, tx.index, tx.code, tx.log
        );
    }
    Ok(())
}

/// Asks the node's application; `data` goes as text, or as bytes when `hex` is set.
fn ask_app(addr: SocketAddr, path: &str, data: &str, hex: bool) -> CliResult<QueryView> {
    let arg = if hex {
        let bytes = hex::decode(data.trim_start_matches("0x"))
            .map_err(|e| CliError::input(format!("query data `{data}`: not hex ({e}); drop --hex to send text")))?;
        format!("hex={}", hex::encode(bytes))
    } else {
        format!("data={}", rpc::percent_encode(data.as_bytes()))
    };
    let q = format!("/tendr/query?path={}&{arg}", rpc::percent_encode(path.as_bytes()));
    rpc::get_json(addr, &q).map_err(fail)
}

fn query(path: &str, key: &str, hex: bool, t: &Target, json: bool) -> CliResult<()> {
    let addr = rpc_addr(t)?;
    let v = ask_app(addr, path, key, hex)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        return Ok(());
    }
    match (v.code, &v.value) {
        (0, Some(val)) => println!("{val}"),
        (0, None) => println!("0x{}", v.value_hex),
        (QueryResult::NOT_FOUND, _) if path.is_empty() && v.log == QueryResult::not_found().log => {
            return Err(CliError::input(format!(
                "key `{key}` is not set (state at height {})",
                v.height
            )))
        }
        (code, _) => {
            return Err(CliError::input(format!(
                "query path `{path}` data `{key}`: code {code}: {} (state at height {})",
                v.log, v.height
            )))
        }
    }
    Ok(())
}

fn find_pub_key(addr: SocketAddr, target: &Address, given: Option<String>, s: &Status) -> CliResult<PublicKey> {
    if let Some(h) = given {
        let pk = PublicKey::from_hex(h.trim_start_matches("0x")).map_err(|e| {
            CliError::input(format!(
                "--pub-key `{h}`: not a public key ({e}); expected 66 hex digits"
            ))
        })?;
        if pk.address() != *target {
            return Err(CliError::input(format!(
                "--pub-key belongs to address {}, not {target}",
                pk.address()
            )));
        }
        return Ok(pk);
    }
    if let Some(v) = s.validators.iter().find(|v| v.address == target.to_string()) {
        if let Ok(pk) = PublicKey::from_hex(&v.pub_key) {
            return Ok(pk);
        }
    }
    // A node that just joined publishes its key with its first transaction; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(PUBLISH_WAIT_SECS);
    let mut told = false;
    loop {
        let v = ask_app(addr, REQUEST_QUERY_PATH, &target.to_string(), false)?;
        if v.code == QueryResult::UNSUPPORTED {
            return Err(CliError::input(format!(
                "the node's application does not answer `{REQUEST_QUERY_PATH}` queries ({}), so public keys \
                 published by joining nodes cannot be found; pass --pub-key with the `pub_key` from the \
                 joining node's validator_key.json",
                v.log
            )));
        }
        let answer = QueryResult {
            code: v.code,
            value: hex::decode(&v.value_hex).unwrap_or_default(),
            log: v.log,
        };
        if let Some(pk) = runtime::parse_request(target, &answer) {
            return Ok(pk);
        }
        if Instant::now() > deadline {
            return Err(CliError::input(format!(
                "no public key known for {target}: the node must have joined (`tendr join` with \
                 `is_validator: true` publishes it once connected; see its `tendr status`), \
                 or pass --pub-key with the `pub_key` from its validator_key.json"
            )));
        }
        if !told {
            eprintln!("waiting up to {PUBLISH_WAIT_SECS} s for {target} to publish its public key ...");
            told = true;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn add_validator(target: Address, power: u64, pub_key: Option<String>, t: &Target, no_wait: bool) -> CliResult<()> {
    let cfg = config::load(&t.config)?;
    let addr = t.rpc.unwrap_or(cfg.rpc_addr);
    let key = keys::read(&cfg.validator_key_path(), "validator key")?;
    let s: Status = rpc::get_json(addr, "/tendr/status").map_err(fail)?;
    if !s.validators.iter().any(|v| v.address == key.address().to_string()) {
        return Err(CliError::input(format!(
            "this node's validator key {} is not in the current validator set, so it cannot approve \
             validator-set changes; run this command on a current validator (see `tendr status`)",
            key.address()
        )));
    }
    let pk = find_pub_key(addr, &target, pub_key, &s)?;
    let approval = ValidatorApproval::new(&s.chain_id, pk, power, &key);
    let hash = post_tx(addr, &approval.to_tx())?;
    println!(
        "approval by {} for {target} with power {power} submitted ({hash})",
        key.address()
    );
    if no_wait {
        return Ok(());
    }
    let tx = wait_for_tx(addr, &hash, 60)?;
    if tx.code != 0 {
        return Err(CliError::input(format!(
            "approval rejected at height {}: {}",
            tx.height, tx.log
        )));
    }
    println!("height {}: {}", tx.height, tx.log);
    if tx.log.starts_with("approval recorded") {
        println!(
            "more approvals are needed: operators of other validators run the same command: \
             tendr add-validator --address {target} --power {power}"
        );
    } else {
        println!("the change applies from height {}", tx.height + 2);
    }
    Ok(())
}

/// `tendr testnet`'s arguments.
struct TestnetArgs<'a> {
    n: usize,
    out: &'a Path,
    base_port: u16,
    block_time: f64,
    force: bool,
    proxy_app_base_port: Option<u16>,
}

fn testnet(args: TestnetArgs, app: &impl AppFactory) -> CliResult<()> {
    let TestnetArgs {
        n,
        out,
        base_port,
        block_time,
        force,
        proxy_app_base_port,
    } = args;
    if proxy_app_base_port.is_some_and(|p| p as usize + n > 65_536) {
        return Err(CliError::input(format!(
            "--proxy-app-base-port {}: {n} ports from there do not fit below 65536",
            proxy_app_base_port.unwrap_or_default()
        )));
    }
    if n == 0 || n > 100 {
        return Err(CliError::input(format!("--validators {n}: expected 1-100")));
    }
    if base_port as usize + n > 55_535 {
        return Err(CliError::input(format!(
            "--base-port {base_port}: ports up to {} would not leave room for RPC ports (+10000)",
            base_port as usize + n
        )));
    }
    if !block_time.is_finite() || !(0.0..=3600.0).contains(&block_time) {
        return Err(CliError::input(format!(
            "--target-block-time {block_time}: expected 0-3600 seconds"
        )));
    }
    let dirs: Vec<PathBuf> = (1..=n).map(|i| out.join(format!("node{i}"))).collect();
    refuse_existing(&dirs, force)?;
    let vkeys: Vec<_> = (0..n).map(|_| keys::generate()).collect::<CliResult<_>>()?;
    let chain_id = random_chain_id()?;
    let members: Vec<_> = vkeys
        .iter()
        .enumerate()
        .map(|(i, k)| (format!("node{}", i + 1), k.public_key(), DEFAULT_POWER))
        .collect();
    let timeouts = TimeoutConfig {
        commit_ms: (block_time * 1000.0).round() as u64,
        ..Default::default()
    };
    let g = Genesis::new(
        &chain_id,
        genesis::now_ms(),
        &members,
        timeouts,
        // An ABCI chain starts from CometBFT's empty app hash (see `abci::AbciFactory`).
        match proxy_app_base_port {
            Some(_) => Hash::default(),
            None => app.initial_app_hash(&chain_id),
        },
    );
    for (i, dir) in dirs.iter().enumerate() {
        if force && dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| CliError::failure(format!("`{}`: {e}", dir.display())))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| CliError::failure(format!("`{}`: {e}", dir.display())))?;
        let port = base_port + i as u16;
        let seeds: Vec<_> = (0..n)
            .filter(|j| *j != i)
            .map(|j| serde_json::json!({"host": "127.0.0.1", "port": base_port + j as u16}))
            .collect();
        let mut cfg = serde_json::json!({
            "node_id": format!("node{}", i + 1),
            "host": "127.0.0.1",
            "port": port,
            "validators": [],
            "seed_nodes": seeds,
            "is_validator": true,
            "target_block_time": block_time,
            "log_level": "info",
        });
        if let Some(p) = proxy_app_base_port {
            cfg["proxy_app"] = format!("tcp://127.0.0.1:{}", p as usize + i).into();
        }
        write_new(
            &dir.join(DEFAULT_CONFIG_FILE),
            &(serde_json::to_string_pretty(&cfg).expect("json") + "\n"),
        )?;
        write_new(&dir.join("genesis.json"), &g.to_pretty())?;
        keys::write(&dir.join("validator_key.json"), &vkeys[i], force)?;
        keys::write(&dir.join("node_key.json"), &keys::generate()?, force)?;
    }
    println!(
        "Wrote a {n}-validator network `{chain_id}` (genesis hash {}) under {}:",
        g.hash().to_hex(),
        out.display()
    );
    for (i, dir) in dirs.iter().enumerate() {
        let port = base_port + i as u16;
        println!(
            "  {}: UDP {port}, RPC 127.0.0.1:{}   tendr start --config {}",
            dir.display(),
            port + 10_000,
            dir.join(DEFAULT_CONFIG_FILE).display()
        );
    }
    println!(
        "Start each in its own terminal, then: tendr status --config {}",
        dirs[0].join(DEFAULT_CONFIG_FILE).display()
    );
    Ok(())
}
