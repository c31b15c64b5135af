//! CometBFT's `/websocket`: JSON-RPC 2.0 over a websocket, every method of [`super::comet`]
//! plus `subscribe`, `unsubscribe` and `unsubscribe_all` for the `NewBlock`, `NewBlockHeader`
//! and `Tx` events. A query is `tm.event = 'X'`, optionally with `tx.height = N` and
//! `tx.hash = 'HEX'` joined by `AND`; each event is sent with the subscription's id and query,
//! in CometBFT v0.38's shape.
//!
//! Bounded: at most [`MAX_CLIENTS`] websocket clients and [`MAX_SUBSCRIPTIONS`] subscriptions
//! each; all subscribers read one shared ring of the last decided blocks, and one that falls
//! behind it (or whose socket does not take a message within `RpcLimits::ws_write_timeout`) is
//! dropped with a close frame saying why, never buffered for.

use super::comet::{self, Ctx, RpcError};
use super::params::Params;
use super::server::{envelope, error_reply, Resp};
use super::shapes::{self, b64, hex_up};
use crate::runtime::DecidedBlock;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tendr_core::crypto::sha256;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

/// Websocket clients at once (CometBFT: `max_subscription_clients`, 100).
pub const MAX_CLIENTS: usize = 100;
/// Subscriptions per client (CometBFT: `max_subscriptions_per_client`, 5).
pub const MAX_SUBSCRIPTIONS: usize = 5;
/// Largest message a client may send.
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Answers `GET /websocket`: the upgrade response, and a task that serves the socket.
pub fn accept(req: Request<Incoming>, ctx: Arc<Ctx>) -> Resp {
    let upgrade = req
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = req.headers().get(SEC_WEBSOCKET_KEY).filter(|_| upgrade) else {
        return error_reply(
            StatusCode::BAD_REQUEST,
            "/websocket takes a websocket upgrade (`Connection: Upgrade`, `Upgrade: websocket`, \
             `Sec-WebSocket-Key`); plain HTTP calls go to the other routes",
        );
    };
    let Ok(permit) = ctx.ws_clients.clone().try_acquire_owned() else {
        return error_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("too many websocket clients (at most {MAX_CLIENTS}); try again later"),
        );
    };
    let accept = derive_accept_key(key.as_bytes());
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(up) => {
                let config = WebSocketConfig {
                    max_message_size: Some(MAX_MESSAGE_BYTES),
                    max_frame_size: Some(MAX_MESSAGE_BYTES),
                    max_write_buffer_size: 16 << 20,
                    ..Default::default()
                };
                let ws = WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, Some(config)).await;
                serve(ws, &ctx).await;
            }
            Err(e) => debug!("websocket upgrade failed: {e}"),
        }
        drop(permit);
    });
    let mut r = Resp::new(Default::default());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).expect("base64 is a valid header value"),
    );
    r
}

/// The kind of event a subscription wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    NewBlock,
    NewBlockHeader,
    Tx,
}

/// A parsed subscription query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    pub kind: EventKind,
    pub height: Option<u64>,
    /// Lower-case hex.
    pub hash: Option<String>,
}

/// Parses `tm.event = 'Tx' AND tx.height = 5 AND tx.hash = 'AB..'`.
pub fn parse_query(q: &str) -> Result<EventQuery, String> {
    let (mut kind, mut height, mut hash) = (None, None, None);
    for c in q.split(" AND ").map(str::trim) {
        let unsupported = || {
            format!(
                "query condition `{c}`: tendr answers `tm.event = 'NewBlock' | 'NewBlockHeader' | 'Tx'`, \
                 with `tx.height = N` and `tx.hash = 'HEX'`, joined by AND"
            )
        };
        let (k, v) = c.split_once('=').ok_or_else(unsupported)?;
        let v = v.trim().trim_matches(|ch| ch == '\'' || ch == '"');
        match k.trim() {
            "tm.event" => {
                kind = Some(match v {
                    "NewBlock" => EventKind::NewBlock,
                    "NewBlockHeader" => EventKind::NewBlockHeader,
                    "Tx" => EventKind::Tx,
                    _ => return Err(format!("event `{v}`: tendr sends NewBlock, NewBlockHeader and Tx")),
                })
            }
            "tx.height" => height = Some(v.parse().map_err(|_| unsupported())?),
            "tx.hash" if hex::decode(v).is_ok() => hash = Some(v.to_ascii_lowercase()),
            _ => return Err(unsupported()),
        }
    }
    let kind = kind.ok_or("the query must name the event: tm.event = 'NewBlock' (or NewBlockHeader, Tx)")?;
    if kind != EventKind::Tx && (height.is_some() || hash.is_some()) {
        return Err("tx.height and tx.hash apply to tm.event = 'Tx' only".into());
    }
    Ok(EventQuery { kind, height, hash })
}

struct Subscription {
    id: Value,
    query: String,
    filter: EventQuery,
}

type Sink<S> = futures_util::stream::SplitSink<WebSocketStream<S>, Message>;

/// Serves one websocket client until it leaves, errs, or falls behind.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(ws: WebSocketStream<S>, ctx: &Ctx) {
    let wait = ctx.limits.ws_write_timeout;
    let (mut sink, mut stream) = ws.split();
    let mut subs: Vec<Subscription> = Vec::new();
    let mut decided: Option<broadcast::Receiver<Arc<DecidedBlock>>> = None;
    loop {
        tokio::select! {
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let reply = on_text(ctx, &mut subs, &text).await;
                    if decided.is_none() && !subs.is_empty() {
                        decided = Some(ctx.shared.decided.subscribe());
                    }
                    if send(&mut sink, wait, reply).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    let e = RpcError::invalid_request("send JSON-RPC requests as text messages");
                    if send(&mut sink, wait, envelope(Value::Null, Err(e))).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {
                    // Ping or pong: tungstenite queues the pong; flush it.
                    if sink.flush().await.is_err() {
                        return;
                    }
                }
            },
            ev = next_block(&mut decided), if decided.is_some() => match ev {
                Ok(d) => {
                    for event in events(ctx, &subs, &d).await {
                        if send(&mut sink, wait, event).await.is_err() {
                            return;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let reason = format!("subscriber too slow: {n} blocks behind; dropped (resubscribe)");
                    let frame = CloseFrame { code: CloseCode::Policy, reason: reason.into() };
                    let _ = tokio::time::timeout(wait, sink.send(Message::Close(Some(frame)))).await;
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

async fn next_block(
    rx: &mut Option<broadcast::Receiver<Arc<DecidedBlock>>>,
) -> Result<Arc<DecidedBlock>, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Sends one message within `wait`; an error ends the connection.
async fn send<S: AsyncRead + AsyncWrite + Unpin>(sink: &mut Sink<S>, wait: Duration, v: Value) -> Result<(), ()> {
    let text = serde_json::to_string(&v).expect("a JSON value serialises");
    match tokio::time::timeout(wait, sink.send(Message::Text(text))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// One request from the client (batches are not taken over the websocket, as CometBFT).
async fn on_text(ctx: &Ctx, subs: &mut Vec<Subscription>, text: &str) -> Value {
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => return envelope(Value::Null, Err(RpcError::parse(format!("not JSON: {e}")))),
    };
    let id = v.get("id").cloned().unwrap_or(Value::Null);
    if v.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return envelope(id, Err(RpcError::invalid_request("`jsonrpc` must be \"2.0\"")));
    }
    let Some(method) = v.get("method").and_then(Value::as_str) else {
        return envelope(id, Err(RpcError::invalid_request("missing `method`")));
    };
    let names: &[&str] = match method {
        "subscribe" | "unsubscribe" => &["query"],
        "unsubscribe_all" => &[],
        m => match comet::arg_names(m) {
            Some(n) => n,
            None => return envelope(id, Err(RpcError::method_not_found(m))),
        },
    };
    let params = match Params::from_json(v.get("params").cloned(), names) {
        Ok(p) => p,
        Err(e) => return envelope(id, Err(e.into())),
    };
    let r = match method {
        "subscribe" => subscribe(subs, id.clone(), &params),
        "unsubscribe" => unsubscribe(subs, &params),
        "unsubscribe_all" => {
            subs.clear();
            Ok(json!({}))
        }
        m => comet::call(ctx, m, &params).await,
    };
    envelope(id, r)
}

fn subscribe(subs: &mut Vec<Subscription>, id: Value, p: &Params) -> Result<Value, RpcError> {
    let query = p
        .string("query")?
        .ok_or_else(|| RpcError::invalid_params("missing `query`"))?;
    let filter = parse_query(&query).map_err(RpcError::invalid_params)?;
    if subs.iter().any(|s| s.query == query) {
        return Err(RpcError::internal(format!("already subscribed to `{query}`")));
    }
    if subs.len() >= MAX_SUBSCRIPTIONS {
        return Err(RpcError::internal(format!(
            "at most {MAX_SUBSCRIPTIONS} subscriptions per client; unsubscribe first"
        )));
    }
    subs.push(Subscription { id, query, filter });
    Ok(json!({}))
}

fn unsubscribe(subs: &mut Vec<Subscription>, p: &Params) -> Result<Value, RpcError> {
    let query = p
        .string("query")?
        .ok_or_else(|| RpcError::invalid_params("missing `query`"))?;
    let before = subs.len();
    subs.retain(|s| s.query != query);
    if subs.len() == before {
        return Err(RpcError::internal(format!("not subscribed to `{query}`")));
    }
    Ok(json!({}))
}

/// The events of one decided block for each subscription, in CometBFT's shape.
async fn events(ctx: &Ctx, subs: &[Subscription], d: &DecidedBlock) -> Vec<Value> {
    let h = d.block.height().0;
    let needs_block = subs.iter().any(|s| s.filter.kind != EventKind::Tx);
    let block = match needs_block {
        true => comet::block_and_header(ctx, h).await.ok(),
        false => None,
    };
    let mut out = Vec::new();
    for s in subs {
        let event = |data: Value, events: Value| {
            envelope(
                s.id.clone(),
                Ok(json!({"query": s.query, "data": data, "events": events})),
            )
        };
        match (s.filter.kind, &block) {
            (EventKind::NewBlock, Some((b, _))) => {
                let mut value = b.clone();
                value["result_finalize_block"] = json!({
                    "events": [],
                    "tx_results": d.results.iter().map(shapes::tx_result).collect::<Vec<_>>(),
                    "validator_updates": [],
                    "consensus_param_updates": null,
                    "app_hash": b64(&d.app_hash.0),
                });
                let data = json!({"type": "tendermint/event/NewBlock", "value": value});
                out.push(event(data, json!({"tm.event": ["NewBlock"]})));
            }
            (EventKind::NewBlockHeader, Some((_, header))) => {
                let data = json!({"type": "tendermint/event/NewBlockHeader", "value": {"header": header}});
                out.push(event(data, json!({"tm.event": ["NewBlockHeader"]})));
            }
            (EventKind::Tx, _) if s.filter.height.is_none_or(|want| want == h) => {
                for (i, tx) in d.block.txs.iter().enumerate() {
                    let hash = sha256(tx);
                    if s.filter.hash.as_ref().is_some_and(|want| *want != hash.to_hex()) {
                        continue;
                    }
                    let result = d.results.get(i).map(shapes::tx_result).unwrap_or(Value::Null);
                    let data = json!({"type": "tendermint/event/Tx", "value": {"TxResult": {
                        "height": h.to_string(), "index": i, "tx": b64(tx), "result": result,
                    }}});
                    let events = json!({
                        "tm.event": ["Tx"], "tx.hash": [hex_up(&hash.0)], "tx.height": [h.to_string()],
                    });
                    out.push(event(data, events));
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::AppFactory;
    use crate::rpc::RpcLimits;
    use crate::runtime::{NodeInfo, Shared};
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use tendr_core::crypto::PrivateKey;
    use tendr_core::traits::TxResult;
    use tendr_core::types::{Block, BlockData, Hash, Header, Height, TimeMs};

    fn ctx(
        dir: &std::path::Path,
        limits: RpcLimits,
    ) -> (Arc<Ctx>, tokio::sync::mpsc::Receiver<tendr_net::runtime::Command>) {
        let app = tendr_kv::KvApp::new;
        let k = PrivateKey::from_seed(b"ws");
        let members = [("n".to_string(), k.public_key(), 10)];
        let g = crate::genesis::Genesis::new("c", 1, &members, Default::default(), app.initial_app_hash("c"))
            .check(std::path::Path::new("genesis.json"), &app)
            .unwrap();
        let (commands, rx) = tokio::sync::mpsc::channel(8);
        let shared = Arc::new(Shared {
            info: NodeInfo {
                node_id: "n".into(),
                peer_id: k.address(),
                validator: None,
                validator_key: None,
                node_key: k.public_key(),
                wants_to_validate: false,
                listen: String::new(),
                rpc: String::new(),
                genesis_hash: String::new(),
                seeds: 0,
            },
            metrics: Mutex::new(crate::metrics::Metrics::new("cometbft", "c")),
            warnings: Mutex::new(BTreeMap::new()),
            store: crate::store::Store::open(&dir.join("db.redb")).unwrap(),
            genesis: g,
            commands,
            decided: broadcast::channel(4).0,
            guard: None,
            proxy_app: None,
            commits_evidence: true,
            clock: Default::default(),
        });
        (Arc::new(Ctx::new(shared, limits)), rx)
    }

    fn decided(h: u64) -> Arc<DecidedBlock> {
        let header = Header {
            chain_id: "c".into(),
            height: Height(h),
            time: TimeMs(h),
            prev_block_id: None,
            proposer: PrivateKey::from_seed(b"ws").address(),
            txs_hash: Hash::default(),
            app_hash: Hash::default(),
            validators_hash: Hash::default(),
            last_commit_hash: Hash::default(),
        };
        let txs: Vec<Vec<u8>> = (0..20).map(|i| format!("k{h}-{i}=v").into_bytes()).collect();
        let results = vec![
            TxResult {
                code: 0,
                log: String::new()
            };
            txs.len()
        ];
        let block: Block = BlockData {
            header,
            txs,
            last_commit: None,
        }
        .into();
        Arc::new(DecidedBlock {
            block,
            results,
            app_hash: Hash::default(),
        })
    }

    /// A subscriber that stops reading is dropped (within the write timeout, or as soon as it
    /// falls behind the shared ring), and the events are not buffered for it.
    #[tokio::test]
    async fn a_slow_subscriber_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let limits = RpcLimits {
            ws_write_timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let (ctx, _commands) = ctx(dir.path(), limits);
        let (server_io, client_io) = tokio::io::duplex(4096);
        let c = ctx.clone();
        let server = tokio::spawn(async move {
            let ws = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
            serve(ws, &c).await;
        });
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let sub = r#"{"jsonrpc":"2.0","id":7,"method":"subscribe","params":{"query":"tm.event = 'Tx'"}}"#;
        client.send(Message::Text(sub.into())).await.unwrap();
        let reply = client.next().await.unwrap().unwrap();
        let reply: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        assert_eq!(reply, json!({"jsonrpc": "2.0", "id": 7, "result": {}}));
        assert_eq!(ctx.shared.decided.receiver_count(), 1);
        for h in 1..=200 {
            let _ = ctx.shared.decided.send(decided(h));
            tokio::task::yield_now().await;
        }
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the slow subscriber is dropped within 5 s")
            .unwrap();
        assert_eq!(ctx.shared.decided.receiver_count(), 0, "no one buffers for it");
        // What reached the socket before the drop is bounded by the socket's buffer.
        let mut events = 0;
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(1), client.next()).await {
            match m {
                Message::Text(t) => {
                    assert!(t.contains("tendermint/event/Tx") && t.contains(r#""id":7"#), "{t}");
                    events += 1;
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        assert!(events < 200 * 20, "{events} events reached a client that read nothing");
    }

    /// Calls other than subscriptions are answered over the socket too; errors in CometBFT's
    /// shape.
    #[tokio::test]
    async fn calls_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let (ctx, _commands) = ctx(dir.path(), RpcLimits::default());
        let mut subs = Vec::new();
        let r = on_text(&ctx, &mut subs, r#"{"jsonrpc":"2.0","id":1,"method":"health"}"#).await;
        assert_eq!(r, json!({"jsonrpc": "2.0", "id": 1, "result": {}}));
        let r = on_text(&ctx, &mut subs, r#"{"jsonrpc":"2.0","id":2,"method":"dial_peers"}"#).await;
        assert_eq!(r["error"]["code"], -32601);
        let r = on_text(&ctx, &mut subs, "not json").await;
        assert_eq!(r["error"]["code"], -32700);
        let r = on_text(
            &ctx,
            &mut subs,
            r#"{"jsonrpc":"2.0","id":3,"method":"subscribe","params":{"query":"tm.event = 'Vote'"}}"#,
        )
        .await;
        assert_eq!(r["error"]["code"], -32602);
        let r = on_text(&ctx, &mut subs, r#"{"jsonrpc":"2.0","id":4,"method":"genesis"}"#).await;
        assert_eq!(r["result"]["genesis"]["chain_id"], "c");
    }

    #[test]
    fn event_queries() {
        let q = parse_query("tm.event = 'NewBlock'").unwrap();
        assert_eq!(q.kind, EventKind::NewBlock);
        let q = parse_query("tm.event='Tx' AND tx.height=5 AND tx.hash='ABcd'").unwrap();
        assert_eq!(
            (q.kind, q.height, q.hash.as_deref()),
            (EventKind::Tx, Some(5), Some("abcd"))
        );
        assert!(parse_query("tm.event = 'Vote'").unwrap_err().contains("NewBlock"));
        assert!(parse_query("tx.height = 5")
            .unwrap_err()
            .contains("must name the event"));
        assert!(parse_query("tm.event = 'NewBlock' AND tx.height = 5").is_err());
        assert!(parse_query("tm.event = 'Tx' AND tx.height > 5").is_err());
    }

    #[test]
    fn subscriptions_are_bounded() {
        let mut subs = Vec::new();
        let p = |q: &str| Params::from_json(Some(json!({ "query": q })), &["query"]).unwrap();
        for i in 0..MAX_SUBSCRIPTIONS {
            let q = format!("tm.event = 'Tx' AND tx.height = {i}");
            subscribe(&mut subs, json!(i), &p(&q)).unwrap();
        }
        let e = subscribe(&mut subs, json!(9), &p("tm.event = 'NewBlock'")).unwrap_err();
        assert!(e.data.contains("at most"), "{e:?}");
        let q0 = "tm.event = 'Tx' AND tx.height = 0";
        assert!(subscribe(&mut subs, json!(9), &p(q0)).is_err(), "a duplicate");
        unsubscribe(&mut subs, &p(q0)).unwrap();
        assert!(unsubscribe(&mut subs, &p(q0)).is_err());
        assert_eq!(subs.len(), MAX_SUBSCRIPTIONS - 1);
    }
}
