//! The ABCI application against a small scripted server on loopback: the happy path, and an
//! application that is down, slow, or answers garbage.

use super::*;
use std::io::Write;
use std::net::TcpListener;
use tendermint_proto::v0_38::abci::{
    Request, Response, ResponseCheckTx, ResponseCommit, ResponseException, ResponseFinalizeBlock, ResponseFlush,
    ResponseInfo, ResponseInitChain, ResponsePrepareProposal, ResponseProcessProposal, ResponseQuery,
};
use tendr_core::crypto::PrivateKey;
use tendr_core::types::{Address, Header, Height};

/// How the fake application answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// A key-value store: `k=v` sets, Query reads, CheckTx refuses `bad`.
    Honest,
    /// Accepts the connection and never answers.
    Silent,
    /// Answers every request with bytes that are not ABCI.
    Garbage,
    /// Answers FinalizeBlock with an exception.
    FailsFinalize,
}

/// Serves one connection at a time on a fresh port, in a thread; returns its address.
fn serve(mode: Mode) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let mut kv = std::collections::BTreeMap::<Vec<u8>, Vec<u8>>::new();
        let mut height = 0i64;
        let mut app_hash = Bytes::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            loop {
                let Ok(req) = codec::read::<Request>(&mut s) else { break };
                let v = match mode {
                    Mode::Silent => {
                        std::thread::sleep(Duration::from_secs(5));
                        break;
                    }
                    Mode::Garbage => {
                        let _ = s.write_all(&[0x05, 0xff, 0xff, 0xff, 0xff, 0xff]);
                        continue;
                    }
                    _ => answer(mode, req.value.unwrap(), &mut kv, &mut height, &mut app_hash),
                };
                if s.write_all(&codec::encode(&Response { value: Some(v) })).is_err() {
                    break;
                }
            }
        }
    });
    addr
}

fn answer(
    mode: Mode,
    req: request::Value,
    kv: &mut std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
    height: &mut i64,
    app_hash: &mut Bytes,
) -> response::Value {
    use request::Value as Q;
    use response::Value as A;
    match req {
        Q::Flush(_) => A::Flush(ResponseFlush {}),
        Q::Info(_) => A::Info(ResponseInfo {
            last_block_height: *height,
            last_block_app_hash: app_hash.clone(),
            ..Default::default()
        }),
        Q::InitChain(_) => A::InitChain(ResponseInitChain::default()),
        Q::CheckTx(r) if r.tx.as_ref() == b"bad" => A::CheckTx(ResponseCheckTx {
            code: 7,
            log: "bad tx".into(),
            ..Default::default()
        }),
        Q::CheckTx(_) => A::CheckTx(ResponseCheckTx::default()),
        Q::PrepareProposal(r) => A::PrepareProposal(ResponsePrepareProposal { txs: r.txs }),
        Q::ProcessProposal(r) => A::ProcessProposal(ResponseProcessProposal {
            status: if r.txs.iter().any(|t| t.as_ref() == b"bad") {
                2
            } else {
                1
            },
        }),
        Q::FinalizeBlock(_) if mode == Mode::FailsFinalize => A::Exception(ResponseException {
            error: "disk on fire".into(),
        }),
        Q::FinalizeBlock(r) => {
            for t in &r.txs {
                let (k, v) = t.split_at(t.iter().position(|b| *b == b'=').unwrap_or(t.len()));
                kv.insert(k.to_vec(), v.get(1..).unwrap_or_default().to_vec());
            }
            *app_hash = Bytes::from(vec![kv.len() as u8; 32]);
            A::FinalizeBlock(ResponseFinalizeBlock {
                tx_results: r.txs.iter().map(|_| Default::default()).collect(),
                app_hash: app_hash.clone(),
                ..Default::default()
            })
        }
        Q::Commit(_) => {
            *height += 1;
            A::Commit(ResponseCommit::default())
        }
        Q::Query(r) => A::Query(ResponseQuery {
            value: kv.get(r.data.as_ref()).cloned().unwrap_or_default().into(),
            ..Default::default()
        }),
        _ => A::Exception(ResponseException {
            error: "unexpected".into(),
        }),
    }
}

fn app(addr: &str, timeout_ms: u64) -> (AbciApp, ValidatorSet) {
    app_with_log(addr, timeout_ms, None)
}

fn app_with_log(addr: &str, timeout_ms: u64, results_log: Option<PathBuf>) -> (AbciApp, ValidatorSet) {
    let k = PrivateKey::from_seed(b"abci");
    let vs = ValidatorSet::new(vec![(k.public_key(), VotingPower(10))]).unwrap();
    let f = AbciFactory {
        target: ProxyTarget {
            app: ProxyApp::parse(&format!("tcp://{addr}")).unwrap(),
            timeout: Duration::from_millis(timeout_ms),
        },
        genesis: Some(GenesisFacts {
            time: TimeMs(1_000),
            validators: vs.clone(),
        }),
        results_log,
    };
    (f.make("c"), vs)
}

fn block(height: u64, txs: &[&[u8]]) -> Block {
    let header = Header {
        chain_id: "c".into(),
        height: Height(height),
        time: TimeMs(2_000 + height),
        prev_block_id: None,
        proposer: Address::default(),
        txs_hash: Hash::default(),
        app_hash: Hash::default(),
        validators_hash: Hash::default(),
        last_commit_hash: Hash::default(),
    };
    Block::new(header, txs.iter().map(|t| t.to_vec()).collect(), None)
}

#[test]
fn every_call_reaches_the_application() {
    let (mut a, vs) = app(&serve(Mode::Honest), 2_000);
    assert_eq!(a.check_tx(b"k=v"), Ok(()));
    let e = a.check_tx(b"bad").unwrap_err();
    assert!(e.contains("code 7") && e.contains("bad tx"), "{e}");
    let mut pool = Mempool::new();
    pool.insert(b"k=v".to_vec(), sha256(b"k=v"));
    assert_eq!(a.prepare_txs(&pool, 10, 1_000).unwrap(), vec![b"k=v".to_vec()]);
    assert!(a.validate_block(&block(1, &[b"k=v"])));
    assert!(!a.validate_block(&block(1, &[b"bad"])), "ProcessProposal's REJECT");
    let r = a.execute_block(&block(1, &[b"k=v", b"x=y"]), &vs).unwrap();
    assert_eq!(r.app_hash, Hash([2; 32]));
    assert_eq!(r.tx_results.len(), 2);
    assert_eq!(a.query("", b"k").value, b"v");
    // The next height follows; a height already executed is refused, with the way out.
    a.execute_block(&block(2, &[]), &vs).unwrap();
    let e = a.execute_block(&block(2, &[]), &vs).unwrap_err().0;
    assert!(e.contains("already at height 2") && e.contains("empty"), "{e}");
}

#[test]
fn an_application_that_is_down_is_named_with_the_fix() {
    // A port nothing listens on: bound, then closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let (mut a, vs) = app(&addr, 500);
    let e = a.execute_block(&block(1, &[]), &vs).unwrap_err().0;
    assert!(
        e.contains(&format!("proxy_app `tcp://{addr}`")) && e.contains("start the application"),
        "{e}"
    );
    assert!(
        !a.validate_block(&block(1, &[])),
        "no prevote for a block the application did not see"
    );
    assert!(a.prepare_txs(&Mempool::new(), 10, 100).is_err());
    assert!(a.check_tx(b"k=v").is_err());
    assert_eq!(a.query("", b"k").code, QUERY_UNREACHABLE);
}

#[test]
fn a_slow_application_times_out() {
    let (mut a, vs) = app(&serve(Mode::Silent), 300);
    let t0 = Instant::now();
    let e = a.execute_block(&block(1, &[]), &vs).unwrap_err().0;
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(
        e.contains("did not answer Info within 300 ms") && e.contains("proxy_app_timeout_ms"),
        "{e}"
    );
}

#[test]
fn garbage_answers_are_an_error_not_a_panic() {
    let (mut a, vs) = app(&serve(Mode::Garbage), 500);
    let e = a.execute_block(&block(1, &[]), &vs).unwrap_err().0;
    assert!(e.contains("failed on Info") && e.contains("CometBFT v0.38"), "{e}");
}

#[test]
fn a_failing_finalize_block_executes_nothing() {
    let (mut a, vs) = app(&serve(Mode::FailsFinalize), 500);
    let e = a.execute_block(&block(1, &[]), &vs).unwrap_err().0;
    assert!(e.contains("FinalizeBlock: disk on fire"), "{e}");
}

#[test]
fn proxy_app_addresses_are_checked() {
    assert_eq!(
        ProxyApp::parse("tcp://127.0.0.1:26658"),
        Ok(ProxyApp::Tcp("127.0.0.1:26658".into()))
    );
    assert_eq!(
        ProxyApp::parse("unix:///tmp/a.sock"),
        Ok(ProxyApp::Unix("/tmp/a.sock".into()))
    );
    for bad in [
        "kvstore",
        "tcp://127.0.0.1",
        "tcp://:1",
        "unix://rel",
        "http://x:1",
        "tcp://h:0",
    ] {
        let e = ProxyApp::parse(bad).unwrap_err();
        assert!(e.contains("tcp://host:port"), "{bad}: {e}");
    }
}

#[test]
fn app_hashes_and_validator_updates_map_to_tendr() {
    assert_eq!(app_hash_of(&[]), Hash::default());
    assert_eq!(app_hash_of(&[7; 32]), Hash([7; 32]));
    assert_eq!(app_hash_of(&[0; 16]), sha256(&[0; 16]));
    let pk = PrivateKey::from_seed(b"v").public_key();
    let u = validator_update(&abci_validator(&pk, 5)).unwrap();
    assert_eq!((u.pub_key, u.power), (pk, VotingPower(5)));
    let ed = AbciValidatorUpdate {
        pub_key: Some(AbciPublicKey {
            sum: Some(Sum::Ed25519(vec![0; 32])),
        }),
        power: 1,
    };
    assert!(validator_update(&ed).unwrap_err().contains("secp256k1"));
    let neg = AbciValidatorUpdate {
        power: -1,
        ..abci_validator(&pk, 0)
    };
    assert!(validator_update(&neg).unwrap_err().contains("negative"));
    let mut missing = false;
    let r = exec_result(ResponseFinalizeBlock::default(), 2, &mut missing).unwrap();
    assert!(missing && r.tx_results.len() == 2);
    let two = ResponseFinalizeBlock {
        tx_results: vec![Default::default(); 2],
        ..Default::default()
    };
    assert!(exec_result(two, 3, &mut missing)
        .unwrap_err()
        .contains("2 transaction results"));
}

/// A node restarted while its application kept running: the blocks the application has are
/// answered from the results log (the application is not asked twice), the next one is sent.
#[test]
fn a_restarted_node_replays_from_the_results_log_into_a_running_application() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("data/abci_results.log");
    let addr = serve(Mode::Honest);
    let blocks: Vec<Block> = (1..=4).map(|h| block(h, &[format!("k{h}=v").as_bytes()])).collect();
    let (mut first, vs) = app_with_log(&addr, 2_000, Some(log.clone()));
    let done: Vec<ExecResult> = blocks[..3]
        .iter()
        .map(|b| first.execute_block(b, &vs).unwrap())
        .collect();
    drop(first);
    let (mut again, vs) = app_with_log(&addr, 2_000, Some(log.clone()));
    for (b, res) in blocks[..3].iter().zip(&done) {
        assert_eq!(&again.execute_block(b, &vs).unwrap(), res, "block {}", b.height().0);
    }
    let r = again.execute_block(&blocks[3], &vs).unwrap();
    assert_eq!(
        r.app_hash,
        Hash([4; 32]),
        "the fourth block reached the application once"
    );
    // Another node's data folder (a log that stops at 1): refused, naming the log.
    drop(again);
    let other = dir.path().join("other.log");
    let (mut short, _) = app_with_log(&addr, 2_000, Some(other.clone()));
    let e = short.execute_block(&blocks[0], &vs).unwrap_err().0;
    assert!(
        e.contains("at height 4 but this node executed blocks up to 0") && e.contains("other.log"),
        "{e}"
    );
}
