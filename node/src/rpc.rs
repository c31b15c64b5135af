//! HTTP/JSON RPC on a local address (default `127.0.0.1:<port + 10000>`), served by
//! `tiny_http` on its own thread, and the small client the CLI uses.
//!
//! Endpoints: `GET /health`, `/status`, `/peers`, `/validators`, `/genesis`,
//! `/block?height=N`, `/commit?height=N`, `/transactions?limit=N`, `/tx?hash=HEX`,
//! `/query?key=K` (or `?path=P&data=D`, or `?path=P&hex=HEX` for binary data: answered by the
//! application's `Application::query`), `/metrics` (Prometheus); `POST /tx` (body: the raw
//! transaction).

use crate::runtime::{app_query, Shared};
use crate::status::{block_view, tx_view, QueryView};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;
use tendr_core::limits::MAX_TX_BYTES;
use tendr_core::traits::Storage;
use tendr_core::types::Height;
use tiny_http::{Header, Method, Request, Response, Server};

pub struct RpcServer {
    pub addr: SocketAddr,
    server: Arc<Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RpcServer {
    pub fn start(addr: SocketAddr, shared: Arc<Shared>) -> Result<RpcServer, String> {
        let server = Arc::new(Server::http(addr).map_err(|e| {
            format!("RPC: cannot listen on {addr}: {e} (another node on this port? set `rpc_addr` in the config)")
        })?);
        let addr = server.server_addr().to_ip().unwrap_or(addr);
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("rpc".into())
            .spawn(move || {
                for req in s.incoming_requests() {
                    handle(req, &shared);
                }
            })
            .map_err(|e| format!("RPC thread: {e}"))?;
        Ok(RpcServer {
            addr,
            server,
            thread: Some(thread),
        })
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

type Reply = (u16, String, &'static str);

fn json<T: Serialize>(v: &T) -> Reply {
    (200, serde_json::to_string(v).expect("serialises"), "application/json")
}
fn error(code: u16, msg: impl Into<String>) -> Reply {
    (
        code,
        serde_json::json!({ "error": msg.into() }).to_string(),
        "application/json",
    )
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn percent_decode(s: &str) -> String {
    String::from_utf8_lossy(&percent_decode_bytes(s)).into_owned()
}

fn percent_decode_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Percent-encodes everything but unreserved characters, for a query-string value.
pub fn percent_encode(data: &[u8]) -> String {
    data.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The path and data of a `/query`: `key=K` (the default path ""), or `path=P` with `data=D`
/// (text) or `hex=HEX` (bytes).
fn query_args(query: &str) -> Result<(String, Vec<u8>), Reply> {
    let path = param(query, "path").map(percent_decode).unwrap_or_default();
    let data = match (param(query, "key"), param(query, "data"), param(query, "hex")) {
        (Some(k), None, None) | (None, Some(k), None) => percent_decode_bytes(k),
        (None, None, Some(h)) => hex::decode(h.trim_start_matches("0x"))
            .map_err(|e| error(400, format!("query: `hex={h}` is not hex ({e})")))?,
        (None, None, None) if param(query, "path").is_some() => Vec::new(),
        (None, None, None) => return Err(error(400, "expected ?key=KEY, or ?path=PATH with data=TEXT or hex=HEX")),
        _ => return Err(error(400, "query: give one of key=, data= or hex=, not several")),
    };
    Ok((path, data))
}

fn height_param(query: &str) -> Result<Height, Reply> {
    param(query, "height")
        .and_then(|h| h.parse().ok())
        .map(Height)
        .ok_or_else(|| error(400, "expected ?height=N with N a positive integer"))
}

/// Longest URL answered; longer ones get 414 (and are not echoed back).
const MAX_URL_BYTES: usize = 4096;

fn handle(mut req: Request, shared: &Arc<Shared>) {
    let (code, body, ctype) = if req.url().len() > MAX_URL_BYTES {
        let n = req.url().len();
        error(
            414,
            format!("URL of {n} bytes is longer than the {MAX_URL_BYTES} bytes this RPC accepts"),
        )
    } else {
        route(&mut req, shared)
    };
    let header = Header::from_bytes(&b"Content-Type"[..], ctype.as_bytes()).expect("valid header");
    let _ = req.respond(Response::from_string(body).with_status_code(code).with_header(header));
}

fn route(req: &mut Request, shared: &Arc<Shared>) -> Reply {
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    match (req.method(), path) {
        (Method::Post, "/tx") => {
            let mut body = Vec::new();
            let r = req.as_reader().take(MAX_TX_BYTES as u64 + 1).read_to_end(&mut body);
            match r {
                Ok(_) if looks_like_json_rpc(&body) => error(400, JSON_RPC_REFUSAL),
                Ok(_) => submit(shared, body),
                Err(e) => error(400, format!("reading the body: {e}")),
            }
        }
        (Method::Get, p) => get(shared, p, query),
        _ => error(405, "method not allowed"),
    }
}

const JSON_RPC_REFUSAL: &str = "this body is a JSON-RPC request, and tendr's RPC has no JSON-RPC \
    endpoint: `POST /tx` takes the raw transaction as its body (e.g. `curl --data-binary \
    'color=blue' http://127.0.0.1:18001/tx`); reads are `GET /status`, `/block?height=N`, \
    `/tx?hash=HEX`, `/query?key=K`";

/// A JSON object (or batch of them) with a `jsonrpc` or `method` member: a client speaking
/// another node's protocol, not a transaction.
fn looks_like_json_rpc(body: &[u8]) -> bool {
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    if !start.is_some_and(|i| matches!(body[i], b'{' | b'[')) {
        return false;
    }
    let is_call = |v: &serde_json::Value| v.get("jsonrpc").is_some() || v.get("method").is_some();
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Array(calls)) => calls.iter().any(is_call),
        Ok(v) => is_call(&v),
        Err(_) => false,
    }
}

fn submit(shared: &Shared, tx: Vec<u8>) -> Reply {
    match shared.submit_blocking(tx) {
        Ok(hash) => json(&serde_json::json!({ "hash": hash })),
        Err(e) => error(400, e),
    }
}

fn get(shared: &Arc<Shared>, path: &str, query: &str) -> Reply {
    let Some(s) = (match path {
        "/health" | "/status" | "/peers" | "/validators" => shared.status_blocking(),
        _ => Some(Default::default()),
    }) else {
        return error(503, "the node is busy or shutting down; try again");
    };
    let status = || s.clone();
    match path {
        "/health" => match crate::status::health(&s) {
            Ok(v) => json(&v),
            Err(why) => error(503, why),
        },
        "/status" => json(&status()),
        "/peers" => json(&status().peers),
        "/validators" => {
            let s = status();
            json(
                &serde_json::json!({ "height": s.consensus.height, "total_power": s.total_power, "validators": s.validators }),
            )
        }
        "/genesis" => json(&serde_json::json!({
            "chain_id": shared.genesis.genesis.chain_id,
            "genesis_hash": shared.genesis.hash.to_hex(),
            "genesis": shared.genesis.genesis,
        })),
        "/block" | "/commit" => match height_param(query) {
            Err(r) => r,
            Ok(h) => match shared.store.decided(h) {
                Ok(Some((b, c))) if path == "/block" => json(&block_view(&b, &c)),
                Ok(Some((b, c))) => json(&block_view(&b, &c).commit),
                Ok(None) => error(404, format!("no decided block at height {h}")),
                Err(e) => error(500, e.to_string()),
            },
        },
        "/transactions" => {
            let limit = param(query, "limit").and_then(|l| l.parse().ok()).unwrap_or(100usize);
            match shared.store.transactions(limit.min(100_000)) {
                Ok(v) => json(&v.iter().map(tx_view).collect::<Vec<_>>()),
                Err(e) => error(500, e.to_string()),
            }
        }
        "/tx" => match param(query, "hash") {
            None => error(400, "expected ?hash=HEX"),
            Some(h) => match shared.store.transaction_by_hash(&h.to_ascii_lowercase()) {
                Ok(Some(r)) => json(&tx_view(&r)),
                Ok(None) => error(404, format!("no committed transaction with hash {h}")),
                Err(e) => error(500, e.to_string()),
            },
        },
        "/query" => match query_args(query) {
            Err(r) => r,
            Ok((p, data)) => app_query_reply(shared, p, data),
        },
        "/metrics" => (
            200,
            shared.metrics.lock().expect("metrics lock").render(),
            "text/plain; version=0.0.4",
        ),
        _ => error(404, format!("no endpoint {path}")),
    }
}

/// The application's answer, as 200 whatever its code (not found is an answer, not an error).
fn app_query_reply(shared: &Shared, path: String, data: Vec<u8>) -> Reply {
    match shared.ask_blocking(move |v| {
        let (height, r) = app_query(v, &path, &data);
        QueryView::new(&path, &data, height, r)
    }) {
        Some(view) => json(&view),
        None => error(503, "the node is busy or shutting down; try again"),
    }
}

// ---- client ----

/// An HTTP response: status code and body.
pub struct HttpReply {
    pub code: u16,
    pub body: String,
}

/// One HTTP/1.1 request with `Connection: close`; enough for our own server.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Result<HttpReply, String> {
    let timeout = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| {
        format!("cannot reach the node's RPC at {addr}: {e} (is the node running? is `rpc_addr` right?)")
    })?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("RPC {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("RPC {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("RPC {addr}: malformed HTTP response"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("RPC {addr}: malformed status line"))?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(HttpReply { code, body })
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// GET `path` and parse the JSON body; a non-200 reply becomes its `error` message.
pub fn get_json<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> Result<T, String> {
    let r = request(addr, "GET", path, b"")?;
    parse_reply(addr, r)
}

pub fn post_json<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str, body: &[u8]) -> Result<T, String> {
    let r = request(addr, "POST", path, body)?;
    parse_reply(addr, r)
}

fn parse_reply<T: serde::de::DeserializeOwned>(addr: SocketAddr, r: HttpReply) -> Result<T, String> {
    if r.code != 200 {
        let msg = serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or(r.body);
        return Err(msg);
    }
    serde_json::from_str(&r.body).map_err(|e| format!("RPC {addr}: unexpected reply ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_and_decoding() {
        assert_eq!(param("a=1&height=7", "height"), Some("7"));
        assert_eq!(param("a=1", "height"), None);
        assert_eq!(percent_decode("a%3Db+c"), "a=b c");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[test]
    fn query_arguments() {
        assert_eq!(query_args("key=a%3Db").unwrap(), (String::new(), b"a=b".to_vec()));
        let addr = "0xab";
        let q = format!(
            "path=tendr%2Fvalidator_request&data={}",
            percent_encode(addr.as_bytes())
        );
        assert_eq!(
            query_args(&q).unwrap(),
            ("tendr/validator_request".into(), b"0xab".to_vec())
        );
        assert_eq!(query_args("path=p&hex=00ff").unwrap(), ("p".into(), vec![0, 255]));
        assert_eq!(query_args("path=p").unwrap(), ("p".into(), Vec::new()));
        assert!(query_args("path=p&hex=zz").unwrap_err().1.contains("not hex"));
        assert!(query_args("key=a&data=b").unwrap_err().1.contains("not several"));
        assert!(query_args("").unwrap_err().1.contains("expected ?key=KEY"));
        assert_eq!(
            percent_decode_bytes(&percent_encode(&[0, 255, b'a'])),
            vec![0, 255, b'a']
        );
    }
}
