//! The wire format: length-prefixed frames, the hello that binds a node key to a TLS session,
//! and the one fallible frame decoder.
//!
//! A frame on a stream is `u32` big-endian length, then that many bytes: one tag byte and the
//! body. The length is checked against [`MAX_FRAME_BYTES`] before anything is allocated.
//! Tag [`TAG_MESSAGE`] carries a consensus [`Message`] in its canonical encoding (decoded by
//! `tendr_core::codec::decode_message`), [`TAG_PEERS`] a peer-exchange list, [`TAG_HELLO`] the
//! handshake (protocol version first, so a mismatch is reported as such).

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use tendr_core::codec::{decode_bounded, decode_message, encode, encode_message};
use tendr_core::crypto::{sha256, verify};
use tendr_core::limits::{MAX_CHAIN_ID_BYTES, MAX_MESSAGE_BYTES};
use tendr_core::{Address, Hash, Message, PeerId, PrivateKey, PublicKey, Signature};

/// Version of this wire format; peers speaking another one are refused. 2: hashes and
/// addresses are length-prefixed byte strings; transaction digests are their SHA-256.
pub const PROTOCOL_VERSION: u32 = 3;
/// Largest frame body (tag included).
pub const MAX_FRAME_BYTES: usize = MAX_MESSAGE_BYTES + 1;
/// Consensus messages larger than this go through the short bulk queue to the driver.
pub const BULK_FRAME_BYTES: usize = 16 * 1024;
/// Largest hello and peer-exchange bodies.
pub const MAX_CONTROL_BYTES: usize = 64 * 1024;
/// Most addresses in one peer-exchange frame.
pub const MAX_PEX_ENTRIES: usize = 64;

pub const TAG_MESSAGE: u8 = 0;
pub const TAG_PEERS: u8 = 1;
pub const TAG_HELLO: u8 = 2;

const HELLO_DOMAIN: &[u8] = b"tendr/net/hello/v1";
const VALIDATOR_PROOF_DOMAIN: &[u8] = b"tendr/net/validator-node/v1";
const EXPORTER_LABEL: &[u8] = b"EXPORTER-tendr-net-v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES} bytes")]
    TooLarge(usize),
    #[error("empty frame")]
    Empty,
    #[error("unknown frame tag {0}")]
    UnknownTag(u8),
    #[error("undecodable {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("protocol version {got}, this node speaks version {PROTOCOL_VERSION}; upgrade the older node")]
    Version { got: u32 },
}

/// One decoded frame. (Messages dominate the traffic; boxing them would cost an allocation
/// per message to save stack space in a short-lived value.)
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A consensus message and its relay digest.
    Message(Message, Digest),
    Peers(Vec<PexEntry>),
    Hello(Hello),
}

/// What deduplication keys a message by (its relay digest): a transaction by its SHA-256, the
/// hash the node keys it by too (so a gossiped transaction is hashed once on its way in), any
/// other message by the SHA-256 of its canonical encoding. The two kinds never compare equal,
/// so a transaction whose bytes are some message's encoding cannot shadow that message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digest {
    Tx(Hash),
    Message(Hash),
}

impl Digest {
    /// The relay digest of `msg`, whose canonical encoding is `body`.
    fn of(msg: &Message, body: &[u8]) -> Digest {
        match msg {
            Message::Tx(tx) => Digest::Tx(sha256(tx)),
            _ => Digest::Message(sha256(body)),
        }
    }

    /// The transaction's SHA-256, for a transaction's digest.
    pub fn tx_hash(&self) -> Option<Hash> {
        match self {
            Digest::Tx(h) => Some(*h),
            Digest::Message(_) => None,
        }
    }
}

/// One entry of peer exchange: a peer we are connected to, as it advertises itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PexEntry {
    pub id: PeerId,
    pub addr: SocketAddr,
    pub is_validator: bool,
    /// The validator whose node it proved to be (its [`ValidatorProof`]), if any.
    pub validator: Option<Address>,
}

/// A validator's signed statement that a node key is its node's. Peers then recognise the
/// validator's votes and proposals as authored by that connection, and relays skip it and
/// the peers directly connected to it (without it, a vote crossed a full mesh once per peer).
/// Signed with the validator key under its own domain, never a vote's; static: the hello,
/// signed with the node key over each TLS session, carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatorProof {
    pub public_key: PublicKey,
    pub signature: Signature,
}

fn validator_proof_bytes(chain_id: &str, node: &PublicKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(VALIDATOR_PROOF_DOMAIN);
    out.push(0);
    out.extend_from_slice(&encode(&(chain_id, node)));
    out
}

impl ValidatorProof {
    /// `validator` states that `node` is its node on `chain_id`.
    pub fn sign(validator: &PrivateKey, chain_id: &str, node: &PublicKey) -> ValidatorProof {
        ValidatorProof {
            public_key: validator.public_key(),
            signature: validator.sign(&validator_proof_bytes(chain_id, node)),
        }
    }

    /// The validator's address, when the proof names `node` on `chain_id` and verifies.
    pub fn verify(&self, chain_id: &str, node: &PublicKey) -> Result<Address, String> {
        let addr = self.public_key.address();
        let vk = self
            .public_key
            .verifying_key()
            .map_err(|e| format!("claimed validator {addr}: {e}"))?;
        verify(&vk, &validator_proof_bytes(chain_id, node), &self.signature).map_err(|e| {
            format!(
                "claimed validator {addr}: its proof for this node key does not verify ({e}); \
                 the peer does not hold that validator key"
            )
        })?;
        Ok(addr)
    }
}

/// What a node says about itself when a connection opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloBody {
    pub chain_id: String,
    pub genesis_hash: Hash,
    pub public_key: PublicKey,
    pub is_validator: bool,
    pub advertise: SocketAddr,
    /// The validator this node runs for, proven ([`ValidatorProof`]).
    pub validator: Option<ValidatorProof>,
}

/// The hello: its body and a node-key signature binding it to this TLS session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub body: HelloBody,
    pub signature: Signature,
}

/// Which end of the connection signs; a hello cannot be reflected back to its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Dialer,
    Listener,
}

/// The session's keying-material exporter value (RFC 5705 / RFC 8446 7.5): equal on both ends
/// of one TLS session, different for every other session.
pub fn exporter(conn: &quinn::Connection) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| "TLS keying-material exporter unavailable".to_string())?;
    Ok(out)
}

fn hello_sign_bytes(side: Side, exporter: &[u8; 32], body: &HelloBody) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(HELLO_DOMAIN);
    out.push(0);
    out.push(match side {
        Side::Dialer => b'd',
        Side::Listener => b'l',
    });
    out.extend_from_slice(exporter);
    out.extend_from_slice(&encode(body));
    out
}

impl Hello {
    pub fn sign(key: &PrivateKey, side: Side, exporter: &[u8; 32], body: HelloBody) -> Hello {
        let signature = key.sign(&hello_sign_bytes(side, exporter, &body));
        Hello { body, signature }
    }

    /// Checks the signature of a hello sent by the `side` end of the session with `exporter`,
    /// and the validator proof it carries.
    pub fn verify(&self, side: Side, exporter: &[u8; 32]) -> Result<PeerId, String> {
        let id = self.body.public_key.address();
        let vk = self
            .body
            .public_key
            .verifying_key()
            .map_err(|e| format!("claimed identity {id}: {e}"))?;
        verify(&vk, &hello_sign_bytes(side, exporter, &self.body), &self.signature).map_err(|e| {
            format!(
                "claimed identity {id}: its signature over this TLS session does not verify ({e}); \
                 the peer does not hold that node key"
            )
        })?;
        if let Some(proof) = &self.body.validator {
            proof
                .verify(&self.body.chain_id, &self.body.public_key)
                .map_err(|e| format!("peer {id}: {e}"))?;
        }
        Ok(id)
    }

    /// The validator the peer proved to run for (call after [`Hello::verify`]).
    pub fn validator(&self) -> Option<Address> {
        self.body.validator.as_ref().map(|p| p.public_key.address())
    }
}

/// Encodes a frame body with its length prefix, ready to write.
fn frame(tag: u8, body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + body.len());
    b.put_u32((body.len() + 1) as u32);
    b.put_u8(tag);
    b.put_slice(body);
    b.freeze()
}

/// A message frame and its relay digest.
pub fn message_frame(msg: &Message) -> (Bytes, Digest) {
    let body = encode_message(msg);
    let digest = Digest::of(msg, &body);
    (frame(TAG_MESSAGE, &body), digest)
}

/// A message frame alone, for sends whose digest nobody needs (point-to-point messages,
/// relays, transactions whose hash the caller has).
pub fn message_frame_only(msg: &Message) -> Bytes {
    frame(TAG_MESSAGE, &encode_message(msg))
}

pub fn peers_frame(entries: &[PexEntry]) -> Bytes {
    let n = entries.len().min(MAX_PEX_ENTRIES);
    frame(TAG_PEERS, &encode(&entries[..n]))
}

pub fn hello_frame(h: &Hello) -> Bytes {
    let mut body = PROTOCOL_VERSION.to_be_bytes().to_vec();
    body.extend_from_slice(&encode(h));
    frame(TAG_HELLO, &body)
}

/// A frame with an arbitrary protocol version (tests of the version check).
pub fn hello_frame_with_version(h: &Hello, version: u32) -> Bytes {
    let mut body = version.to_be_bytes().to_vec();
    body.extend_from_slice(&encode(h));
    frame(TAG_HELLO, &body)
}

/// Checks a frame length read from the wire, before any allocation.
pub fn check_len(len: u32) -> Result<usize, WireError> {
    let len = len as usize;
    match len {
        0 => Err(WireError::Empty),
        l if l > MAX_FRAME_BYTES => Err(WireError::TooLarge(l)),
        l => Ok(l),
    }
}

/// The one decoder for frame bodies (tag and payload) from peers. Never panics.
pub fn decode_frame(bytes: &[u8]) -> Result<Frame, WireError> {
    let (&tag, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge(bytes.len()));
    }
    match tag {
        TAG_MESSAGE => {
            let msg = decode_message(body).map_err(|e| WireError::Malformed {
                what: "message",
                detail: e.to_string(),
            })?;
            let digest = Digest::of(&msg, body);
            Ok(Frame::Message(msg, digest))
        }
        TAG_PEERS => {
            let entries: Vec<PexEntry> = decode_bounded(body, MAX_CONTROL_BYTES).map_err(|e| WireError::Malformed {
                what: "peer list",
                detail: e.to_string(),
            })?;
            if entries.len() > MAX_PEX_ENTRIES {
                return Err(WireError::Malformed {
                    what: "peer list",
                    detail: format!("{} entries, at most {MAX_PEX_ENTRIES}", entries.len()),
                });
            }
            Ok(Frame::Peers(entries))
        }
        TAG_HELLO => {
            let (v, rest) = body.split_at_checked(4).ok_or(WireError::Malformed {
                what: "hello",
                detail: "shorter than its version field".into(),
            })?;
            let got = u32::from_be_bytes(v.try_into().expect("4 bytes"));
            if got != PROTOCOL_VERSION {
                return Err(WireError::Version { got });
            }
            let h: Hello = decode_bounded(rest, MAX_CONTROL_BYTES).map_err(|e| WireError::Malformed {
                what: "hello",
                detail: e.to_string(),
            })?;
            if h.body.chain_id.len() > MAX_CHAIN_ID_BYTES {
                return Err(WireError::Malformed {
                    what: "hello",
                    detail: format!("chain id of {} bytes", h.body.chain_id.len()),
                });
            }
            Ok(Frame::Hello(h))
        }
        t => Err(WireError::UnknownTag(t)),
    }
}

/// Reads one frame from a stream. `Ok(None)` when the stream finished cleanly between frames.
pub async fn read_frame(s: &mut quinn::RecvStream) -> Result<Option<Vec<u8>>, ReadError> {
    let mut len = [0u8; 4];
    match s.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(ReadError::Stream(e.to_string())),
    }
    let n = check_len(u32::from_be_bytes(len)).map_err(ReadError::Wire)?;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf)
        .await
        .map_err(|e| ReadError::Stream(e.to_string()))?;
    Ok(Some(buf))
}

/// Why reading a frame failed: the peer's fault ([`ReadError::Wire`]) or the stream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Wire(WireError),
    #[error("stream: {0}")]
    Stream(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_roundtrip_and_bad_input_is_an_error() {
        let msg = Message::Tx(b"hello".to_vec());
        let (f, d) = message_frame(&msg);
        let len = check_len(u32::from_be_bytes(f[..4].try_into().unwrap())).unwrap();
        assert_eq!(decode_frame(&f[4..4 + len]).unwrap(), Frame::Message(msg, d));
        assert_eq!(check_len(u32::MAX), Err(WireError::TooLarge(u32::MAX as usize)));
        assert_eq!(check_len(0), Err(WireError::Empty));
        assert_eq!(decode_frame(&[9, 1, 2]), Err(WireError::UnknownTag(9)));
        assert!(decode_frame(&[TAG_MESSAGE, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_frame(&[TAG_HELLO, 0, 0]).is_err());
        for n in 0..64u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            let _ = decode_frame(&junk);
        }
    }

    /// Proposals and decided blocks travel whole, as one frame: the largest block the engine
    /// accepts (`MAX_BLOCK_BYTES` of transactions, as `MAX_BLOCK_TXS` small ones or as the
    /// fewest maximal ones), with a last commit of `MAX_VALIDATORS` signatures, the longest
    /// chain id, and (for `Decided`) its own commit of as many, must fit a frame with room
    /// to spare.
    #[test]
    fn the_largest_block_fits_one_frame_with_margin() {
        use tendr_core::limits::{MAX_BLOCK_BYTES, MAX_BLOCK_TXS, MAX_TX_BYTES, MAX_VALIDATORS};
        use tendr_core::{Address, Block, Commit, CommitSig, Header, Height, Proposal, Round, TimeMs};
        let commit = |h: u64| Commit {
            height: Height(h),
            round: Round(u32::MAX),
            block_id: Hash([0xff; 32]),
            signatures: (0..MAX_VALIDATORS)
                .map(|i| CommitSig {
                    validator: Address([i as u8; 20]),
                    signature: Signature([0xff; 64]),
                })
                .collect(),
        };
        let small = MAX_BLOCK_BYTES / MAX_BLOCK_TXS;
        let shapes = [
            vec![vec![0xff; small]; MAX_BLOCK_TXS],
            vec![vec![0xff; MAX_TX_BYTES]; MAX_BLOCK_BYTES / MAX_TX_BYTES],
        ];
        for txs in shapes {
            assert!(txs.len() <= MAX_BLOCK_TXS && txs.iter().map(Vec::len).sum::<usize>() <= MAX_BLOCK_BYTES);
            let block: Block = tendr_core::types::BlockData {
                header: Header {
                    chain_id: "c".repeat(MAX_CHAIN_ID_BYTES),
                    height: Height(u64::MAX),
                    time: TimeMs(u64::MAX),
                    prev_block_id: Some(Hash([0xff; 32])),
                    proposer: Address([0xff; 20]),
                    txs_hash: Hash([0xff; 32]),
                    app_hash: Hash([0xff; 32]),
                    validators_hash: Hash([0xff; 32]),
                    last_commit_hash: Hash([0xff; 32]),
                },
                txs,
                last_commit: Some(commit(u64::MAX - 1)),
            }
            .into();
            let proposal = Message::Proposal(Box::new(Proposal {
                height: Height(u64::MAX),
                round: Round(u32::MAX),
                pol_round: Some(Round(u32::MAX - 1)),
                block: block.clone(),
                signature: Signature([0xff; 64]),
            }));
            let decided = Message::Decided {
                block,
                commit: commit(u64::MAX),
            };
            for msg in [proposal, decided] {
                let (f, digest) = message_frame(&msg);
                let body = check_len(u32::from_be_bytes(f[..4].try_into().unwrap())).unwrap();
                assert_eq!(body, f.len() - 4);
                // At least a third of the frame limit to spare.
                assert!(body * 3 <= MAX_FRAME_BYTES * 2, "{} frame of {body} bytes", msg.kind());
                assert_eq!(decode_frame(&f[4..]), Ok(Frame::Message(msg, digest)));
            }
        }
    }

    #[test]
    fn hello_binds_key_side_and_session() {
        let k = PrivateKey::from_seed(b"n");
        let body = HelloBody {
            chain_id: "c".into(),
            genesis_hash: Hash([1; 32]),
            public_key: k.public_key(),
            is_validator: true,
            advertise: "127.0.0.1:1".parse().unwrap(),
            validator: None,
        };
        let h = Hello::sign(&k, Side::Dialer, &[7; 32], body);
        assert_eq!(h.verify(Side::Dialer, &[7; 32]), Ok(k.address()));
        assert!(h.verify(Side::Listener, &[7; 32]).is_err());
        assert!(h.verify(Side::Dialer, &[8; 32]).is_err());
        let other = PROTOCOL_VERSION + 1;
        let f = hello_frame_with_version(&h, other);
        assert_eq!(decode_frame(&f[4..]), Err(WireError::Version { got: other }));
        assert_eq!(decode_frame(&hello_frame(&h)[4..]), Ok(Frame::Hello(h)));
    }

    /// A hello names the validator its node runs for only with the validator key's proof for
    /// that node key and chain; any other proof refuses the hello.
    #[test]
    fn a_validator_proof_binds_validator_node_and_chain() {
        let (node, val, other) = (
            PrivateKey::from_seed(b"n"),
            PrivateKey::from_seed(b"v"),
            PrivateKey::from_seed(b"o"),
        );
        let hello = |proof: Option<ValidatorProof>| {
            let body = HelloBody {
                chain_id: "c".into(),
                genesis_hash: Hash([1; 32]),
                public_key: node.public_key(),
                is_validator: true,
                advertise: "127.0.0.1:1".parse().unwrap(),
                validator: proof,
            };
            Hello::sign(&node, Side::Dialer, &[7; 32], body)
        };
        let good = hello(Some(ValidatorProof::sign(&val, "c", &node.public_key())));
        assert_eq!(good.verify(Side::Dialer, &[7; 32]), Ok(node.address()));
        assert_eq!(good.validator(), Some(val.address()));
        assert_eq!(hello(None).validator(), None);
        let forged = [
            ValidatorProof::sign(&val, "c", &other.public_key()), // for another node
            ValidatorProof::sign(&val, "d", &node.public_key()),  // for another chain
            ValidatorProof {
                public_key: val.public_key(), // signed by someone else
                ..ValidatorProof::sign(&other, "c", &node.public_key())
            },
        ];
        for proof in forged {
            let e = hello(Some(proof)).verify(Side::Dialer, &[7; 32]).unwrap_err();
            assert!(e.contains("does not verify"), "{e}");
        }
    }
}
