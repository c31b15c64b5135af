//! tendr's own routes, in tendr's shapes (what the CLI reads), under `/tendr/`:
//! `GET /tendr/status`, `/tendr/health`, `/tendr/peers`, `/tendr/validators`, `/tendr/genesis`,
//! `/tendr/block?height=N`, `/tendr/commit?height=N`, `/tendr/tx?hash=HEX`,
//! `/tendr/transactions?limit=N`, `/tendr/query?key=K` (or `?path=P&data=D`, or
//! `?path=P&hex=HEX`: answered by the application's `Application::query`), and
//! `POST /tendr/tx` (body: the raw transaction).
//!
//! The names CometBFT does not use stay at the top level too: `/transactions`, `/query`,
//! `/peers`, `POST /tx`, and `/metrics` (Prometheus). Names CometBFT uses (`/status`,
//! `/block`, `/tx?hash=`, ...) answer in CometBFT's shapes ([`super::comet`]).

use super::client::{percent_decode, percent_decode_bytes};
use super::comet::Ctx;
use super::server::{error_reply, json_reply, reply, Resp};
use crate::runtime::app_query;
use crate::status::{block_view, tx_view, QueryView};
use hyper::StatusCode;
use serde::Serialize;
use tendr_core::traits::Storage;
use tendr_core::types::Height;

fn json<T: Serialize>(v: &T) -> Resp {
    json_reply(
        StatusCode::OK,
        &serde_json::to_value(v).expect("tendr's views serialise"),
    )
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The path and data of a `/query`: `key=K` (the default path ""), or `path=P` with `data=D`
/// (text) or `hex=HEX` (bytes).
pub(super) fn query_args(query: &str) -> Result<(String, Vec<u8>), String> {
    let path = param(query, "path").map(percent_decode).unwrap_or_default();
    let data = match (param(query, "key"), param(query, "data"), param(query, "hex")) {
        (Some(k), None, None) | (None, Some(k), None) => percent_decode_bytes(k),
        (None, None, Some(h)) => {
            hex::decode(h.trim_start_matches("0x")).map_err(|e| format!("query: `hex={h}` is not hex ({e})"))?
        }
        (None, None, None) if param(query, "path").is_some() => Vec::new(),
        (None, None, None) => return Err("expected ?key=KEY, or ?path=PATH with data=TEXT or hex=HEX".into()),
        _ => return Err("query: give one of key=, data= or hex=, not several".into()),
    };
    Ok((path, data))
}

fn height_param(query: &str) -> Option<Height> {
    param(query, "height").and_then(|h| h.parse().ok()).map(Height)
}

fn busy() -> Resp {
    error_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "the node is busy or shutting down; try again",
    )
}

/// The name of a tendr route: `/tendr/x`, or `/x` for the names CometBFT does not use.
fn tendr_name(path: &str) -> Option<&str> {
    match path.strip_prefix("/tendr/") {
        Some(name) => Some(name),
        None => match path {
            "/transactions" | "/query" | "/peers" | "/metrics" => Some(&path[1..]),
            _ => None,
        },
    }
}

/// Answers a GET of one of tendr's routes; `None` when `path` is not one.
pub(super) async fn get(ctx: &Ctx, path: &str, query: &str) -> Option<Resp> {
    let name = tendr_name(path)?;
    let shared = &ctx.shared;
    Some(match name {
        "status" | "health" | "peers" | "validators" => {
            let Some(s) = shared.status().await else {
                return Some(busy());
            };
            match name {
                "health" => match crate::status::health(&s) {
                    Ok(v) => json(&v),
                    Err(why) => super::server::error_reply(StatusCode::SERVICE_UNAVAILABLE, why),
                },
                "status" => json(&s),
                "peers" => json(&s.peers),
                _ => json(&serde_json::json!({
                    "height": s.consensus.height, "total_power": s.total_power, "validators": s.validators
                })),
            }
        }
        "genesis" => json(&serde_json::json!({
            "chain_id": shared.genesis.genesis.chain_id,
            "genesis_hash": shared.genesis.hash.to_hex(),
            "genesis": shared.genesis.genesis,
        })),
        "block" | "commit" => match height_param(query) {
            None => error_reply(StatusCode::BAD_REQUEST, "expected ?height=N with N a positive integer"),
            Some(h) => match shared.store.decided(h) {
                Ok(Some((b, c))) if name == "block" => json(&block_view(&b, &c)),
                Ok(Some((b, c))) => json(&block_view(&b, &c).commit),
                Ok(None) => error_reply(StatusCode::NOT_FOUND, format!("no decided block at height {h}")),
                Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            },
        },
        "transactions" => {
            let limit = param(query, "limit").and_then(|l| l.parse().ok()).unwrap_or(100usize);
            match shared.store.transactions(limit.min(100_000)) {
                Ok(v) => json(&v.iter().map(tx_view).collect::<Vec<_>>()),
                Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            }
        }
        "tx" => match param(query, "hash") {
            None => error_reply(StatusCode::BAD_REQUEST, "expected ?hash=HEX"),
            Some(h) => match shared
                .store
                .transaction_by_hash(&h.trim_start_matches("0x").to_ascii_lowercase())
            {
                Ok(Some(r)) => json(&tx_view(&r)),
                Ok(None) => error_reply(StatusCode::NOT_FOUND, format!("no committed transaction with hash {h}")),
                Err(e) => error_reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            },
        },
        "query" => match query_args(query) {
            Err(e) => error_reply(StatusCode::BAD_REQUEST, e),
            Ok((p, data)) => app_query_reply(ctx, p, data).await,
        },
        "metrics" => {
            let text = shared.metrics.lock().expect("metrics lock").render();
            reply(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                text,
            )
        }
        other => error_reply(StatusCode::NOT_FOUND, format!("tendr has no route /tendr/{other}")),
    })
}

/// The application's answer, as 200 whatever its code (not found is an answer, not an error).
async fn app_query_reply(ctx: &Ctx, path: String, data: Vec<u8>) -> Resp {
    let view = ctx
        .shared
        .ask(move |v| {
            let (height, r) = app_query(v, &path, &data);
            QueryView::new(&path, &data, height, r)
        })
        .await;
    match view {
        Some(view) => json(&view),
        None => busy(),
    }
}

const JSON_RPC_REFUSAL: &str = "this body is a JSON-RPC request, and `POST /tx` takes the raw \
    transaction as its body (e.g. `curl --data-binary 'color=blue' http://127.0.0.1:18001/tx`); \
    send JSON-RPC 2.0 calls to `POST /` instead";

/// A JSON object (or batch of them) with a `jsonrpc` or `method` member: a client speaking
/// JSON-RPC, not a transaction.
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

/// Answers a POST of one of tendr's routes (`/tx`, `/tendr/tx`); `None` for other paths.
pub(super) async fn post(ctx: &Ctx, path: &str, body: &[u8]) -> Option<Resp> {
    if path != "/tx" && path != "/tendr/tx" {
        return None;
    }
    if looks_like_json_rpc(body) {
        return Some(error_reply(StatusCode::BAD_REQUEST, JSON_RPC_REFUSAL));
    }
    Some(match ctx.shared.submit(body.to_vec()).await {
        Ok(hash) => json(&serde_json::json!({ "hash": hash })),
        Err(e) => error_reply(StatusCode::BAD_REQUEST, e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::client::percent_encode;

    #[test]
    fn query_arguments() {
        assert_eq!(query_args("key=a%3Db").unwrap(), (String::new(), b"a=b".to_vec()));
        let q = format!("path=tendr%2Fvalidator_request&data={}", percent_encode(b"0xab"));
        assert_eq!(
            query_args(&q).unwrap(),
            ("tendr/validator_request".into(), b"0xab".to_vec())
        );
        assert_eq!(query_args("path=p&hex=00ff").unwrap(), ("p".into(), vec![0, 255]));
        assert_eq!(query_args("path=p").unwrap(), ("p".into(), Vec::new()));
        assert!(query_args("path=p&hex=zz").unwrap_err().contains("not hex"));
        assert!(query_args("key=a&data=b").unwrap_err().contains("not several"));
        assert!(query_args("").unwrap_err().contains("expected ?key=KEY"));
        assert_eq!(param("a=1&height=7", "height"), Some("7"));
        assert_eq!(param("a=1", "height"), None);
    }

    #[test]
    fn routes_and_json_rpc_bodies() {
        assert_eq!(tendr_name("/tendr/status"), Some("status"));
        assert_eq!(tendr_name("/transactions"), Some("transactions"));
        assert_eq!(tendr_name("/status"), None, "CometBFT's /status is not tendr's");
        assert!(looks_like_json_rpc(br#"{"jsonrpc":"2.0","method":"status"}"#));
        assert!(looks_like_json_rpc(br#"[{"method":"status"}]"#));
        assert!(!looks_like_json_rpc(br#"{"a":1}=x"#));
        assert!(!looks_like_json_rpc(b"k=v"));
    }
}
