//! A plain deterministic loop: N nodes, a shared queue of (time, seq) events, 1 ms links.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use tendr_core::chain::ChainState;
use tendr_core::engine::Timeout;
use tendr_core::traits::*;
use tendr_core::*;
use tendr_kv::KvApp;

pub enum Ev {
    Deliver { to: usize, from: PeerId, msg: Box<Message> },
    Timer { node: usize, t: Timeout },
}

#[derive(Default)]
pub struct World {
    pub now: u64,
    seq: u64,
    pub queue: BTreeMap<(u64, u64), Ev>,
    pub peers: Vec<PeerId>,
    /// Nodes whose outgoing messages are dropped.
    pub silent: Vec<bool>,
    /// Every vote any node sent: (validator, height, round, type) -> value. A second, different
    /// value is a double sign.
    pub signed: BTreeMap<(Address, u64, u32, VoteType), Option<BlockId>>,
    pub double_signs: u32,
}

impl World {
    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }
    fn record(&mut self, msg: &Message) {
        if let Message::Vote(v) = msg {
            let k = (v.validator, v.height.0, v.round.0, v.vote_type);
            match self.signed.get(&k) {
                Some(prev) if *prev != v.block_id => self.double_signs += 1,
                _ => {
                    self.signed.insert(k, v.block_id);
                }
            }
        }
    }
}

pub type Shared = Rc<RefCell<World>>;

pub struct MemClock(pub Shared, pub usize);
impl Clock for MemClock {
    fn now(&self) -> TimeMs {
        TimeMs(self.0.borrow().now)
    }
    fn schedule(&mut self, at: TimeMs, t: Timeout) {
        self.0.borrow_mut().push(at.0, Ev::Timer { node: self.1, t });
    }
}

pub struct MemNet(pub Shared, pub usize);
impl Network for MemNet {
    fn broadcast(&mut self, msg: &Message) {
        let mut w = self.0.borrow_mut();
        w.record(msg);
        if w.silent[self.1] {
            return;
        }
        let (now, from) = (w.now, w.peers[self.1]);
        for to in 0..w.peers.len() {
            if to != self.1 {
                w.push(
                    now + 1,
                    Ev::Deliver {
                        to,
                        from,
                        msg: Box::new(msg.clone()),
                    },
                );
            }
        }
    }
    fn send(&mut self, to: PeerId, msg: &Message) {
        let mut w = self.0.borrow_mut();
        if w.silent[self.1] {
            return;
        }
        let (now, from) = (w.now, w.peers[self.1]);
        if let Some(i) = w.peers.iter().position(|p| *p == to) {
            w.push(
                now + 1,
                Ev::Deliver {
                    to: i,
                    from,
                    msg: Box::new(msg.clone()),
                },
            );
        }
    }
}

/// Storage that outlives its node (shared), so a node can be rebuilt from it.
pub type MemStore = MemStorage;

pub type MemNode = Node<MemClock, MemNet, MemStore, KvApp>;

pub const CHAIN: &str = "test-chain";

pub fn keys(n: usize) -> Vec<PrivateKey> {
    (0..n)
        .map(|i| PrivateKey::from_seed(format!("validator-{i}").as_bytes()))
        .collect()
}

pub fn genesis(keys: &[PrivateKey], powers: &[u64]) -> ChainState {
    let vs = ValidatorSet::new(
        keys.iter()
            .zip(powers)
            .map(|(k, p)| (k.public_key(), VotingPower(*p)))
            .collect(),
    )
    .unwrap();
    ChainState::genesis(CHAIN, vs, KvApp::new(CHAIN).initial_app_hash(), TimeMs(0))
}

pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig {
        propose_ms: 100,
        propose_delta_ms: 50,
        prevote_ms: 50,
        prevote_delta_ms: 20,
        precommit_ms: 50,
        precommit_delta_ms: 20,
        commit_ms: 10,
        rebroadcast_ms: 200,
        sync_retry_ms: 50,
    }
}

pub struct Net {
    pub world: Shared,
    pub nodes: Vec<Option<MemNode>>,
    pub stores: Vec<MemStore>,
    pub keys: Vec<PrivateKey>,
    pub genesis: ChainState,
    /// Decided block ids per node, by height.
    pub decided: Vec<BTreeMap<u64, (BlockId, Round)>>,
    /// The nodes' timeouts ([`timeouts`] unless a test changes them before [`Net::build`]).
    pub timeouts: TimeoutConfig,
}

impl Net {
    pub fn new(n: usize) -> Net {
        let keys = keys(n);
        let genesis = genesis(&keys, &vec![1; n]);
        let world: Shared = Rc::new(RefCell::new(World {
            peers: keys.iter().map(|k| k.address()).collect(),
            silent: vec![false; n],
            ..Default::default()
        }));
        let stores = vec![MemStore::default(); n]
            .into_iter()
            .map(|_| MemStore::default())
            .collect::<Vec<_>>();
        let mut net = Net {
            world,
            nodes: vec![],
            stores,
            keys,
            genesis,
            decided: vec![BTreeMap::new(); n],
            timeouts: timeouts(),
        };
        for i in 0..n {
            let node = net.build(i);
            net.nodes.push(Some(node));
        }
        net
    }

    pub fn build(&self, i: usize) -> MemNode {
        Node::new(
            EngineConfig::new(CHAIN, self.timeouts.clone()),
            Some(self.keys[i].clone()),
            self.genesis.clone(),
            MemClock(self.world.clone(), i),
            MemNet(self.world.clone(), i),
            self.stores[i].clone(),
            KvApp::new(CHAIN),
            Box::new(CachingVerifier::new()),
        )
        .unwrap()
    }

    pub fn start_all(&mut self) {
        for n in self.nodes.iter_mut().flatten() {
            n.start().unwrap();
        }
        self.drain();
    }

    fn drain(&mut self) {
        for (i, n) in self.nodes.iter_mut().enumerate() {
            let Some(n) = n else { continue };
            for e in n.drain_events() {
                if let NodeEvent::Decided { block, commit, .. } = e {
                    self.decided[i].insert(block.height().0, (block.id(), commit.round));
                }
            }
        }
    }

    /// Runs events until `pred` holds or `max_ms` of virtual time pass.
    pub fn run_until(&mut self, max_ms: u64, mut pred: impl FnMut(&Net) -> bool) -> bool {
        let deadline = self.world.borrow().now + max_ms;
        loop {
            if pred(self) {
                return true;
            }
            let next = {
                let mut w = self.world.borrow_mut();
                let Some(((t, _), ev)) = w.queue.pop_first() else {
                    return false;
                };
                if t > deadline {
                    return false;
                }
                w.now = t;
                ev
            };
            match next {
                Ev::Deliver { to, from, msg } => {
                    if let Some(n) = self.nodes[to].as_mut() {
                        let _ = n.on_message(from, *msg);
                    }
                }
                Ev::Timer { node, t } => {
                    if let Some(n) = self.nodes[node].as_mut() {
                        n.on_timeout(t).unwrap();
                    }
                }
            }
            self.drain();
        }
    }

    pub fn min_height(&self) -> u64 {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.is_some())
            .map(|(i, _)| self.decided[i].keys().next_back().copied().unwrap_or(0))
            .min()
            .unwrap_or(0)
    }

    pub fn assert_agreement(&self) {
        let mut all: BTreeMap<u64, BlockId> = BTreeMap::new();
        for d in &self.decided {
            for (h, (id, _)) in d {
                if let Some(prev) = all.insert(*h, *id) {
                    assert_eq!(prev, *id, "two different blocks decided at height {h}");
                }
            }
        }
        assert_eq!(self.world.borrow().double_signs, 0, "an honest validator signed twice");
    }
}

#[test]
fn four_validators_commit_200_heights_with_identical_blocks_and_a_silent_proposer() {
    let mut net = Net::new(4);
    net.start_all();
    // Submit some transactions so blocks are not all empty.
    for i in 0..50 {
        net.nodes[i % 4]
            .as_mut()
            .unwrap()
            .submit_tx(format!("k{i}=v{i}").into_bytes())
            .unwrap();
    }
    assert!(
        net.run_until(600_000, |n| n.min_height() >= 20),
        "stalled before height 20"
    );
    // The proposer of the next height goes silent: that height needs a later round.
    let h = net.min_height() + 2;
    let proposer = {
        let e = net.nodes[0].as_ref().unwrap().engine();
        assert!(e.height().0 <= h);
        e.chain().proposer(Round(0))
    };
    let silent = net.keys.iter().position(|k| k.address() == proposer).unwrap();
    net.world.borrow_mut().silent[silent] = true;
    assert!(net.run_until(600_000, |n| n.min_height() >= h + 3));
    net.world.borrow_mut().silent[silent] = false;
    assert!(
        net.run_until(6_000_000, |n| n.min_height() >= 200),
        "stalled before height 200"
    );
    net.assert_agreement();
    let later_round = (0..4).any(|i| net.decided[i].values().any(|(_, r)| r.0 >= 1));
    assert!(
        later_round,
        "some height should have been decided in round >= 1 while the proposer was silent"
    );
    // Identical blocks, byte for byte, at every height on every node.
    for h in 1..=200u64 {
        let b0 = net.stores[0].decided(Height(h)).unwrap().unwrap().0;
        for s in &net.stores[1..] {
            assert_eq!(
                s.decided(Height(h)).unwrap().unwrap().0,
                b0,
                "block at height {h} differs"
            );
        }
    }
    // The transactions made it into blocks and every app agrees.
    let apps: Vec<_> = net.nodes.iter().map(|n| n.as_ref().unwrap().app.app_hash()).collect();
    assert!(apps.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(net.nodes[0].as_ref().unwrap().app.get("k49"), Some("v49"));
}

#[test]
fn unequal_powers_make_progress_and_agree() {
    let keys = keys(4);
    let mut net = Net::new(4);
    net.keys = keys.clone();
    net.genesis = genesis(&keys, &[5, 1, 1, 1]);
    for i in 0..4 {
        net.nodes[i] = Some(net.build(i));
    }
    net.start_all();
    assert!(net.run_until(600_000, |n| n.min_height() >= 30));
    net.assert_agreement();
}

/// Issue 18, item 6: after a height decided in round 1 (its proposer silent), the next block
/// still comes `commit_ms` after the previous block's time, not at once.
#[test]
fn block_time_is_kept_after_a_height_decided_in_a_later_round() {
    let mut net = Net::new(4);
    net.timeouts.commit_ms = 400;
    for i in 0..4 {
        net.nodes[i] = Some(net.build(i));
    }
    net.start_all();
    assert!(net.run_until(600_000, |n| n.min_height() >= 3));
    let h = net.min_height() + 2;
    let proposer = net.nodes[0].as_ref().unwrap().engine().chain().proposer(Round(0));
    assert!(net.nodes[0].as_ref().unwrap().engine().height().0 <= h);
    let silent = net.keys.iter().position(|k| k.address() == proposer).unwrap();
    net.world.borrow_mut().silent[silent] = true;
    assert!(net.run_until(600_000, |n| n.min_height() >= h + 3));
    net.assert_agreement();
    let slow = (1..=h + 3).filter(|k| net.decided[0][k].1 .0 >= 1).count();
    assert!(slow >= 1, "some height was decided in a later round");
    let time = |k: u64| net.stores[0].decided(Height(k)).unwrap().unwrap().0.header.time.0;
    for k in 2..=h + 3 {
        let gap = time(k) - time(k - 1);
        assert!(gap >= 400, "block {k} came {gap} ms after block {}, not 400", k - 1);
    }
}
