//! tendr's blocks, commits, keys and results in CometBFT v0.38's JSON shapes: int64 as
//! strings, hashes and addresses as upper-case hex, bytes (transactions, signatures, keys) as
//! base64, times in RFC 3339, secp256k1 keys as `tendermint/PubKeySecp256k1`.
//!
//! Where tendr has no such thing, the shape says so plainly: blocks are not split into parts
//! (`parts` is one part named by the block id), there is no consensus-params, results or evidence hash
//! (empty), and votes carry no time of their own (a commit signature shows the time of the
//! block it commits).

use crate::store::TxRecord;
use base64::Engine as _;
use serde_json::{json, Value};
use tendr_core::crypto::PublicKey;
use tendr_core::traits::TxResult;
use tendr_core::types::{Block, Commit, Hash, Header};
use tendr_core::validator::ValidatorSet;

/// CometBFT's block protocol version (v0.38).
pub const BLOCK_PROTOCOL: u64 = 11;
/// CometBFT's p2p protocol version (v0.38).
pub const P2P_PROTOCOL: u64 = 8;
/// The public key type of tendr's keys.
pub const SECP256K1_KEY_TYPE: &str = "tendermint/PubKeySecp256k1";

/// Upper-case hex, as CometBFT writes hashes and addresses.
pub fn hex_up(b: &[u8]) -> String {
    hex::encode_upper(b)
}

/// Standard base64 with padding.
pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// RFC 3339 in UTC (millisecond precision: tendr's times are milliseconds).
pub fn time(ms: u64) -> String {
    crate::genesis::format_time(ms)
}

/// A block id. tendr sends a block whole, so its part set is one part, named by the block id
/// (clients such as cosmjs require a non-empty part set); no block is `{"hash": "", "parts":
/// {"total": 0, "hash": ""}}`, as CometBFT writes it.
pub fn block_id(id: Option<&Hash>) -> Value {
    match id {
        Some(h) => json!({"hash": hex_up(&h.0), "parts": {"total": 1, "hash": hex_up(&h.0)}}),
        None => json!({"hash": "", "parts": {"total": 0, "hash": ""}}),
    }
}

pub fn pub_key(pk: &PublicKey) -> Value {
    json!({"type": SECP256K1_KEY_TYPE, "value": b64(&pk.0)})
}

/// A header; `next_validators` is the hash of the set of the following height.
pub fn header(h: &Header, next_validators: &Hash) -> Value {
    json!({
        "version": {"block": BLOCK_PROTOCOL.to_string(), "app": "0"},
        "chain_id": h.chain_id,
        "height": h.height.0.to_string(),
        "time": time(h.time.0),
        "last_block_id": block_id(h.prev_block_id.as_ref()),
        "last_commit_hash": if h.height.0 > 1 { hex_up(&h.last_commit_hash.0) } else { String::new() },
        "data_hash": hex_up(&h.txs_hash.0),
        "validators_hash": hex_up(&h.validators_hash.0),
        "next_validators_hash": hex_up(&next_validators.0),
        "consensus_hash": "",
        "app_hash": hex_up(&h.app_hash.0),
        "last_results_hash": "",
        "evidence_hash": "",
        "proposer_address": hex_up(&h.proposer.0),
    })
}

/// A commit; `time_ms` is the time of the block it commits (tendr's votes carry none).
pub fn commit(c: Option<&Commit>, time_ms: u64) -> Value {
    let Some(c) = c else {
        return json!({"height": "0", "round": 0, "block_id": block_id(None), "signatures": []});
    };
    let sigs: Vec<Value> = c
        .signatures
        .iter()
        .map(|s| {
            json!({
                "block_id_flag": 2,
                "validator_address": hex_up(&s.validator.0),
                "timestamp": time(time_ms),
                "signature": b64(&s.signature.0),
            })
        })
        .collect();
    json!({
        "height": c.height.0.to_string(),
        "round": c.round.0,
        "block_id": block_id(Some(&c.block_id)),
        "signatures": sigs,
    })
}

/// A block; `last_commit_time_ms` is the time of the previous block.
pub fn block(b: &Block, next_validators: &Hash, last_commit_time_ms: u64) -> Value {
    let txs: Vec<String> = b.txs.iter().map(|t| b64(t)).collect();
    json!({
        "header": header(&b.header, next_validators),
        "data": {"txs": txs},
        "evidence": {"evidence": []},
        "last_commit": commit(b.last_commit.as_ref(), last_commit_time_ms),
    })
}

/// Encoded size of a block, for `block_size` in block metas.
pub fn block_size(b: &Block) -> usize {
    tendr_core::codec::encode(&**b).len()
}

/// The ABCI result of an executed (or checked) transaction.
pub fn tx_result(r: &TxResult) -> Value {
    json!({
        "code": r.code,
        "data": null,
        "log": r.log,
        "info": "",
        "gas_wanted": "0",
        "gas_used": "0",
        "events": [],
        "codespace": "",
    })
}

/// A committed transaction with its result (`tx`, `tx_search`).
pub fn tx(r: &TxRecord) -> Value {
    json!({
        "hash": r.hash.to_ascii_uppercase(),
        "height": r.height.to_string(),
        "index": r.index,
        "tx_result": tx_result(&r.result),
        "tx": b64(&r.tx),
    })
}

/// One validator as `validators` and `status` show it.
pub fn validator(address: &[u8], pk: &PublicKey, power: u64) -> Value {
    json!({
        "address": hex_up(address),
        "pub_key": pub_key(pk),
        "voting_power": power.to_string(),
        "proposer_priority": "0",
    })
}

/// The members of a validator set, in the set's order.
pub fn validators(vs: &ValidatorSet) -> Vec<Value> {
    vs.validators()
        .iter()
        .map(|v| validator(&v.address.0, &v.pub_key, v.power.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tendr_core::crypto::PrivateKey;
    use tendr_core::types::{CommitSig, Height, Round};

    #[test]
    fn commits_and_keys_in_cometbft_form() {
        let k = PrivateKey::from_seed(b"s");
        let v = validator(&k.address().0, &k.public_key(), 10);
        assert_eq!(v["pub_key"]["type"], SECP256K1_KEY_TYPE);
        assert_eq!(v["voting_power"], "10");
        assert_eq!(v["address"].as_str().unwrap().len(), 40);
        assert!(v["address"].as_str().unwrap().chars().all(|c| !c.is_ascii_lowercase()));
        let c = Commit {
            height: Height(3),
            round: Round(1),
            block_id: Hash([7; 32]),
            signatures: vec![CommitSig {
                validator: k.address(),
                signature: k.sign(b"x"),
            }],
        };
        let j = commit(Some(&c), 1_000);
        assert_eq!(j["height"], "3");
        assert_eq!(j["round"], 1);
        assert_eq!(j["block_id"]["hash"], "07".repeat(32));
        assert_eq!(j["signatures"][0]["block_id_flag"], 2);
        assert_eq!(j["signatures"][0]["timestamp"], "1970-01-01T00:00:01.000Z");
        assert_eq!(commit(None, 0)["height"], "0");
    }
}
