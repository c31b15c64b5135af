//! The trace: every processed event feeds a running SHA-256 (the trace hash, equal for equal
//! runs bit for bit) and, when asked, a JSON-lines stream. Nothing is kept in memory.

use crate::config::Fault;
use crate::world::Payload;
use sha2::{Digest, Sha256};
use std::io::Write;
use tendr_core::engine::Timeout;
use tendr_core::*;

pub struct Trace {
    hasher: Sha256,
    writer: Option<std::io::BufWriter<Box<dyn Write>>>,
}

impl Default for Trace {
    fn default() -> Self {
        Self::new()
    }
}

fn vote_code(t: VoteType) -> u8 {
    match t {
        VoteType::Prevote => 1,
        VoteType::Precommit => 2,
    }
}

impl Trace {
    pub fn new() -> Self {
        Trace {
            hasher: Sha256::new(),
            writer: None,
        }
    }
    pub fn set_writer(&mut self, w: Box<dyn Write>) {
        self.writer = Some(std::io::BufWriter::new(w));
    }
    pub fn hash_hex(&mut self) -> String {
        if let Some(w) = self.writer.as_mut() {
            let _ = w.flush();
        }
        hex::encode(self.hasher.clone().finalize())
    }

    fn line(&mut self, v: serde_json::Value) {
        if let Some(w) = self.writer.as_mut() {
            let _ = writeln!(w, "{v}");
        }
    }

    /// The first line of a JSON trace: one entry per node slot (its validator key index and
    /// Byzantine behaviour, if any). Not part of the hash.
    pub fn start(&mut self, nodes: &[(usize, Option<String>)]) {
        if self.writer.is_some() {
            let nodes: Vec<serde_json::Value> = nodes
                .iter()
                .enumerate()
                .map(|(i, (k, b))| serde_json::json!({"node": i, "validator": k, "byzantine": b}))
                .collect();
            self.line(serde_json::json!({"t": 0, "ev": "start", "nodes": nodes}));
        }
    }

    pub fn deliver(&mut self, t: u64, sent: u64, from: usize, to: usize, p: &Payload) {
        let h = &mut self.hasher;
        h.update([1u8]);
        h.update(t.to_be_bytes());
        h.update((from as u32).to_be_bytes());
        h.update((to as u32).to_be_bytes());
        let (kind, height, round, value) = match p {
            Payload::Bytes(b) => {
                h.update([9u8]);
                h.update((b.len() as u64).to_be_bytes());
                ("bytes", 0, 0, None)
            }
            Payload::Msg(m) => match m.as_ref() {
                Message::Vote(v) => {
                    h.update([vote_code(v.vote_type)]);
                    h.update(v.height.0.to_be_bytes());
                    h.update(v.round.0.to_be_bytes());
                    h.update(v.validator.0);
                    h.update(v.block_id.map(|b| b.0).unwrap_or([0; 32]));
                    (v.vote_type_name(), v.height.0, v.round.0, v.block_id)
                }
                Message::Proposal(pr) => {
                    h.update([3u8]);
                    h.update(pr.height.0.to_be_bytes());
                    h.update(pr.round.0.to_be_bytes());
                    h.update(pr.block.header.txs_hash.0);
                    h.update(pr.block.header.time.0.to_be_bytes());
                    ("proposal", pr.height.0, pr.round.0, None)
                }
                m => {
                    h.update(m.kind().as_bytes());
                    h.update(m.height().map(|x| x.0).unwrap_or(0).to_be_bytes());
                    (m.kind(), m.height().map(|x| x.0).unwrap_or(0), 0, None)
                }
            },
        };
        if self.writer.is_some() {
            self.line(serde_json::json!({"t": t, "sent": sent, "ev": "deliver", "from": from, "to": to, "kind": kind, "h": height, "r": round, "value": value.map(|b| b.to_hex())}));
        }
    }

    pub fn timer(&mut self, t: u64, slot: usize, to: &Timeout) {
        self.hasher.update([2u8]);
        self.hasher.update(t.to_be_bytes());
        self.hasher.update((slot as u32).to_be_bytes());
        self.hasher.update(to.height.0.to_be_bytes());
        self.hasher.update(to.round.0.to_be_bytes());
        self.hasher.update([to.kind as u8]);
        if self.writer.is_some() {
            self.line(serde_json::json!({"t": t, "ev": "timeout", "node": slot, "h": to.height.0, "r": to.round.0, "kind": format!("{:?}", to.kind)}));
        }
    }

    pub fn decided(&mut self, t: u64, slot: usize, height: u64, id: &BlockId) {
        self.hasher.update([4u8]);
        self.hasher.update(t.to_be_bytes());
        self.hasher.update((slot as u32).to_be_bytes());
        self.hasher.update(height.to_be_bytes());
        self.hasher.update(id.0);
        if self.writer.is_some() {
            self.line(serde_json::json!({"t": t, "ev": "decided", "node": slot, "h": height, "value": id.to_hex()}));
        }
    }

    /// A node stopped by itself (its disk failed).
    pub fn halt(&mut self, t: u64, slot: usize) {
        self.hasher.update([6u8]);
        self.hasher.update(t.to_be_bytes());
        self.hasher.update((slot as u32).to_be_bytes());
        if self.writer.is_some() {
            self.line(serde_json::json!({"t": t, "ev": "halt", "node": slot}));
        }
    }

    /// A node crashed by BUGGIFY comes back.
    pub fn restart(&mut self, t: u64, slot: usize) {
        self.hasher.update([7u8]);
        self.hasher.update(t.to_be_bytes());
        self.hasher.update((slot as u32).to_be_bytes());
        if self.writer.is_some() {
            self.line(serde_json::json!({"t": t, "ev": "restart", "node": slot}));
        }
    }

    /// A swizzle clogs (`on`) or unclogs node `node`'s links.
    pub fn clog(&mut self, t: u64, node: usize, on: bool) {
        self.hasher.update([8u8]);
        self.hasher.update(t.to_be_bytes());
        self.hasher.update((node as u32).to_be_bytes());
        self.hasher.update([on as u8]);
        if self.writer.is_some() {
            self.line(serde_json::json!({"t": t, "ev": if on { "clog" } else { "unclog" }, "node": node}));
        }
    }

    pub fn fault(&mut self, t: u64, f: &Fault) {
        let s = serde_json::to_string(&f.kind).unwrap_or_default();
        self.hasher.update([5u8]);
        self.hasher.update(t.to_be_bytes());
        self.hasher.update(s.as_bytes());
        if self.writer.is_some() {
            self.line(serde_json::json!({"t": t, "ev": "fault", "fault": f.kind}));
        }
    }
}

trait VoteName {
    fn vote_type_name(&self) -> &'static str;
}
impl VoteName for Vote {
    fn vote_type_name(&self) -> &'static str {
        match self.vote_type {
            VoteType::Prevote => "prevote",
            VoteType::Precommit => "precommit",
        }
    }
}
