//! Restart from persisted state: no double sign, the node catches up and votes again.

use crate::memnet::*;
use tendr_core::crypto::vote_sign_bytes;
use tendr_core::engine::{Input, Output, Timeout, WalEntry};
use tendr_core::state_machine::TimeoutKind;
use tendr_core::traits::{CachingVerifier, MemStorage, Storage, StorageError};
use tendr_core::*;

#[test]
fn restarted_validator_refuses_to_sign_a_conflicting_vote() {
    let keys = keys(4);
    let g = genesis(&keys, &[1, 1, 1, 1]);
    let proposer = g.proposer(Round(0));
    let me = keys.iter().find(|k| k.address() != proposer).unwrap().clone();
    // Before the crash we prevoted block V at (1, 0) and persisted it.
    let v_id = Hash([7; 32]);
    let sig = me.sign(&vote_sign_bytes(
        CHAIN,
        VoteType::Prevote,
        Height(1),
        Round(0),
        Some(v_id),
    ));
    let persisted = Vote {
        vote_type: VoteType::Prevote,
        height: Height(1),
        round: Round(0),
        block_id: Some(v_id),
        validator: me.address(),
        signature: sig,
    };
    let mut e = Engine::new(
        EngineConfig::new(CHAIN, timeouts()),
        Some(me.clone()),
        g,
        vec![WalEntry::Vote(persisted.clone())],
        Box::new(CachingVerifier::new()),
    );
    e.handle(TimeMs(0), Input::Start).unwrap();
    // The log shows we prevoted: the engine resumes in step prevote (L27), so timeoutPropose
    // (L57, which would prevote nil and conflict) no longer applies.
    assert_eq!(e.step(), tendr_core::state_machine::Step::Prevote);
    let mut sent = Vec::new();
    for (at, kind) in [(1000, TimeoutKind::Propose), (1500, TimeoutKind::Rebroadcast)] {
        let t = Timeout {
            height: Height(1),
            round: Round(0),
            kind,
        };
        let out = e.handle(TimeMs(at), Input::TimeoutElapsed(t)).unwrap();
        assert!(
            !out.iter().any(|o| matches!(o, Output::Persist(_))),
            "nothing new may be signed: {out:?}"
        );
        sent.extend(out.into_iter().filter_map(|o| match o {
            Output::Broadcast(Message::Vote(v)) => Some(v),
            _ => None,
        }));
    }
    assert_eq!(sent, vec![persisted], "only the persisted vote is (re-)sent");
}

#[test]
fn persist_comes_before_broadcast_of_every_signed_message() {
    let keys = keys(1);
    let g = genesis(&keys, &[1]);
    let mut e = Engine::new(
        EngineConfig::new(CHAIN, timeouts()),
        Some(keys[0].clone()),
        g,
        vec![],
        Box::new(CachingVerifier::new()),
    );
    let out = e.handle(TimeMs(0), Input::Start).unwrap();
    assert!(out.iter().any(|o| matches!(o, Output::BuildBlock { .. })));
    let out = e
        .handle(
            TimeMs(1),
            Input::BlockTxs {
                height: Height(1),
                round: Round(0),
                txs: vec![b"a=1".to_vec()],
            },
        )
        .unwrap();
    // A lone validator proposes, prevotes, precommits and decides in one go.
    let mut persisted = std::collections::BTreeSet::new();
    for o in &out {
        match o {
            Output::Persist(WalEntry::Vote(v)) => {
                persisted.insert(format!("{v:?}"));
            }
            Output::Persist(WalEntry::Proposal(p)) => {
                persisted.insert(format!("{p:?}"));
            }
            Output::Broadcast(Message::Vote(v)) => {
                assert!(persisted.contains(&format!("{v:?}")), "vote sent before persisted")
            }
            Output::Broadcast(Message::Proposal(p)) => {
                assert!(persisted.contains(&format!("{p:?}")), "proposal sent before persisted")
            }
            _ => {}
        }
    }
    assert!(
        out.iter().any(|o| matches!(o, Output::Decide { .. })),
        "a lone validator decides: {out:?}"
    );
}

#[test]
fn crashed_validator_restarts_from_storage_catches_up_and_votes_again() {
    let mut net = Net::new(4);
    net.start_all();
    assert!(net.run_until(600_000, |n| n.min_height() >= 10));
    net.nodes[1] = None; // crash
    let crashed_at = net.decided[1].keys().next_back().copied().unwrap();
    assert!(
        net.run_until(600_000, |n| n.min_height() >= crashed_at + 15),
        "3 of 4 keep deciding"
    );
    let mut node = net.build(1); // recovers from its own store
    assert_eq!(node.engine().height().0, crashed_at + 1, "replayed every stored block");
    node.start().unwrap();
    net.nodes[1] = Some(node);
    let target = net.min_height() + 30;
    assert!(
        net.run_until(600_000, |n| n.decided[1].keys().next_back().copied().unwrap_or(0)
            >= target),
        "caught up"
    );
    net.assert_agreement();
    // It votes again: its precommits appear in recent commits.
    let addr = net.keys[1].address();
    let in_commits = (target - 10..target)
        .filter_map(|h| net.stores[0].commit(h))
        .filter(|c| c.signatures.iter().any(|s| s.validator == addr))
        .count();
    assert!(
        in_commits > 0,
        "restarted validator's precommits appear in recent commits"
    );
    let recent_votes = net
        .world
        .borrow()
        .signed
        .keys()
        .filter(|(a, h, _, _)| *a == addr && *h > target - 10)
        .count();
    assert!(recent_votes > 0, "restarted validator votes again");
}

/// A validator that locked a block and restarts keeps what justifies the lock: as proposer of
/// a later round it proposes that block again with its proof of lock (L14-L16, L28) and
/// prevotes for it, instead of staying locked on a block nobody can re-propose.
#[test]
fn restarted_locked_validator_re_proposes_its_locked_block_with_the_polka() {
    let keys = keys(4);
    let g = genesis(&keys, &[1, 1, 1, 1]);
    let p0 = keys
        .iter()
        .find(|k| k.address() == g.proposer(Round(0)))
        .unwrap()
        .clone();
    let me = keys
        .iter()
        .find(|k| k.address() == g.proposer(Round(1)) && k.address() != p0.address())
        .expect("another validator proposes round 1")
        .clone();
    let engine = |key: &PrivateKey, wal: Vec<WalEntry>| {
        Engine::new(
            EngineConfig::new(CHAIN, timeouts()),
            Some(key.clone()),
            g.clone(),
            wal,
            Box::new(CachingVerifier::new()),
        )
    };
    // The round-0 proposer builds and signs a block.
    let mut proposer = engine(&p0, vec![]);
    proposer.handle(TimeMs(0), Input::Start).unwrap();
    let out = proposer
        .handle(
            TimeMs(1),
            Input::BlockTxs {
                height: Height(1),
                round: Round(0),
                txs: vec![b"a=1".to_vec()],
            },
        )
        .unwrap();
    let proposal = out
        .iter()
        .find_map(|o| match o {
            Output::Broadcast(Message::Proposal(p)) => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    let id = proposal.block.id();
    let prevote = |k: &PrivateKey| Vote {
        vote_type: VoteType::Prevote,
        height: Height(1),
        round: Round(0),
        block_id: Some(id),
        validator: k.address(),
        signature: k.sign(&vote_sign_bytes(
            CHAIN,
            VoteType::Prevote,
            Height(1),
            Round(0),
            Some(id),
        )),
    };
    // We receive it and +2/3 prevotes: we lock (L36) and precommit.
    let mut e = engine(&me, vec![]);
    let mut wal = vec![];
    let mut feed = |e: &mut Engine, now: u64, input: Input| {
        let out = e.handle(TimeMs(now), input).unwrap();
        let mut outputs = vec![];
        for o in out {
            match o {
                Output::Persist(w) => wal.push(w),
                other => outputs.push(other),
            }
        }
        outputs
    };
    feed(&mut e, 2, Input::Start);
    let from = p0.address();
    let mut later = feed(
        &mut e,
        3,
        Input::Message {
            from,
            msg: Message::Proposal(proposal.clone()),
        },
    );
    // the engine asks for the block to be validated
    if later.iter().any(|o| matches!(o, Output::ValidateBlock { .. })) {
        later = feed(
            &mut e,
            3,
            Input::BlockValidity {
                height: Height(1),
                block_id: id,
                valid: true,
            },
        );
    }
    drop(later);
    for k in keys.iter().filter(|k| k.address() != me.address()) {
        feed(
            &mut e,
            4,
            Input::Message {
                from: k.address(),
                msg: Message::Vote(prevote(k)),
            },
        );
    }
    let lock = wal
        .iter()
        .position(|w| matches!(w, WalEntry::Lock { .. }))
        .expect("the lock is logged");
    let precommit = wal
        .iter()
        .position(|w| matches!(w, WalEntry::Vote(v) if v.vote_type == VoteType::Precommit && v.block_id == Some(id)))
        .expect("we precommitted the block");
    assert!(lock < precommit, "the lock's proof is logged before the precommit");
    let WalEntry::Lock { block, prevotes } = &wal[lock] else {
        unreachable!()
    };
    assert_eq!(block.id(), id);
    assert!(prevotes.len() >= 3, "+2/3 prevotes kept: {}", prevotes.len());

    // Crash: a new engine from the log alone, then round 0 times out into round 1.
    let mut e = engine(&me, wal.clone());
    e.handle(TimeMs(10), Input::Start).unwrap();
    let mut out = vec![];
    for kind in [TimeoutKind::Propose, TimeoutKind::Prevote, TimeoutKind::Precommit] {
        let t = Timeout {
            height: Height(1),
            round: Round(0),
            kind,
        };
        out.extend(e.handle(TimeMs(10_000), Input::TimeoutElapsed(t)).unwrap_or_default());
    }
    // L55 needs f+1 of round 1 or a precommit timeout of round 0; make sure we are in round 1.
    assert_eq!(e.round(), Round(1), "moved to round 1: {out:?}");
    let reproposed = out
        .iter()
        .find_map(|o| match o {
            Output::Broadcast(Message::Proposal(p)) if p.round == Round(1) => Some(p),
            _ => None,
        })
        .expect("round-1 proposer proposes");
    assert_eq!(reproposed.block.id(), id, "the locked block, not a new one");
    assert_eq!(reproposed.pol_round, Some(Round(0)), "with its proof-of-lock round");
    let polka = out
        .iter()
        .filter(|o| matches!(o, Output::Broadcast(Message::Vote(v)) if v.round == Round(0) && v.vote_type == VoteType::Prevote && v.block_id == Some(id)))
        .count();
    assert!(polka >= 3, "the polka goes with it: {polka} prevotes");
}

/// A signer that records what it is asked to sign and refuses from `refuse_from` on: the
/// node-side double-sign guard's seam.
struct Recording {
    key: PrivateKey,
    asked: std::sync::Arc<std::sync::Mutex<Vec<tendr_core::crypto::SignTarget>>>,
    refuse: bool,
}

impl Signer for Recording {
    fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }
    fn address(&self) -> Address {
        self.key.address()
    }
    fn sign(
        &self,
        at: tendr_core::crypto::SignTarget,
        msg: &[u8],
    ) -> Result<Signature, tendr_core::crypto::SignRefused> {
        self.asked.lock().unwrap().push(at);
        if self.refuse {
            return Err(tendr_core::crypto::SignRefused("test".into()));
        }
        Ok(self.key.sign(msg))
    }
}

/// Issue 16: a signer may refuse (the real node's guard refuses what conflicts with its
/// `validator_state.json`). The engine then persists and sends nothing of its own, and asks in
/// signing order (height, round, then proposal < prevote < precommit).
#[test]
fn a_refusing_signer_sends_nothing_and_is_asked_in_order() {
    use tendr_core::crypto::{SignStep, SignTarget};
    let keys = keys(1);
    for refuse in [false, true] {
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let signer = Recording {
            key: keys[0].clone(),
            asked: asked.clone(),
            refuse,
        };
        let mut e = Engine::with_signer(
            EngineConfig::new(CHAIN, timeouts()),
            Some(Box::new(signer)),
            genesis(&keys, &[1]),
            vec![],
            Box::new(CachingVerifier::new()),
        );
        let mut out = e.handle(TimeMs(0), Input::Start).unwrap();
        let txs = Input::BlockTxs {
            height: Height(1),
            round: Round(0),
            txs: vec![],
        };
        out.extend(e.handle(TimeMs(1), txs).unwrap());
        for kind in [TimeoutKind::Propose, TimeoutKind::Prevote, TimeoutKind::Precommit] {
            let t = Timeout {
                height: Height(1),
                round: Round(0),
                kind,
            };
            out.extend(e.handle(TimeMs(5000), Input::TimeoutElapsed(t)).unwrap());
        }
        let own = out
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Output::Persist(_) | Output::Broadcast(Message::Vote(_) | Message::Proposal(_))
                )
            })
            .count();
        let asked = asked.lock().unwrap().clone();
        let step = |s| SignTarget {
            height: Height(1),
            round: Round(0),
            step: s,
        };
        assert_eq!(asked.first(), Some(&step(SignStep::Proposal)), "{asked:?}");
        assert!(asked.windows(2).all(|w| w[0] < w[1]), "asked out of order: {asked:?}");
        if refuse {
            assert_eq!(own, 0, "a refused signature was persisted or sent: {out:?}");
            assert_eq!(e.height(), Height(1));
        } else {
            assert_eq!(asked.len(), 3, "{asked:?}");
            assert!(own > 0);
            assert_eq!(e.height(), Height(1), "waits for the application to execute");
        }
    }
}

/// Storage whose `sync` fails while `failing` is set (a full disk under a write-behind store),
/// and whose `save_decided` fails while `refuse_blocks` is set (a store that refuses writes).
struct FailingSync {
    inner: MemStorage,
    failing: std::rc::Rc<std::cell::Cell<bool>>,
    refuse_blocks: std::rc::Rc<std::cell::Cell<bool>>,
}

impl Storage for FailingSync {
    fn append_wal(&mut self, e: WalEntry) -> Result<(), StorageError> {
        self.inner.append_wal(e)
    }
    fn wal(&self, h: Height) -> Result<Vec<WalEntry>, StorageError> {
        self.inner.wal(h)
    }
    fn save_decided(&mut self, b: &Block, c: &Commit) -> Result<(), StorageError> {
        if self.refuse_blocks.get() {
            return Err(StorageError("disk full".into()));
        }
        self.inner.save_decided(b, c)
    }
    fn decided(&self, h: Height) -> Result<Option<(Block, Commit)>, StorageError> {
        self.inner.decided(h)
    }
    fn last_height(&self) -> Result<Height, StorageError> {
        self.inner.last_height()
    }
    fn sync(&mut self) -> Result<(), StorageError> {
        match self.failing.get() {
            true => Err(StorageError("disk full".into())),
            false => Ok(()),
        }
    }
}

/// Issue 16: while the store cannot make its writes durable, nothing is sent (persist before
/// send), but the rest of the input still runs: the engine's later signatures are persisted
/// and its timers armed, so once writes succeed again a timer re-sends what it signed. (Before,
/// the first failed send dropped every later output, timers included, and the node could
/// stay silent for good.)
#[test]
fn a_failed_sync_skips_sends_but_not_timers_and_the_node_resumes() {
    use std::cell::Cell;
    use std::rc::Rc;
    let keys = keys(4);
    let g = genesis(&keys, &[1, 1, 1, 1]);
    let proposer = g.proposer(Round(0));
    let key = keys.iter().find(|k| k.address() == proposer).unwrap().clone();
    let world: Shared = Rc::default();
    world.borrow_mut().peers = keys.iter().map(|k| k.address()).collect();
    world.borrow_mut().silent = vec![false; 4];
    let me = keys.iter().position(|k| k.address() == proposer).unwrap();
    let failing = Rc::new(Cell::new(true));
    let store = MemStorage::default();
    let mut node = tendr_core::traits::Node::new(
        EngineConfig::new(CHAIN, timeouts()),
        Some(key),
        g,
        MemClock(world.clone(), me),
        MemNet(world.clone(), me),
        FailingSync {
            inner: store.clone(),
            failing: failing.clone(),
            refuse_blocks: Rc::default(),
        },
        tendr_kv::KvApp::new(CHAIN),
        Box::new(CachingVerifier::new()),
    )
    .unwrap();
    let e = node.start().unwrap_err();
    assert!(matches!(e, tendr_core::traits::NodeError::Storage(_)), "{e}");
    let sent = |w: &Shared| {
        w.borrow()
            .queue
            .values()
            .filter(|e| matches!(e, Ev::Deliver { .. }))
            .count()
    };
    let timers = |w: &Shared| {
        w.borrow()
            .queue
            .values()
            .filter(|e| matches!(e, Ev::Timer { .. }))
            .count()
    };
    assert_eq!(sent(&world), 0, "sent while the store could not sync");
    let persisted = store.wal(Height(1)).unwrap();
    assert!(
        persisted.iter().any(|e| matches!(e, WalEntry::Proposal(_)))
            && persisted.iter().any(|e| matches!(e, WalEntry::Vote(_))),
        "the proposal and the prevote after it are persisted: {persisted:?}"
    );
    assert!(timers(&world) > 0, "no timer armed");
    failing.set(false);
    // Fire timers in order until the node sends again.
    for _ in 0..20 {
        let next = world.borrow_mut().queue.pop_first();
        let Some(((at, _), ev)) = next else { break };
        world.borrow_mut().now = at;
        if let Ev::Timer { t, .. } = ev {
            node.on_timeout(t).unwrap();
        }
        if sent(&world) > 0 {
            break;
        }
    }
    assert!(sent(&world) > 0, "the node did not resume sending");
    assert_eq!(world.borrow().double_signs, 0);
}

/// Issue 16: a store that refuses a decided block (a full disk) leaves the height waiting for
/// it; once writes succeed `retry_stalled` (which the real driver calls every second) or any
/// later input stores and executes it and the chain goes on, with no restart. (Before, the
/// block was dropped and the engine waited for it forever.)
#[test]
fn a_refused_decided_block_is_retried_and_the_height_goes_on() {
    use std::cell::Cell;
    use std::rc::Rc;
    let keys = keys(1);
    let world: Shared = Rc::default();
    world.borrow_mut().peers = vec![keys[0].address()];
    world.borrow_mut().silent = vec![false];
    let refuse = Rc::new(Cell::new(true));
    let store = MemStorage::default();
    let mut node = tendr_core::traits::Node::new(
        EngineConfig::new(CHAIN, timeouts()),
        Some(keys[0].clone()),
        genesis(&keys, &[1]),
        MemClock(world.clone(), 0),
        MemNet(world.clone(), 0),
        FailingSync {
            inner: store.clone(),
            failing: Rc::default(),
            refuse_blocks: refuse.clone(),
        },
        tendr_kv::KvApp::new(CHAIN),
        Box::new(CachingVerifier::new()),
    )
    .unwrap();
    assert!(node.start().is_err(), "the decided block could not be stored");
    assert_eq!((node.engine().height(), store.height()), (Height(1), 0));
    let fire = |node: &mut tendr_core::traits::Node<_, _, _, _>| {
        let next = world.borrow_mut().queue.pop_first();
        if let Some(((at, _), Ev::Timer { t, .. })) = next {
            world.borrow_mut().now = at;
            let _ = node.on_timeout(t);
        }
    };
    for _ in 0..3 {
        fire(&mut node);
    }
    assert_eq!(node.engine().height(), Height(1), "went on without storing the block");
    assert!(node.is_stalled());
    assert!(node.retry_stalled().is_err(), "stored while the store refuses");
    refuse.set(false);
    node.retry_stalled().unwrap();
    assert!(!node.is_stalled());
    for _ in 0..50 {
        if store.height() >= 3 {
            break;
        }
        fire(&mut node);
    }
    assert!(
        store.height() >= 3,
        "the chain did not go on: stored {}",
        store.height()
    );
}

/// The key-value app behind a switch, as an application behind a socket that can be down:
/// while `down`, it builds no block and executes none (validating and checking still answer).
struct FlakyApp {
    inner: tendr_kv::KvApp,
    down: std::rc::Rc<std::cell::Cell<bool>>,
}

impl tendr_core::traits::Application for FlakyApp {
    fn initial_app_hash(&self) -> Hash {
        self.inner.initial_app_hash()
    }
    fn check_tx(&self, tx: &[u8]) -> Result<(), String> {
        self.inner.check_tx(tx)
    }
    fn prepare_txs(
        &mut self,
        mempool: &tendr_core::mempool::Mempool,
        max_txs: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, tendr_core::traits::AppError> {
        if self.down.get() {
            return Err(tendr_core::traits::AppError("down".into()));
        }
        self.inner.prepare_txs(mempool, max_txs, max_bytes)
    }
    fn validate_block(&self, block: &Block) -> bool {
        self.inner.validate_block(block)
    }
    fn execute_block(
        &mut self,
        block: &Block,
        validators: &ValidatorSet,
    ) -> Result<tendr_core::traits::ExecResult, tendr_core::traits::AppError> {
        if self.down.get() {
            return Err(tendr_core::traits::AppError("down".into()));
        }
        self.inner.execute_block(block, validators)
    }
}

/// An application that cannot answer: no proposal is signed without its transactions, a
/// decided block it cannot execute leaves the height waiting (stored once, not signed past),
/// and once it answers the retry executes the block and the chain goes on.
#[test]
fn a_failing_application_proposes_nothing_and_stalls_the_height_until_it_answers() {
    use std::cell::Cell;
    use std::rc::Rc;
    let keys = keys(1);
    let world: Shared = Rc::default();
    world.borrow_mut().peers = vec![keys[0].address()];
    world.borrow_mut().silent = vec![false];
    let down = Rc::new(Cell::new(true));
    let store = MemStorage::default();
    let mut node = tendr_core::traits::Node::new(
        EngineConfig::new(CHAIN, timeouts()),
        Some(keys[0].clone()),
        genesis(&keys, &[1]),
        MemClock(world.clone(), 0),
        MemNet(world.clone(), 0),
        store.clone(),
        FlakyApp {
            inner: tendr_kv::KvApp::new(CHAIN),
            down: down.clone(),
        },
        Box::new(CachingVerifier::new()),
    )
    .unwrap();
    let e = node.start().unwrap_err();
    assert!(matches!(e, tendr_core::traits::NodeError::App(_)), "{e}");
    let fire = |node: &mut tendr_core::traits::Node<_, _, _, _>| {
        let next = world.borrow_mut().queue.pop_first();
        if let Some(((at, _), Ev::Timer { t, .. })) = next {
            world.borrow_mut().now = at;
            let _ = node.on_timeout(t);
        }
    };
    for _ in 0..6 {
        fire(&mut node);
    }
    let proposals = store
        .wal(Height(1))
        .unwrap()
        .iter()
        .filter(|e| matches!(e, WalEntry::Proposal(_)))
        .count();
    assert_eq!(proposals, 0, "a proposal signed without the application's transactions");
    // The application builds blocks again but cannot execute them.
    down.set(false);
    for _ in 0..20 {
        if store.height() >= 1 {
            break;
        }
        fire(&mut node);
    }
    assert_eq!(store.height(), 1, "block 1 was not decided and stored");
    down.set(true);
    for _ in 0..20 {
        if node.is_stalled() {
            break;
        }
        fire(&mut node);
    }
    let stalled_at = node.engine().height();
    assert!(
        node.is_stalled(),
        "a block the application did not execute was not held"
    );
    for _ in 0..5 {
        fire(&mut node);
    }
    assert_eq!(node.engine().height(), stalled_at, "went on without executing");
    assert!(node.retry_stalled().is_err());
    down.set(false);
    node.retry_stalled().unwrap();
    assert!(!node.is_stalled());
    for _ in 0..50 {
        if node.engine().height().0 >= stalled_at.0 + 2 {
            break;
        }
        fire(&mut node);
    }
    assert!(node.engine().height().0 >= stalled_at.0 + 2, "the chain did not go on");
    assert_eq!(world.borrow().double_signs, 0);
}
