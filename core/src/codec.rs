//! The one canonical encoding (postcard over serde) and the one fallible decoder for bytes that
//! come from outside. Decoding checks the size first and never panics.

use crate::limits::MAX_MESSAGE_BYTES;
use crate::types::Message;
use serde::{de::DeserializeOwned, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {got} bytes exceeds the limit of {max} bytes")]
    TooLarge { got: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
}

/// Canonical encoding. Encoding our own in-memory values cannot fail.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Starting at 256 bytes saves the first few reallocations (headers and votes fit).
    postcard::to_extend(value, Vec::with_capacity(256)).expect("postcard encoding into a Vec does not fail")
}

/// Decodes exactly one value from `bytes`, refusing more than `max` bytes and trailing bytes.
pub fn decode_bounded<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge { got: bytes.len(), max });
    }
    let (value, rest) = postcard::take_from_bytes::<T>(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    Ok(value)
}

/// Decodes a network message. This is the only entry point for consensus bytes from peers.
pub fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    decode_bounded(bytes, MAX_MESSAGE_BYTES)
}

pub fn encode_message(msg: &Message) -> Vec<u8> {
    encode(msg)
}
