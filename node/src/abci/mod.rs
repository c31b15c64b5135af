//! ABCI 2.0 applications: an [`Application`] that runs an external CometBFT v0.38 application
//! over ABCI's socket protocol (varint-framed protobuf from `tendermint-proto`), at the
//! `proxy_app` address of the config (`tcp://127.0.0.1:26658` or `unix:///path/app.sock`).
//!
//! How the calls map: `check_tx` → CheckTx, `prepare_txs` → PrepareProposal,
//! `validate_block` → ProcessProposal, `execute_block` → FinalizeBlock then Commit, `query`
//! → Query; at the first connection Info, then InitChain with the genesis validators when the
//! application is at height 0. ExtendVote and VerifyVoteExtension are not called (tendr's
//! votes carry no extensions).
//!
//! The [`Application`] trait is synchronous and the node calls it from its one driver task, so
//! the connection is one blocking socket with read and write timeouts: a call takes at most
//! the timeout, and a failure is an error the node acts on (no proposal, a nil prevote, no
//! next height until the block is executed), never a guess.
//!
//! Restarts: on start the node re-executes its stored blocks. An application at height 0 is
//! given InitChain and every stored block. One that already has some (a persistent
//! application, or one that kept running) is checked against `data/abci_results.log`, where
//! FinalizeBlock's results are written before each Commit (module `log`): its height must be
//! one this node executed through it and its app hash the one FinalizeBlock gave then; the
//! blocks it has are then answered from the log, and the ones it lacks are sent to it.
//! Otherwise the start fails and says which.
//!
//! What it does not do: rebuild a missing transaction history with a second application
//! (the history of a block decided just before a crash stays without results).

pub mod codec;
mod conn;
mod log;

pub use conn::AbciError;

use crate::app::AppFactory;
use crate::config::Config;
use crate::error::{CliError, CliResult};
use crate::genesis::LoadedGenesis;
use conn::Conn;
use log::{Kept, ResultsLog};
use prost::bytes::Bytes;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tendermint_proto::google::protobuf::Timestamp;
use tendermint_proto::v0_38::abci::{
    request, response, CommitInfo, RequestCheckTx, RequestCommit, RequestFinalizeBlock, RequestInfo, RequestInitChain,
    RequestPrepareProposal, RequestProcessProposal, RequestQuery, ResponseFinalizeBlock, ResponseInfo,
    ValidatorUpdate as AbciValidatorUpdate,
};
use tendermint_proto::v0_38::crypto::{public_key::Sum, PublicKey as AbciPublicKey};
use tendr_core::crypto::{sha256, PublicKey};
use tendr_core::mempool::Mempool;
use tendr_core::traits::{AppError, Application, ExecResult, QueryResult, TxResult};
use tendr_core::types::{Block, Hash, TimeMs, VotingPower};
use tendr_core::validator::{ValidatorSet, ValidatorUpdate};

/// How long one call may take when the config does not say (`proxy_app_timeout_ms`).
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// After a failed connection, calls fail at once with the same error for this long instead
/// of each waiting for a new connection (the node asks the application often).
const RECONNECT_AFTER: Duration = Duration::from_secs(1);
/// The code of a query the application could not be asked (its log says why).
pub const QUERY_UNREACHABLE: u32 = u32::MAX;
/// CometBFT's `ResponseProcessProposal.status` for ACCEPT.
const PROPOSAL_ACCEPT: i32 = 1;
/// CometBFT v0.38's block and p2p protocol versions, announced in Info.
const BLOCK_PROTOCOL: u64 = 11;
const P2P_PROTOCOL: u64 = 8;
const ABCI_VERSION: &str = "2.0.0";

/// Where the application listens: `tcp://host:port` or `unix:///path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyApp {
    Tcp(String),
    Unix(PathBuf),
}

impl ProxyApp {
    pub fn parse(s: &str) -> Result<ProxyApp, String> {
        let expected = "expected `tcp://host:port` (e.g. \"tcp://127.0.0.1:26658\") or `unix:///path/to/app.sock`";
        if let Some(hp) = s.strip_prefix("tcp://") {
            let ok = hp
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            return if ok {
                Ok(ProxyApp::Tcp(hp.to_string()))
            } else {
                Err(format!("`{s}`: {expected}"))
            };
        }
        if let Some(path) = s.strip_prefix("unix://") {
            return if path.starts_with('/') {
                Ok(ProxyApp::Unix(path.into()))
            } else {
                Err(format!("`{s}`: {expected}"))
            };
        }
        Err(format!("`{s}`: {expected}; tendr runs no in-process ABCI applications (`kvstore`, `noop`): leave `proxy_app` out for the built-in one"))
    }
}

impl std::fmt::Display for ProxyApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyApp::Tcp(hp) => write!(f, "tcp://{hp}"),
            ProxyApp::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// Where and how to reach the application.
#[derive(Debug, Clone)]
pub struct ProxyTarget {
    pub app: ProxyApp,
    pub timeout: Duration,
}

impl ProxyTarget {
    /// The config's `proxy_app`, if it names one (the config was checked when loaded).
    pub fn from_config(cfg: &Config) -> CliResult<Option<ProxyTarget>> {
        let Some(s) = &cfg.file.proxy_app else { return Ok(None) };
        let app = ProxyApp::parse(s)
            .map_err(|e| CliError::input(format!("config `{}`: field `proxy_app`: {e}", cfg.path.display())))?;
        let ms = cfg.file.proxy_app_timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        Ok(Some(ProxyTarget {
            app,
            timeout: Duration::from_millis(ms),
        }))
    }

    /// The application's Info, on a connection of its own (the RPC's `abci_info`).
    pub fn info(&self) -> Result<ResponseInfo, AbciError> {
        let mut c = Conn::open(&self.app, self.timeout)?;
        info(&mut c)
    }
}

/// What InitChain tells the application: the genesis' time and validators.
#[derive(Debug, Clone)]
pub struct GenesisFacts {
    pub time: TimeMs,
    pub validators: ValidatorSet,
}

impl From<&LoadedGenesis> for GenesisFacts {
    fn from(g: &LoadedGenesis) -> Self {
        GenesisFacts {
            time: g.time,
            validators: g.validators.clone(),
        }
    }
}

/// Builds [`AbciApp`]s for the config's `proxy_app`. The genesis app hash of an ABCI chain is
/// all zeros (CometBFT's empty `app_hash`); `genesis` is needed by a node that runs (for
/// InitChain), not by `init` or a genesis check.
#[derive(Debug, Clone)]
pub struct AbciFactory {
    pub target: ProxyTarget,
    pub genesis: Option<GenesisFacts>,
    /// Where FinalizeBlock's results are kept (`None`: not kept; the application must then
    /// start from height 0 whenever the node does).
    pub results_log: Option<PathBuf>,
}

impl AppFactory for AbciFactory {
    type App = AbciApp;
    fn make(&self, chain_id: &str) -> AbciApp {
        AbciApp {
            target: self.target.clone(),
            chain_id: chain_id.to_string(),
            genesis: self.genesis.clone(),
            results_log: self.results_log.clone(),
            inner: RefCell::new(Inner::default()),
        }
    }
    fn initial_app_hash(&self, _chain_id: &str) -> Hash {
        Hash::default()
    }
    fn independent_instances(&self) -> bool {
        false
    }
    /// CometBFT gives an ABCI application evidence in its own field of `FinalizeBlock`, never
    /// as a transaction; tendr does not fill that field yet, and a transaction it does not
    /// know would enter the application's state.
    fn commits_evidence(&self) -> bool {
        false
    }
}

/// The application behind `proxy_app`. How to drive it: as any [`Application`]; the first
/// call connects and does the handshake (Info, InitChain at height 0); a failed call closes
/// the connection and the next one (after [`RECONNECT_AFTER`]) opens a new one and checks
/// the application's height again.
pub struct AbciApp {
    target: ProxyTarget,
    chain_id: String,
    genesis: Option<GenesisFacts>,
    results_log: Option<PathBuf>,
    /// The trait's `check_tx`, `validate_block` and `query` take `&self`; every call comes
    /// from the node's one driver task, one at a time.
    inner: RefCell<Inner>,
}

#[derive(Default)]
struct Inner {
    conn: Option<Conn>,
    /// The last block the application committed, once a handshake told it.
    height: Option<u64>,
    /// A block FinalizeBlock executed whose Commit was not acknowledged: its results, kept
    /// for when a new connection finds the application committed it after all.
    pending: Option<(u64, Hash, ExecResult)>,
    /// The last connection failure and when; calls fail with it until [`RECONNECT_AFTER`].
    failed: Option<(Instant, String)>,
    /// Whether the missing-results warning was logged (once per process).
    warned_results: bool,
    log: Option<ResultsLog>,
    /// Results of the blocks the application had at the first connection, from the log,
    /// taken as the node re-executes them.
    replay: Kept,
}

fn to_timestamp(t: TimeMs) -> Timestamp {
    Timestamp {
        seconds: (t.0 / 1000) as i64,
        nanos: ((t.0 % 1000) * 1_000_000) as i32,
    }
}

/// An ABCI app hash as tendr's 32-byte hash: empty is all zeros (a fresh chain), 32 bytes are
/// kept as they are, any other length is hashed (SHA-256) so it still identifies the state.
pub fn app_hash_of(bytes: &[u8]) -> Hash {
    match bytes.len() {
        0 => Hash::default(),
        32 => Hash(bytes.try_into().expect("32 bytes")),
        _ => sha256(bytes),
    }
}

fn abci_validator(pk: &PublicKey, power: u64) -> AbciValidatorUpdate {
    AbciValidatorUpdate {
        pub_key: Some(AbciPublicKey {
            sum: Some(Sum::Secp256k1(pk.0.to_vec())),
        }),
        power: power as i64,
    }
}

/// The application's validator update as tendr's (secp256k1 keys only, powers from 0).
fn validator_update(u: &AbciValidatorUpdate) -> Result<ValidatorUpdate, String> {
    let key = match u.pub_key.as_ref().and_then(|k| k.sum.as_ref()) {
        Some(Sum::Secp256k1(k)) => k,
        Some(Sum::Ed25519(_)) => {
            return Err("a validator update with an ed25519 key: tendr validators have secp256k1 keys".into())
        }
        None => return Err("a validator update without a public key".into()),
    };
    let pub_key = PublicKey(key.as_slice().try_into().map_err(|_| {
        format!(
            "a validator update whose secp256k1 key has {} bytes, not 33 (compressed)",
            key.len()
        )
    })?);
    let power = u64::try_from(u.power).map_err(|_| format!("a validator update with negative power {}", u.power))?;
    Ok(ValidatorUpdate {
        pub_key,
        power: VotingPower(power),
    })
}

/// FinalizeBlock's answer as tendr's [`ExecResult`]. An application that returns no
/// transaction results at all (`kvstore-rs` does) has each transaction counted a success
/// (`missing_results` tells the caller to say so once).
fn exec_result(r: ResponseFinalizeBlock, txs: usize, missing_results: &mut bool) -> Result<ExecResult, String> {
    let tx_results = if r.tx_results.is_empty() && txs > 0 {
        *missing_results = true;
        vec![
            TxResult {
                code: 0,
                log: String::new()
            };
            txs
        ]
    } else if r.tx_results.len() != txs {
        return Err(format!(
            "FinalizeBlock returned {} transaction results for a block of {txs} transactions",
            r.tx_results.len()
        ));
    } else {
        r.tx_results
            .into_iter()
            .map(|t| TxResult {
                code: t.code,
                log: t.log,
            })
            .collect()
    };
    let validator_updates = r
        .validator_updates
        .iter()
        .map(validator_update)
        .collect::<Result<_, _>>()?;
    Ok(ExecResult {
        app_hash: app_hash_of(&r.app_hash),
        tx_results,
        validator_updates,
    })
}

fn info(c: &mut Conn) -> Result<ResponseInfo, AbciError> {
    let req = request::Value::Info(RequestInfo {
        version: format!("tendr {}", env!("CARGO_PKG_VERSION")),
        block_version: BLOCK_PROTOCOL,
        p2p_version: P2P_PROTOCOL,
        abci_version: ABCI_VERSION.into(),
    });
    match c.call("Info", req)? {
        response::Value::Info(i) => Ok(i),
        other => Err(c.wrong("Info", &other)),
    }
}

impl AbciApp {
    fn refused(&self, detail: String) -> AbciError {
        AbciError::Refused {
            addr: self.target.app.to_string(),
            detail,
        }
    }

    /// Opens a connection and checks the application's height against what this node knows:
    /// InitChain at height 0 on the first connection; on a later one, the same height as
    /// before (or one more, when the last Commit went through unacknowledged).
    fn handshake(&self, inner: &mut Inner) -> Result<Conn, AbciError> {
        let mut c = Conn::open(&self.target.app, self.target.timeout)?;
        let i = info(&mut c)?;
        let app_h = u64::try_from(i.last_block_height)
            .map_err(|_| self.refused(format!("Info reported height {}", i.last_block_height)))?;
        match (inner.height, &inner.pending) {
            (None, _) => self.first_handshake(&mut c, inner, app_h, &i.last_block_app_hash)?,
            // Not committed: FinalizeBlock is sent again (an application that restarted lost it).
            (Some(h), _) if h == app_h => inner.pending = None,
            // Committed, the answer lost: `execute` returns the results kept.
            (Some(h), Some((p, ..))) if app_h == h + 1 && *p == app_h => inner.height = Some(app_h),
            (Some(h), _) => {
                return Err(self.refused(format!(
                    "the application is at height {app_h} but this node had it at height {h}: it restarted \
                     with other state; restart this node too (it gives the application its stored blocks \
                     again when the application starts from height 0)"
                )))
            }
        }
        Ok(c)
    }

    /// The first connection: InitChain at height 0; otherwise the application's height and
    /// app hash checked against the results log, whose records up to there answer the
    /// re-execution of the blocks it has.
    fn first_handshake(&self, c: &mut Conn, inner: &mut Inner, app_h: u64, app_hash: &[u8]) -> Result<(), AbciError> {
        let (mut log, mut kept) = match &self.results_log {
            Some(p) => {
                let (log, kept) = ResultsLog::open(p).map_err(|e| self.refused(e))?;
                (Some(log), kept)
            }
            None => (None, Kept::new()),
        };
        if app_h == 0 {
            self.init_chain(c)?;
            kept.clear();
        } else if let Some(path) = &self.results_log {
            let Some((_, res)) = kept.get(&app_h) else {
                let last = kept.keys().next_back().copied().unwrap_or(0);
                return Err(self.refused(format!(
                    "the application is at height {app_h} but this node executed blocks up to {last} only \
                     through it (`{}`): its state is not this node's; start it from an empty state, or give \
                     this node the data folder that goes with it",
                    path.display()
                )));
            };
            let reported = app_hash_of(app_hash);
            if res.app_hash != reported {
                return Err(self.refused(format!(
                    "at height {app_h} the application reports app hash `{}` (Info; {} as tendr's 32 bytes) but \
                     its FinalizeBlock gave {} (`{}`): its state differs from what this node executed; start it \
                     from an empty state",
                    hex::encode(app_hash),
                    reported.to_hex(),
                    res.app_hash.to_hex(),
                    path.display()
                )));
            }
            kept.split_off(&(app_h + 1));
        }
        if let Some(l) = log.as_mut() {
            l.truncate_after(app_h).map_err(|e| self.refused(e))?;
        }
        inner.log = log;
        inner.replay = kept;
        inner.height = Some(app_h);
        Ok(())
    }

    fn init_chain(&self, c: &mut Conn) -> Result<(), AbciError> {
        let g = self.genesis.as_ref().ok_or_else(|| {
            self.refused("the application is at height 0 and this node has no genesis to initialise it with".into())
        })?;
        let validators: Vec<_> = g
            .validators
            .validators()
            .iter()
            .map(|v| abci_validator(&v.pub_key, v.power.0))
            .collect();
        let req = request::Value::InitChain(RequestInitChain {
            time: Some(to_timestamp(g.time)),
            chain_id: self.chain_id.clone(),
            consensus_params: None,
            validators: validators.clone(),
            app_state_bytes: Bytes::new(),
            initial_height: 1,
        });
        let r = match c.call("InitChain", req)? {
            response::Value::InitChain(r) => r,
            other => return Err(c.wrong("InitChain", &other)),
        };
        if !r.app_hash.is_empty() && app_hash_of(&r.app_hash) != Hash::default() {
            return Err(self.refused(format!(
                "InitChain returned app_hash {}; tendr's genesis app hash of an ABCI chain is empty (all zeros), \
                 so the application must return none",
                hex::encode(&r.app_hash)
            )));
        }
        if !r.validators.is_empty() && r.validators != validators {
            return Err(self.refused(
                "InitChain returned a validator set other than genesis.json's; tendr takes the first validators \
                 from genesis.json: return none, or the same"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Runs `f` on a connection (opened and checked if none is), closing it on failure.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Conn, &mut Inner) -> Result<T, AbciError>) -> Result<T, AppError> {
        let mut inner = self.inner.borrow_mut();
        let mut conn = match inner.conn.take() {
            Some(c) => c,
            None => {
                if let Some((at, e)) = &inner.failed {
                    if at.elapsed() < RECONNECT_AFTER {
                        return Err(AppError(e.clone()));
                    }
                }
                match self.handshake(&mut inner) {
                    Ok(c) => c,
                    Err(e) => return Err(self.failed(&mut inner, e)),
                }
            }
        };
        match f(&mut conn, &mut inner) {
            Ok(v) => {
                inner.failed = None;
                inner.conn = Some(conn);
                Ok(v)
            }
            Err(e) => Err(self.failed(&mut inner, e)),
        }
    }

    /// Records a failure (the connection is already dropped) and logs it when it is new.
    fn failed(&self, inner: &mut Inner, e: AbciError) -> AppError {
        let msg = e.to_string();
        if inner.failed.as_ref().is_none_or(|(_, m)| *m != msg) {
            tracing::error!("{msg}");
        }
        inner.failed = Some((Instant::now(), msg.clone()));
        AppError(msg)
    }

    fn finalize(&self, c: &mut Conn, block: &Block) -> Result<ResponseFinalizeBlock, AbciError> {
        let h = &block.header;
        let req = request::Value::FinalizeBlock(RequestFinalizeBlock {
            txs: block.txs.iter().map(|t| Bytes::copy_from_slice(t)).collect(),
            decided_last_commit: Some(CommitInfo {
                round: block.last_commit.as_ref().map_or(0, |c| c.round.0 as i32),
                votes: Vec::new(),
            }),
            misbehavior: Vec::new(),
            hash: Bytes::copy_from_slice(&block.id().0),
            height: h.height.0 as i64,
            time: Some(to_timestamp(h.time)),
            next_validators_hash: Bytes::copy_from_slice(&h.validators_hash.0),
            proposer_address: Bytes::copy_from_slice(&h.proposer.0),
        });
        match c.call("FinalizeBlock", req)? {
            response::Value::FinalizeBlock(r) => Ok(r),
            other => Err(c.wrong("FinalizeBlock", &other)),
        }
    }

    fn execute(&self, c: &mut Conn, inner: &mut Inner, block: &Block) -> Result<ExecResult, AbciError> {
        let height = block.height().0;
        let id = block.id();
        let app_h = inner.height.unwrap_or(0);
        if let Some((h, pid, res)) = inner.pending.take() {
            if h == height && pid == id && app_h == height {
                return Ok(res);
            }
        }
        if height <= app_h {
            if let Some((kept_id, res)) = inner.replay.remove(&height) {
                if kept_id == id {
                    return Ok(res);
                }
                return Err(self.refused(format!(
                    "block {height} of this node's store is not the block the application executed at that \
                     height (results log): its state belongs to another chain or node; start it from an \
                     empty state"
                )));
            }
            return Err(self.refused(format!(
                "the application is already at height {app_h} and this node must execute block {height}: \
                 this node re-executes its stored blocks on start, so start the application from an empty \
                 state (it is then given every stored block), or give this node the store that goes with \
                 the application's state"
            )));
        }
        if height > app_h + 1 {
            return Err(self.refused(format!(
                "the application is at height {app_h} and this node's next block is {height}: blocks \
                 {}..{height} are missing from the application; start it from an empty state",
                app_h + 1
            )));
        }
        let r = self.finalize(c, block)?;
        let mut missing = false;
        let res = exec_result(r, block.txs.len(), &mut missing)
            .map_err(|e| self.refused(format!("{e}; block {height} cannot be executed")))?;
        if missing && !inner.warned_results {
            inner.warned_results = true;
            tracing::warn!(
                proxy_app = %self.target.app,
                "FinalizeBlock returns no transaction results; each transaction is recorded as a success (code 0)"
            );
        }
        if let Some(l) = inner.log.as_mut() {
            l.append(height, id, &res).map_err(|e| self.refused(e))?;
        }
        inner.pending = Some((height, id, res.clone()));
        match c.call("Commit", request::Value::Commit(RequestCommit {}))? {
            response::Value::Commit(_) => {}
            other => return Err(c.wrong("Commit", &other)),
        }
        inner.pending = None;
        inner.height = Some(height);
        Ok(res)
    }
}

impl Application for AbciApp {
    fn initial_app_hash(&self) -> Hash {
        Hash::default()
    }

    fn check_tx(&self, tx: &[u8]) -> Result<(), String> {
        let req = request::Value::CheckTx(RequestCheckTx {
            tx: Bytes::copy_from_slice(tx),
            r#type: 0, // New
        });
        let r = self
            .with_conn(|c, _| match c.call("CheckTx", req)? {
                response::Value::CheckTx(r) => Ok(r),
                other => Err(c.wrong("CheckTx", &other)),
            })
            .map_err(|e| e.0)?;
        match r.code {
            0 => Ok(()),
            code if r.log.is_empty() => Err(format!("the application refused it (code {code})")),
            code => Err(format!("the application refused it (code {code}): {}", r.log)),
        }
    }

    fn prepare_txs(&mut self, mempool: &Mempool, max_txs: usize, max_bytes: usize) -> Result<Vec<Vec<u8>>, AppError> {
        let txs: Vec<Bytes> = mempool.take(max_txs, max_bytes).into_iter().map(Bytes::from).collect();
        let now = crate::genesis::now_ms();
        self.with_conn(|c, inner| {
            let req = request::Value::PrepareProposal(RequestPrepareProposal {
                max_tx_bytes: max_bytes as i64,
                txs,
                local_last_commit: None,
                misbehavior: Vec::new(),
                height: inner.height.unwrap_or(0) as i64 + 1,
                time: Some(to_timestamp(TimeMs(now))),
                next_validators_hash: Bytes::new(),
                proposer_address: Bytes::new(),
            });
            match c.call("PrepareProposal", req)? {
                response::Value::PrepareProposal(r) => Ok(r.txs.into_iter().map(|t| t.to_vec()).collect()),
                other => Err(c.wrong("PrepareProposal", &other)),
            }
        })
    }

    fn validate_block(&self, block: &Block) -> bool {
        let h = &block.header;
        let req = request::Value::ProcessProposal(RequestProcessProposal {
            txs: block.txs.iter().map(|t| Bytes::copy_from_slice(t)).collect(),
            proposed_last_commit: Some(CommitInfo {
                round: block.last_commit.as_ref().map_or(0, |c| c.round.0 as i32),
                votes: Vec::new(),
            }),
            misbehavior: Vec::new(),
            hash: Bytes::copy_from_slice(&block.id().0),
            height: h.height.0 as i64,
            time: Some(to_timestamp(h.time)),
            next_validators_hash: Bytes::copy_from_slice(&h.validators_hash.0),
            proposer_address: Bytes::copy_from_slice(&h.proposer.0),
        });
        // An application that cannot be asked has not accepted: the node prevotes nil.
        self.with_conn(|c, _| match c.call("ProcessProposal", req)? {
            response::Value::ProcessProposal(r) => Ok(r.status == PROPOSAL_ACCEPT),
            other => Err(c.wrong("ProcessProposal", &other)),
        })
        .unwrap_or(false)
    }

    fn execute_block(&mut self, block: &Block, _validators: &ValidatorSet) -> Result<ExecResult, AppError> {
        self.with_conn(|c, inner| self.execute(c, inner, block))
    }

    fn query(&self, path: &str, data: &[u8]) -> QueryResult {
        let req = request::Value::Query(RequestQuery {
            data: Bytes::copy_from_slice(data),
            path: path.to_string(),
            height: 0,
            prove: false,
        });
        let r = self.with_conn(|c, _| match c.call("Query", req)? {
            response::Value::Query(r) => Ok(r),
            other => Err(c.wrong("Query", &other)),
        });
        match r {
            Ok(r) => QueryResult {
                code: r.code,
                value: r.value.to_vec(),
                log: r.log,
            },
            Err(e) => QueryResult {
                code: QUERY_UNREACHABLE,
                value: Vec::new(),
                log: e.0,
            },
        }
    }
}

/// The factory `init`, `start` and `join` use when the config at `config_path` names a
/// `proxy_app`, with the genesis facts InitChain needs from `genesis` (default: the config's
/// genesis file) when it exists.
pub fn factory_for(config_path: &Path, genesis: Option<&Path>) -> CliResult<Option<AbciFactory>> {
    let cfg = crate::config::load(config_path)?;
    let Some(target) = ProxyTarget::from_config(&cfg)? else {
        return Ok(None);
    };
    let mut f = AbciFactory {
        target,
        genesis: None,
        results_log: Some(cfg.data_dir().join("abci_results.log")),
    };
    let gpath = genesis.map_or_else(|| cfg.genesis_path(), Path::to_path_buf);
    if gpath.exists() {
        // A genesis that does not load is the command's to report: it loads it again.
        if let Ok(g) = crate::genesis::load(&gpath, &f) {
            f.genesis = Some(GenesisFacts::from(&g));
        }
    }
    Ok(Some(f))
}

#[cfg(test)]
mod tests;
