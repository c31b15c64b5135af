//! The HTTP layer: HTTP/1.1 by hyper on the node's tokio runtime, one task per connection, with
//! limits on everything a client controls:
//! - connections: at most [`RpcLimits::max_open_connections`] at once; one more is answered
//!   `503` and closed at once (it never waits in the kernel's queue);
//! - the request head: read within [`RpcLimits::header_timeout`] (idle keep-alive connections
//!   too, so idle connections do not accumulate), into at most [`RpcLimits::max_head_bytes`]
//!   (`431` beyond); a URL longer than [`RpcLimits::max_url_bytes`] is `414`, not echoed;
//! - the body: at most [`RpcLimits::max_body_bytes`] (`413`, from `Content-Length` before
//!   reading anything), received within [`RpcLimits::body_timeout`] (`408`), and all bodies in
//!   flight together within [`RpcLimits::max_inflight_body_bytes`] (`503` when the budget
//!   stays taken for the body timeout).
//!
//! So a connection holds at most its head buffer and one body, and a stalled or idle client
//! costs one small task until its timeout, never a thread or another client's turn.

use super::comet::{self, Ctx, RpcError};
use super::lenient::Lenient;
use super::params::Params;
use super::tendr_routes;
use super::websocket;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, warn};

/// The RPC's limits. The defaults follow CometBFT's `[rpc]` section where it has one.
#[derive(Debug, Clone)]
pub struct RpcLimits {
    /// Connections served at once (CometBFT: `max_open_connections`, 900; tendr's idle
    /// connections cost a small task, not a thread, so more fit).
    pub max_open_connections: usize,
    /// Largest request body (CometBFT: `max_body_bytes`, 1000000).
    pub max_body_bytes: usize,
    /// Bodies being received at once, together.
    pub max_inflight_body_bytes: usize,
    /// Longest path and query string.
    pub max_url_bytes: usize,
    /// The buffer a request head must fit in (request line and headers).
    pub max_head_bytes: usize,
    /// Time to receive a request's head, from the connection's start or the previous answer.
    pub header_timeout: Duration,
    /// Time to receive a request's body.
    pub body_timeout: Duration,
    /// How long `broadcast_tx_commit` waits for the block (CometBFT:
    /// `timeout_broadcast_tx_commit`, 10 s).
    pub broadcast_commit_timeout: Duration,
    /// Calls in one JSON-RPC batch.
    pub max_batch_calls: usize,
    /// Longest a websocket subscriber may take to accept one message before it is dropped.
    pub ws_write_timeout: Duration,
}

impl Default for RpcLimits {
    fn default() -> Self {
        RpcLimits {
            max_open_connections: 4096,
            max_body_bytes: 1_000_000,
            max_inflight_body_bytes: 64 << 20,
            max_url_bytes: 8 << 10,
            max_head_bytes: 64 << 10,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            broadcast_commit_timeout: Duration::from_secs(10),
            max_batch_calls: 100,
            ws_write_timeout: Duration::from_secs(10),
        }
    }
}

impl RpcLimits {
    /// The defaults with the config's overrides.
    pub fn from_config(o: Option<&crate::config::RpcLimitOverrides>) -> RpcLimits {
        let mut l = RpcLimits::default();
        let Some(o) = o else { return l };
        l.max_open_connections = o.max_open_connections.unwrap_or(l.max_open_connections);
        l.max_body_bytes = o.max_body_bytes.unwrap_or(l.max_body_bytes);
        l.max_inflight_body_bytes = l.max_inflight_body_bytes.max(l.max_body_bytes);
        let ms = |v: Option<u64>, d: Duration| v.map_or(d, Duration::from_millis);
        l.broadcast_commit_timeout = ms(o.timeout_broadcast_tx_commit_ms, l.broadcast_commit_timeout);
        l.header_timeout = ms(o.header_timeout_ms, l.header_timeout);
        l.body_timeout = ms(o.body_timeout_ms, l.body_timeout);
        l
    }
}

/// The RPC server. It runs on the tokio runtime it was started on until dropped.
pub struct RpcServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

/// Connections waiting to be accepted (the kernel's queue).
const LISTEN_BACKLOG: u32 = 1024;

impl RpcServer {
    /// Listens on `addr` and serves `shared` with `limits`; must be called inside a tokio
    /// runtime.
    pub fn start(
        addr: SocketAddr,
        shared: Arc<crate::runtime::Shared>,
        limits: RpcLimits,
    ) -> Result<RpcServer, String> {
        let cannot = |e: std::io::Error| {
            format!("RPC: cannot listen on {addr}: {e} (another node on this port? set `rpc_addr` in the config)")
        };
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(cannot)?;
        socket.set_reuseaddr(true).map_err(cannot)?;
        socket.bind(addr).map_err(cannot)?;
        let listener = socket.listen(LISTEN_BACKLOG).map_err(cannot)?;
        let addr = listener.local_addr().map_err(cannot)?;
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, Arc::new(Ctx::new(shared, limits)), stopped));
        Ok(RpcServer { addr, stop })
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

const BUSY_REPLY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 60\r\n\r\n{\"error\":\"too many open connections to this RPC; try again\"}";

async fn accept_loop(listener: TcpListener, ctx: Arc<Ctx>, mut stopped: watch::Receiver<bool>) {
    let open = Arc::new(Semaphore::new(ctx.limits.max_open_connections));
    let budget = Arc::new(Semaphore::new(ctx.limits.max_inflight_body_bytes));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, most likely: wait a little instead of spinning.
                    warn!("RPC: accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            debug!(%peer, "RPC: connection limit reached; refused");
            let _ = stream.try_write(BUSY_REPLY);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (ctx, budget) = (ctx.clone(), budget.clone());
        tokio::spawn(async move {
            let limits = ctx.limits.clone();
            let svc = service_fn(move |req| handle(req, ctx.clone(), budget.clone()));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_buf_size(limits.max_head_bytes)
                .serve_connection(TokioIo::new(Lenient::new(stream)), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                debug!(%peer, "RPC connection: {e}");
            }
            drop(permit);
        });
    }
}

/// A response.
pub type Resp = Response<Full<Bytes>>;

/// A response with `body` of content type `ctype`.
pub fn reply(code: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

/// A JSON response.
pub fn json_reply(code: StatusCode, v: &Value) -> Resp {
    reply(
        code,
        "application/json",
        serde_json::to_vec(v).expect("a JSON value serialises"),
    )
}

/// tendr's error shape, `{"error": msg}`, which the CLI reads.
pub fn error_reply(code: StatusCode, msg: impl Into<String>) -> Resp {
    json_reply(code, &json!({ "error": msg.into() }))
}

fn closing(mut r: Resp) -> Resp {
    r.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    r
}

async fn handle(req: Request<Incoming>, ctx: Arc<Ctx>, budget: Arc<Semaphore>) -> Result<Resp, Infallible> {
    let url_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if url_len > ctx.limits.max_url_bytes {
        let max = ctx.limits.max_url_bytes;
        return Ok(closing(error_reply(
            StatusCode::URI_TOO_LONG,
            format!("URL of {url_len} bytes is longer than the {max} bytes this RPC accepts"),
        )));
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if path == "/websocket" && req.method() == Method::GET {
        return Ok(websocket::accept(req, ctx));
    }
    Ok(match req.method().clone() {
        Method::GET | Method::HEAD => get(&ctx, &path, &query).await,
        Method::POST => match read_body(req, &ctx.limits, &budget).await {
            Ok(body) => post(&ctx, &path, &query, body).await,
            Err(r) => closing(r),
        },
        m => error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {m} not allowed: use GET (URI form) or POST (JSON-RPC to `/`)"),
        ),
    })
}

/// The body, within the limits; or the response that refuses it.
async fn read_body(req: Request<Incoming>, limits: &RpcLimits, budget: &Arc<Semaphore>) -> Result<Bytes, Resp> {
    let max = limits.max_body_bytes;
    let too_large = |n: &dyn std::fmt::Display| {
        error_reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {n} bytes is larger than the {max} bytes this RPC accepts"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > max as u64) {
        return Err(too_large(&n));
    }
    let reserve = declared.map_or(max, |n| n as usize).max(1) as u32;
    let permit = tokio::time::timeout(limits.body_timeout, budget.clone().acquire_many_owned(reserve))
        .await
        .ok()
        .and_then(|p| p.ok())
        .ok_or_else(|| {
            error_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "the RPC is receiving too many bodies; try again",
            )
        })?;
    let body = Limited::new(req.into_body(), max);
    let got = tokio::time::timeout(limits.body_timeout, body.collect()).await;
    drop(permit);
    match got {
        Err(_) => Err(error_reply(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                limits.body_timeout.as_secs()
            ),
        )),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large(&format!("more than {max}"))),
        Ok(Err(e)) => Err(error_reply(StatusCode::BAD_REQUEST, format!("reading the body: {e}"))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

async fn get(ctx: &Ctx, path: &str, query: &str) -> Resp {
    if let Some(r) = tendr_routes::get(ctx, path, query).await {
        return r;
    }
    match path {
        "/" => reply(StatusCode::OK, "text/plain; charset=utf-8", index()),
        p => uri_call(ctx, &p[1..], query).await,
    }
}

async fn post(ctx: &Ctx, path: &str, query: &str, body: Bytes) -> Resp {
    if let Some(r) = tendr_routes::post(ctx, path, &body).await {
        return r;
    }
    match path {
        "/" => json_rpc(ctx, &body).await,
        p => uri_call(ctx, &p[1..], query).await,
    }
}

/// The list of routes `GET /` shows.
fn index() -> String {
    let mut s = String::from(
        "CometBFT v0.38 RPC methods answered by tendr (URI: GET /METHOD?ARG=VALUE; JSON-RPC 2.0: POST /):\n",
    );
    for (m, args) in comet::METHODS {
        let a: Vec<String> = args.iter().map(|a| format!("{a}=_")).collect();
        s += &format!("  /{m}{}{}\n", if a.is_empty() { "" } else { "?" }, a.join("&"));
    }
    s += "  /websocket (JSON-RPC over a websocket: the methods above, and subscribe/unsubscribe/unsubscribe_all \
          to tm.event = 'NewBlock' | 'NewBlockHeader' | 'Tx')\n";
    s += "tendr's own: /tendr/status /tendr/health /tendr/peers /tendr/validators /tendr/genesis \
          /tendr/block?height=N /tendr/commit?height=N /tendr/tx?hash=HEX /transactions?limit=N \
          /query?key=K  POST /tx (raw transaction body)  /metrics (Prometheus)\n";
    s
}

/// The HTTP status of a JSON-RPC error in the URI form.
fn http_status(e: &RpcError) -> StatusCode {
    match e.code {
        -32601 => StatusCode::NOT_FOUND,
        -32600 | -32602 | -32700 => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A JSON-RPC 2.0 response: `result`, or `error` in CometBFT's shape.
pub fn envelope(id: Value, r: Result<Value, RpcError>) -> Value {
    match r {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
        Err(e) => json!({"jsonrpc": "2.0", "id": id, "error": e.to_json()}),
    }
}

/// `GET /METHOD?ARGS`: answered in a JSON-RPC envelope with id -1, as CometBFT does.
async fn uri_call(ctx: &Ctx, method: &str, query: &str) -> Resp {
    if comet::arg_names(method).is_none() {
        let e = RpcError::method_not_found(method);
        return json_reply(StatusCode::NOT_FOUND, &envelope(json!(-1), Err(e)));
    }
    let r = comet::call(ctx, method, &Params::from_query(query)).await;
    let code = r.as_ref().err().map_or(StatusCode::OK, http_status);
    json_reply(code, &envelope(json!(-1), r))
}

async fn json_rpc(ctx: &Ctx, body: &[u8]) -> Resp {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => {
            let e = RpcError::parse(format!("the body is not JSON: {e}"));
            return json_reply(StatusCode::OK, &envelope(Value::Null, Err(e)));
        }
    };
    let answer = match v {
        Value::Array(calls) if calls.is_empty() || calls.len() > ctx.limits.max_batch_calls => {
            let max = ctx.limits.max_batch_calls;
            let e = RpcError::invalid_request(format!("a batch holds 1 to {max} calls, not {}", calls.len()));
            envelope(Value::Null, Err(e))
        }
        Value::Array(calls) => {
            let mut out = Vec::with_capacity(calls.len());
            for c in calls {
                out.push(one_call(ctx, c).await);
            }
            Value::Array(out)
        }
        v => one_call(ctx, v).await,
    };
    json_reply(StatusCode::OK, &answer)
}

async fn one_call(ctx: &Ctx, v: Value) -> Value {
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    if v.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return envelope(id, Err(RpcError::invalid_request("`jsonrpc` must be \"2.0\"")));
    }
    let Some(method) = v.get("method").and_then(Value::as_str) else {
        return envelope(id, Err(RpcError::invalid_request("missing `method`")));
    };
    let Some(names) = comet::arg_names(method) else {
        return envelope(id, Err(RpcError::method_not_found(method)));
    };
    let r = match Params::from_json(v.get("params").cloned(), names) {
        Ok(p) => comet::call(ctx, method, &p).await,
        Err(e) => Err(e.into()),
    };
    envelope(id, r)
}
