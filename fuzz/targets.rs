//! The fuzz targets' bodies, shared by the libFuzzer binaries (`fuzz/fuzz_targets/*.rs`, run
//! with `fuzz/run`) and by the corpus replay in the end-to-end test binary
//! (`tests/e2e/fuzz_corpus.rs`), so CI runs every target on its corpus and on every input
//! that ever failed (`fuzz/regressions/<target>/`).
//!
//! Each takes arbitrary bytes; none may panic, and each checks an invariant of what it
//! decodes (a decoded message encodes back to itself; a request line rewritten in one piece or
//! in many is the same; the engine never signs two different votes for one step).

#![allow(dead_code)] // each binary runs one of the targets

use std::path::Path;
use tendr_core::chain::ChainState;
use tendr_core::codec::{decode_bounded, decode_message, encode_message};
use tendr_core::crypto::{proposal_sign_bytes, vote_sign_bytes};
use tendr_core::engine::{Timeout, WalEntry};
use tendr_core::traits::{Application, Clock, MemStorage, Network, Node, Snapshot};
use tendr_core::*;

/// Every target, by name (the corpus folders are named the same).
/// A target: bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

pub const TARGETS: [(&str, Target); 7] = [
    ("wire", wire),
    ("handshake", handshake),
    ("config", config),
    ("genesis", genesis),
    ("rpc", rpc),
    ("store", store),
    ("engine", engine),
];

/// A frame from a peer: decoded by the one fallible function; a message that decodes encodes
/// back to the same message.
pub fn wire(data: &[u8]) {
    if let Ok(tendr_net::wire::Frame::Message(m, _)) = tendr_net::wire::decode_frame(data) {
        let again = decode_message(&encode_message(&m)).expect("a decoded message re-encodes");
        assert_eq!(again, m);
    }
    if let Ok(m) = decode_message(data) {
        assert_eq!(decode_message(&encode_message(&m)).ok(), Some(m));
    }
}

/// The hello of the handshake (its signature checked against an exporter), and the far-future
/// claims bookkeeping fed arbitrary claims.
pub fn handshake(data: &[u8]) {
    let mut framed = vec![tendr_net::wire::TAG_HELLO];
    framed.extend_from_slice(data);
    for bytes in [data, &framed[..]] {
        if let Ok(tendr_net::wire::Frame::Hello(h)) = tendr_net::wire::decode_frame(bytes) {
            let _ = h.verify(tendr_net::wire::Side::Dialer, &[7; 32]);
            let _ = h.verify(tendr_net::wire::Side::Listener, &[7; 32]);
        }
    }
    let mut claims = tendr_net::claims::Claims::new(std::time::Duration::from_millis(50), 3);
    let start = std::time::Instant::now();
    for (i, op) in data.chunks(4).enumerate() {
        let peer = Address([op[0] % 8; 20]);
        let h = |b: Option<&u8>| Height(u64::from(*b.unwrap_or(&0)));
        let now = start + std::time::Duration::from_millis(i as u64 * 10);
        match op[0] >> 6 {
            0 => drop(claims.far_message(peer, h(op.get(1)), h(op.get(2)), now)),
            1 => drop(claims.holds(peer, h(op.get(1)), now)),
            2 => drop(claims.decided(peer, h(op.get(1)))),
            _ => drop(claims.pending(&peer)),
        }
    }
}

/// `tendermint_config.json` (comments allowed) parsed and resolved: an error, never a panic.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/fuzz/tendermint_config.json");
    if let Ok(file) = tendr_node::config::parse_json::<tendr_node::config::ConfigFile>("config", path, &text) {
        if let Ok(cfg) = tendr_node::config::resolve(path, file) {
            let _ = cfg.file.state_sync.as_ref().map(|s| s.check());
        }
    }
}

/// `genesis.json` parsed and checked for the key-value application.
pub fn genesis(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let path = Path::new("/fuzz/genesis.json");
    if let Ok(g) = tendr_node::config::parse_json::<tendr_node::genesis::Genesis>("genesis", path, &text) {
        if let Ok(loaded) = g.check(path, &tendr_kv::KvApp::new) {
            let _ = loaded.chain_state();
        }
    }
}

/// RPC input: the lenient request-line framing (fed whole, and split where the first byte
/// says: the output must be the same), query strings and JSON-RPC parameters.
pub fn rpc(data: &[u8]) {
    use tendr_node::rpc::lenient::Framing;
    use tendr_node::rpc::params::{Bytes, Params};
    let (mut whole, mut split) = (Vec::new(), Vec::new());
    Framing::default().feed(data, &mut whole);
    let mut f = Framing::default();
    let step = 1 + usize::from(*data.first().unwrap_or(&0)) % 7;
    for piece in data.chunks(step) {
        f.feed(piece, &mut split);
    }
    assert_eq!(whole, split, "the framing depends on how the bytes arrive");
    let text = String::from_utf8_lossy(data);
    let q = Params::from_query(&text);
    let _ = (q.int("height"), q.string("hash"), q.bool("prove"));
    let _ = (q.bytes("tx", Bytes::Base64), q.bytes("data", Bytes::Hex));
    let _ = tendr_node::rpc::websocket::parse_query(&text);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(p) = Params::from_json(Some(v), &["height", "tx", "hash"]) {
            let _ = (p.int("height"), p.string("hash"), p.bool("prove"));
        }
    }
}

/// Records as the store reads them: a sealed value is opened (its SHA-256 checked) and
/// decoded as each kind of record; damage is an error.
pub fn store(data: &[u8]) {
    for bytes in [data, tendr_node::store::unseal(data).unwrap_or(data)] {
        let _ = decode_bounded::<WalEntry>(bytes, 1 << 24);
        let _ = decode_bounded::<(Block, Commit)>(bytes, 1 << 24);
        let _ = ChainState::decode(bytes);
        let _ = Snapshot::decode(bytes);
    }
}

const VALIDATORS: u8 = 4;

fn key(i: u8) -> PrivateKey {
    PrivateKey::from_seed(&[b'f', i])
}

#[derive(Default)]
struct Capture {
    now: u64,
    timers: Vec<(u64, Timeout)>,
    sent: Vec<Message>,
}

type Shared = std::rc::Rc<std::cell::RefCell<Capture>>;
struct FuzzClock(Shared);
struct FuzzNet(Shared);

impl Clock for FuzzClock {
    fn now(&self) -> TimeMs {
        TimeMs(self.0.borrow().now)
    }
    fn schedule(&mut self, at: TimeMs, t: Timeout) {
        let mut c = self.0.borrow_mut();
        if c.timers.len() < 4096 {
            c.timers.push((at.0, t));
        }
    }
}

impl Network for FuzzNet {
    fn broadcast(&mut self, msg: &Message) {
        self.0.borrow_mut().sent.push(msg.clone());
    }
    fn send(&mut self, _to: PeerId, msg: &Message) {
        self.0.borrow_mut().sent.push(msg.clone());
    }
}

/// The engine (validator 0 of 4, the key-value app, storage in memory) fed a sequence of
/// inputs drawn from the bytes: validly signed votes and proposals of the other three for
/// nearby heights and rounds (for the proposal seen, nil, or another value), the same with a
/// broken signature, timeouts, time passing, and raw bytes decoded as a message. It may
/// refuse anything, but never panics and never signs two different votes for one step.
pub fn engine(data: &[u8]) {
    let _ = run_engine(data);
}

/// The height the engine target's node reaches on `data` (the seed session must decide some,
/// or the target would only fuzz the first height).
pub fn engine_height(data: &[u8]) -> u64 {
    run_engine(data).1
}

/// The node the engine target drives.
type FuzzNode = Node<FuzzClock, FuzzNet, MemStorage, tendr_kv::KvApp>;

fn fuzz_node(chain: &str) -> Option<(FuzzNode, Shared)> {
    let vs = ValidatorSet::new(
        (0..VALIDATORS)
            .map(|i| (key(i).public_key(), VotingPower(10)))
            .collect(),
    )
    .expect("four validators");
    let app_hash = Application::initial_app_hash(&tendr_kv::KvApp::new(chain));
    let genesis = ChainState::genesis(chain, vs, app_hash, TimeMs(0));
    let cap: Shared = Default::default();
    let node = Node::new(
        EngineConfig::new(chain, TimeoutConfig::default()),
        Some(key(0)),
        genesis,
        FuzzClock(cap.clone()),
        FuzzNet(cap.clone()),
        MemStorage::default(),
        tendr_kv::KvApp::new(chain),
        Box::new(tendr_core::traits::CachingVerifier::new()),
    )
    .ok()?;
    Some((node, cap))
}

/// Runs the engine target on `data`; every message that went in or out (the `wire` target's
/// corpus is seeded with this traffic).
fn run_engine(data: &[u8]) -> (Vec<Message>, u64) {
    let chain = "fuzz";
    let Some((mut node, cap)) = fuzz_node(chain) else {
        return (Vec::new(), 0);
    };
    let mut traffic = Vec::new();
    let mut last_proposal = None;
    let _ = node.start();
    let mut signed = std::collections::BTreeMap::new();
    let mut ops = data.iter().copied();
    while let Some(op) = ops.next() {
        let mut arg = || ops.next().unwrap_or(0);
        let (a, b) = (arg(), arg());
        let h = Height(node.engine().height().0 + u64::from(a % 3));
        let r = Round(u32::from(b % 4));
        let from = key(1 + (a / 3) % 3);
        let peer = from.address();
        let _ = match (op & 0x7f) % 6 {
            0 | 1 => {
                let t = if op & 0x80 == 0 {
                    VoteType::Prevote
                } else {
                    VoteType::Precommit
                };
                let value = seen_value(&cap, last_proposal, b);
                let mut v = Vote {
                    vote_type: t,
                    height: h,
                    round: r,
                    block_id: value,
                    validator: peer,
                    signature: from.sign(&vote_sign_bytes(chain, t, h, r, value)),
                };
                if (op & 0x7f) % 6 == 1 {
                    v.signature.0[(b % 64) as usize] ^= 1 | a;
                }
                traffic.push(Message::Vote(v.clone()));
                node.on_message(peer, Message::Vote(v))
            }
            2 => {
                let p = proposal(&node, chain, r, b);
                last_proposal = Some(p.1.block.id());
                traffic.push(Message::Proposal(Box::new(p.1.clone())));
                node.on_message(p.0, Message::Proposal(Box::new(p.1)))
            }
            3 => {
                let due = cap.borrow_mut().timers.pop();
                match due {
                    Some((at, t)) => {
                        let mut c = cap.borrow_mut();
                        c.now = c.now.max(at);
                        drop(c);
                        node.on_timeout(t)
                    }
                    None => Ok(()),
                }
            }
            4 => {
                cap.borrow_mut().now += u64::from(a) * 10;
                Ok(())
            }
            _ => {
                let n = usize::from(a % 64);
                let raw: Vec<u8> = (0..n).map(|_| ops.next().unwrap_or(0)).collect();
                match decode_message(&raw) {
                    Ok(m) => node.on_message(peer, m),
                    Err(_) => Ok(()),
                }
            }
        };
        traffic.extend(cap.borrow().sent.iter().cloned());
        check_own_votes(&cap, &mut signed);
        let _ = node.drain_events();
    }
    (traffic, node.engine().height().0)
}
/// The engine session the seeds come from: per height, a proposal by the validator whose turn
/// it is, prevotes and precommits of the other three for what was seen, time passing and a
/// timeout.
pub fn seed_script() -> Vec<u8> {
    let mut script = Vec::new();
    for round in 0..6u8 {
        script.extend_from_slice(&[2, 0, round * 2]);
        for v in 0..3u8 {
            script.extend_from_slice(&[0, v * 3, 0, 0x80, v * 3, 0]);
        }
        script.extend_from_slice(&[4, 200, 0, 3, 0, 0, 1, 1, 7]);
    }
    script
}

/// Seeds for every target's corpus, from real traffic and real files: the messages of an
/// engine session (proposals of the validator whose turn it is, voted on by the other three,
/// timeouts and time passing, over several heights), the node's own hello, config and genesis
/// files as `tendr testnet` writes them (`files`), RPC requests as clients send them, and
/// sealed store records of that session.
pub fn seeds(files: &[(&str, Vec<u8>)]) -> Vec<(&'static str, Vec<u8>)> {
    let script = seed_script();
    let (traffic, _) = run_engine(&script);
    let mut out: Vec<(&'static str, Vec<u8>)> = vec![("engine", script)];
    for m in &traffic {
        out.push(("wire", tendr_net::wire::message_frame(m).0.to_vec()));
        let entry = match m {
            Message::Vote(v) => WalEntry::Vote(v.clone()),
            Message::Proposal(p) => WalEntry::Proposal(p.clone()),
            _ => continue,
        };
        out.push(("store", tendr_node::store::seal(&tendr_core::codec::encode(&entry))));
    }
    let k = key(0);
    let body = tendr_net::wire::HelloBody {
        chain_id: "fuzz".into(),
        genesis_hash: Hash([3; 32]),
        public_key: k.public_key(),
        is_validator: true,
        advertise: "127.0.0.1:26656".parse().expect("address"),
        validator: Some(tendr_net::wire::ValidatorProof::sign(&key(1), "fuzz", &k.public_key())),
    };
    let hello = tendr_net::wire::Hello::sign(&k, tendr_net::wire::Side::Dialer, &[7; 32], body);
    out.push(("handshake", tendr_net::wire::hello_frame(&hello).to_vec()));
    for (name, bytes) in files {
        out.push((
            if name.contains("genesis") { "genesis" } else { "config" },
            bytes.clone(),
        ));
    }
    for req in [
        &b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"[..],
        b"GET /block?height=3 HTTP/1.1\r\n\r\n",
        b"GET /tx_search?query=\"tx.height=5\"&prove=true&page=1 HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 64\r\n\r\n{\"jsonrpc\":\"2.0\",\"method\":\"block\",\"params\":{\"height\":\"1\"},\"id\":1}",
        b"POST /tendr/tx HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\na=b=c\r\n0\r\n\r\n",
        b"tm.event='Tx' AND tx.height>=3",
        b"{\"height\":\"7\",\"tx\":\"YT0x\",\"hash\":\"0xAB\"}",
    ] {
        out.push(("rpc", req.to_vec()));
    }
    out
}

/// A block id of the newest proposal (ours, or the last one fed), nil, or another value.
fn seen_value(cap: &Shared, fed: Option<BlockId>, b: u8) -> Option<BlockId> {
    let ours = cap.borrow().sent.iter().rev().find_map(|m| match m {
        Message::Proposal(p) => Some(p.block.id()),
        _ => None,
    });
    match b % 4 {
        0 => fed.or(ours),
        1 => ours.or(fed),
        2 => None,
        _ => Some(Hash([b; 32])),
    }
}

/// A proposal for our height and round `r`, by the validator whose turn it is (signed with
/// its key when it is one of the other three; by validator 1 otherwise, which is refused).
fn proposal<C: Clock, N: Network, A: Application>(
    node: &Node<C, N, MemStorage, A>,
    chain: &str,
    r: Round,
    b: u8,
) -> (PeerId, Proposal) {
    let st = node.engine().chain();
    let turn = st.proposer(r);
    let k = (1..VALIDATORS)
        .map(key)
        .find(|k| k.address() == turn)
        .unwrap_or_else(|| key(1));
    let txs = if b.is_multiple_of(2) {
        vec![]
    } else {
        vec![format!("k{b}=v").into_bytes()]
    };
    let header = st.new_header(k.address(), TimeMs(u64::from(b)), &txs);
    let block = Block::new(header, txs, st.last_commit.clone());
    let pol = (b % 5 == 4 && r.0 > 0).then(|| Round(r.0 - 1));
    let sig = k.sign(&proposal_sign_bytes(chain, st.height, r, pol, block.id()));
    (
        k.address(),
        Proposal {
            height: st.height,
            round: r,
            pol_round: pol,
            block,
            signature: sig,
        },
    )
}

/// Our node's votes: one value per (height, round, type), whatever it was fed.
fn check_own_votes(cap: &Shared, signed: &mut std::collections::BTreeMap<(u64, u32, VoteType), Option<BlockId>>) {
    let us = key(0).address();
    let sent = std::mem::take(&mut cap.borrow_mut().sent);
    let keep: Vec<Message> = sent
        .iter()
        .rev()
        .filter(|m| matches!(m, Message::Proposal(_)))
        .take(1)
        .cloned()
        .collect();
    for m in &sent {
        if let Message::Vote(v) = m {
            if v.validator == us {
                let k = (v.height.0, v.round.0, v.vote_type);
                let prev = *signed.entry(k).or_insert(v.block_id);
                assert_eq!(prev, v.block_id, "the engine signed two different votes for {k:?}");
            }
        }
    }
    cap.borrow_mut().sent = keep;
}
