//! k256 ECDSA keys and signatures, SHA-256, and the domain-separated sign bytes.
//!
//! Public keys travel in their 33-byte compressed form, signatures in their 64-byte compact
//! form with a low `s` (k256 signs low-s and rejects high-s on verification, so a signature
//! cannot be malleated into a second valid one).

use crate::types::{Address, BlockId, Hash, Height, Round, VoteType};
use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use k256::ecdsa::{SigningKey, VerifyingKey};
use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("invalid public key: not a compressed secp256k1 point (33 bytes, 0x02/0x03 prefix)")]
    InvalidPublicKey,
    #[error("invalid private key: not a secp256k1 scalar in range (32 bytes)")]
    InvalidPrivateKey,
    #[error("invalid signature encoding: expected 64 bytes r||s with low s")]
    InvalidSignature,
    #[error("signature does not verify")]
    BadSignature,
}

pub fn sha256(bytes: &[u8]) -> Hash {
    Hash(Sha256::digest(bytes).into())
}

/// A compact 64-byte ECDSA signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sig:{}", hex::encode(&self.0[..4]))
    }
}

impl Signature {
    /// A zeroed signature; never verifies. Used as a placeholder before signing.
    pub const EMPTY: Signature = Signature([0; 64]);
}

/// A 33-byte compressed secp256k1 public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 33]);

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pk:{}", hex::encode(&self.0[..5]))
    }
}
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

impl PublicKey {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 33] = bytes.try_into().map_err(|_| CryptoError::InvalidPublicKey)?;
        let pk = PublicKey(arr);
        pk.verifying_key()?;
        Ok(pk)
    }
    pub fn from_hex(s: &str) -> Result<Self, CryptoError> {
        let bytes = hex::decode(s.trim_start_matches("0x")).map_err(|_| CryptoError::InvalidPublicKey)?;
        Self::from_slice(&bytes)
    }
    pub fn verifying_key(&self) -> Result<VerifyingKey, CryptoError> {
        VerifyingKey::from_sec1_bytes(&self.0).map_err(|_| CryptoError::InvalidPublicKey)
    }
    /// `0x` + hex(SHA-256(compressed key)[..20]).
    pub fn address(&self) -> Address {
        let h = sha256(&self.0);
        let mut a = [0u8; 20];
        a.copy_from_slice(&h.0[..20]);
        Address(a)
    }
}

/// Which of our consensus messages is signed. At one height and round a validator signs a
/// proposal (if it proposes), then a prevote, then a precommit: the order of the variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SignStep {
    /// Our proposal of a round.
    Proposal = 1,
    /// Our prevote.
    Prevote = 2,
    /// Our precommit.
    Precommit = 3,
}

impl SignStep {
    /// The step of a vote of type `t`.
    pub fn of_vote(t: VoteType) -> SignStep {
        match t {
            VoteType::Prevote => SignStep::Prevote,
            VoteType::Precommit => SignStep::Precommit,
        }
    }
}

/// The height, round and step of a message we sign; ordered as a validator signs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SignTarget {
    /// The height of the message.
    pub height: Height,
    /// Its round.
    pub round: Round,
    /// Which message of that round.
    pub step: SignStep,
}

/// A [`Signer`] refused to sign, and why (for example: it signed something else for the same
/// or a later height, round and step).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing refused: {0}")]
pub struct SignRefused(pub String);

/// What signs our proposals and votes. [`PrivateKey`] signs whatever it is given; a real node
/// wraps it in a guard that refuses what conflicts with what it signed before (the guard keeps
/// its state on disk, which the core never touches); the simulator's trusted-signature mode
/// brings a null signer of its own (never in a real node).
pub trait Signer: Send + Sync {
    fn public_key(&self) -> PublicKey;
    fn address(&self) -> Address;
    /// Signs `msg`, the sign bytes of our message at `at`. On `Err` the engine sends nothing
    /// for that step (not signing is always safe).
    fn sign(&self, at: SignTarget, msg: &[u8]) -> Result<Signature, SignRefused>;
}

/// A validator or node signing key, with its public key and address computed once.
#[derive(Clone)]
pub struct PrivateKey {
    key: SigningKey,
    public: PublicKey,
    address: Address,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({})", self.address)
    }
}

impl PrivateKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let key = SigningKey::from_slice(bytes).map_err(|_| CryptoError::InvalidPrivateKey)?;
        let point = key.verifying_key().to_sec1_point(true);
        let mut arr = [0u8; 33];
        arr.copy_from_slice(point.as_bytes());
        let public = PublicKey(arr);
        Ok(PrivateKey {
            key,
            public,
            address: public.address(),
        })
    }
    /// A key derived deterministically from a seed (tests and the simulator). Hashes until the
    /// digest is a valid scalar, which almost always takes one try.
    pub fn from_seed(seed: &[u8]) -> Self {
        let mut h = sha256(seed);
        loop {
            if let Ok(k) = Self::from_bytes(&h.0) {
                return k;
            }
            h = sha256(&h.0);
        }
    }
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes().into()
    }
    pub fn public_key(&self) -> PublicKey {
        self.public
    }
    pub fn address(&self) -> Address {
        self.address
    }
    /// Signs SHA-256 of `msg`.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        let digest = sha256(msg);
        let sig: k256::ecdsa::Signature = self
            .key
            .sign_prehash(&digest.0)
            .expect("signing a 32-byte prehash with a valid key cannot fail");
        let sig = sig.normalize_s();
        Signature(sig.to_bytes().into())
    }
}

impl Signer for PrivateKey {
    fn public_key(&self) -> PublicKey {
        self.public
    }
    fn address(&self) -> Address {
        self.address
    }
    fn sign(&self, _at: SignTarget, msg: &[u8]) -> Result<Signature, SignRefused> {
        Ok(PrivateKey::sign(self, msg))
    }
}

/// Verifies `sig` over SHA-256 of `msg`.
pub fn verify(key: &VerifyingKey, msg: &[u8], sig: &Signature) -> Result<(), CryptoError> {
    let s = k256::ecdsa::Signature::from_slice(&sig.0).map_err(|_| CryptoError::InvalidSignature)?;
    if s.normalize_s() != s {
        return Err(CryptoError::InvalidSignature);
    }
    key.verify_prehash(&sha256(msg).0, &s)
        .map_err(|_| CryptoError::BadSignature)
}

// Domain tags: a signature for one kind of message can never be replayed as another.
const VOTE_DOMAIN: &[u8] = b"tendr/vote/v1";
const PROPOSAL_DOMAIN: &[u8] = b"tendr/proposal/v1";

/// Sign bytes, on the stack: a vote's or a proposal's take at most 136 bytes with a chain id
/// of [`crate::limits::MAX_CHAIN_ID_BYTES`] (a longer one spills to the heap). Every vote a
/// node receives is checked against them, so they are built without an allocation.
pub type SignBytes = smallvec::SmallVec<[u8; 144]>;

fn push_common(out: &mut SignBytes, domain: &[u8], chain_id: &str, height: Height, round: Round) {
    out.extend_from_slice(domain);
    out.push(0);
    out.extend_from_slice(&(chain_id.len() as u32).to_be_bytes());
    out.extend_from_slice(chain_id.as_bytes());
    out.extend_from_slice(&height.0.to_be_bytes());
    out.extend_from_slice(&round.0.to_be_bytes());
}

fn push_block_id(out: &mut SignBytes, id: Option<BlockId>) {
    match id {
        None => out.push(0),
        Some(id) => {
            out.push(1);
            out.extend_from_slice(&id.0);
        }
    }
}

/// Canonical sign bytes of a vote: domain, chain id, height, round, type, block id (or nil).
pub fn vote_sign_bytes(
    chain_id: &str,
    vote_type: VoteType,
    height: Height,
    round: Round,
    block_id: Option<BlockId>,
) -> SignBytes {
    let mut out = SignBytes::new();
    push_common(&mut out, VOTE_DOMAIN, chain_id, height, round);
    out.push(match vote_type {
        VoteType::Prevote => 1,
        VoteType::Precommit => 2,
    });
    push_block_id(&mut out, block_id);
    out
}

/// Canonical sign bytes of a proposal: domain, chain id, height, round, POL round, block id.
pub fn proposal_sign_bytes(
    chain_id: &str,
    height: Height,
    round: Round,
    pol_round: Option<Round>,
    block_id: BlockId,
) -> SignBytes {
    let mut out = SignBytes::new();
    push_common(&mut out, PROPOSAL_DOMAIN, chain_id, height, round);
    match pol_round {
        None => out.push(0),
        Some(r) => {
            out.push(1);
            out.extend_from_slice(&r.0.to_be_bytes());
        }
    }
    push_block_id(&mut out, Some(block_id));
    out
}

// Serde: fixed-size byte strings, length checked on decode.
macro_rules! serde_bytes_fixed {
    ($ty:ident, $n:expr) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> de::Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        write!(f, "{} bytes", $n)
                    }
                    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<$ty, E> {
                        let arr: [u8; $n] = v.try_into().map_err(|_| E::invalid_length(v.len(), &self))?;
                        Ok($ty(arr))
                    }
                    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<$ty, A::Error> {
                        let mut arr = [0u8; $n];
                        for (i, b) in arr.iter_mut().enumerate() {
                            *b = seq
                                .next_element()?
                                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                        }
                        Ok($ty(arr))
                    }
                }
                d.deserialize_bytes(V)
            }
        }
    };
}
serde_bytes_fixed!(Signature, 64);
serde_bytes_fixed!(PublicKey, 33);
serde_bytes_fixed!(Hash, 32);
serde_bytes_fixed!(Address, 20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_roundtrip_and_tamper() {
        let k = PrivateKey::from_seed(b"k1");
        let vk = k.public_key().verifying_key().unwrap();
        let sig = k.sign(b"hello");
        assert!(verify(&vk, b"hello", &sig).is_ok());
        assert_eq!(verify(&vk, b"hellp", &sig), Err(CryptoError::BadSignature));
        let other = PrivateKey::from_seed(b"k2").public_key().verifying_key().unwrap();
        assert_eq!(verify(&other, b"hello", &sig), Err(CryptoError::BadSignature));
    }

    #[test]
    fn high_s_signature_is_rejected() {
        let k = PrivateKey::from_seed(b"k1");
        let vk = k.public_key().verifying_key().unwrap();
        let sig = k.sign(b"m");
        let s = k256::ecdsa::Signature::from_slice(&sig.0).unwrap();
        // Negate s: (r, n - s) is the malleated twin.
        let (r, s_) = s.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r, -*s_).unwrap();
        let high = Signature(high.to_bytes().into());
        assert_eq!(verify(&vk, b"m", &high), Err(CryptoError::InvalidSignature));
    }

    #[test]
    fn invalid_encodings_are_errors() {
        assert_eq!(PublicKey::from_slice(&[0u8; 33]), Err(CryptoError::InvalidPublicKey));
        assert_eq!(PublicKey::from_slice(&[2u8; 5]), Err(CryptoError::InvalidPublicKey));
        assert!(PrivateKey::from_bytes(&[0u8; 32]).is_err());
        let vk = PrivateKey::from_seed(b"x").public_key().verifying_key().unwrap();
        assert_eq!(
            verify(&vk, b"m", &Signature([0xff; 64])),
            Err(CryptoError::InvalidSignature)
        );
    }

    #[test]
    fn address_is_first_20_bytes_of_sha256_of_compressed_key() {
        let pk = PrivateKey::from_seed(b"a").public_key();
        let a = pk.address();
        assert_eq!(&a.0[..], &sha256(&pk.0).0[..20]);
        assert!(a.to_string().starts_with("0x"));
        assert_eq!(a.to_string().len(), 42);
        assert_eq!(a.to_string().parse::<Address>().unwrap(), a);
    }

    #[test]
    fn sign_bytes_are_domain_separated() {
        let v = vote_sign_bytes("c", VoteType::Prevote, Height(1), Round(0), None);
        let w = vote_sign_bytes("c", VoteType::Precommit, Height(1), Round(0), None);
        let x = vote_sign_bytes("d", VoteType::Prevote, Height(1), Round(0), None);
        let p = proposal_sign_bytes("c", Height(1), Round(0), None, Hash([0; 32]));
        assert!(v != w && v != x && v != p);
    }
}
