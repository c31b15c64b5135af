//! ABCI's socket framing (CometBFT v0.38): each message is a protobuf `Request` or `Response`
//! preceded by its length as an unsigned varint. One fallible decoder that never panics and
//! never allocates more than [`MAX_MESSAGE_BYTES`] for a frame, whatever the length prefix says.

use prost::Message;
use std::io::Read;

/// Longest message accepted (CometBFT's own ABCI limit is 100 MiB; a tendr block is far
/// smaller, and a response is bounded by what the block holds).
pub const MAX_MESSAGE_BYTES: u64 = 64 << 20;
/// A u64 varint takes at most 10 bytes.
const MAX_VARINT_BYTES: usize = 10;
/// Bytes read per step of a frame's body, so a lying length prefix costs no large allocation.
const READ_CHUNK: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("length prefix is not a varint (more than {MAX_VARINT_BYTES} bytes)")]
    BadVarint,
    #[error("message of {0} bytes announced, more than the {MAX_MESSAGE_BYTES} accepted")]
    TooLong(u64),
    #[error("the connection closed{0}")]
    Closed(&'static str),
    #[error("undecodable protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `msg` with its varint length prefix.
pub fn encode<M: Message>(msg: &M) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(len + MAX_VARINT_BYTES);
    prost::encoding::encode_varint(len as u64, &mut out);
    msg.encode(&mut out).expect("a Vec grows to fit");
    out
}

/// Decodes one frame from the start of `buf`: the message and the bytes it took, or `None`
/// when `buf` holds only part of a frame.
pub fn decode<M: Message + Default>(buf: &[u8]) -> Result<Option<(M, usize)>, CodecError> {
    let Some((len, prefix)) = varint(buf)? else {
        return Ok(None);
    };
    if len > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLong(len));
    }
    let end = prefix + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((M::decode(&buf[prefix..end])?, end)))
}

/// The varint at the start of `buf` and its length in bytes; `None` when it is cut short.
fn varint(buf: &[u8]) -> Result<Option<(u64, usize)>, CodecError> {
    let mut value: u64 = 0;
    for (i, b) in buf.iter().take(MAX_VARINT_BYTES).enumerate() {
        let bits = u64::from(b & 0x7f);
        if i == MAX_VARINT_BYTES - 1 && b & 0x7f > 1 {
            return Err(CodecError::BadVarint); // more than 64 bits
        }
        value |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_BYTES {
        return Err(CodecError::BadVarint);
    }
    Ok(None)
}

/// Reads one frame from `r` (blocking, within the stream's own timeouts).
pub fn read<M: Message + Default>(r: &mut impl Read) -> Result<M, CodecError> {
    let mut prefix = Vec::with_capacity(MAX_VARINT_BYTES);
    let len = loop {
        let mut b = [0u8; 1];
        if r.read(&mut b)? == 0 {
            let when = if prefix.is_empty() {
                ""
            } else {
                " inside a length prefix"
            };
            return Err(CodecError::Closed(when));
        }
        prefix.push(b[0]);
        if let Some((len, _)) = varint(&prefix)? {
            break len;
        }
    };
    if len > MAX_MESSAGE_BYTES {
        return Err(CodecError::TooLong(len));
    }
    let mut body = Vec::with_capacity(len.min(READ_CHUNK) as usize);
    while (body.len() as u64) < len {
        let want = (len - body.len() as u64).min(READ_CHUNK);
        if r.by_ref().take(want).read_to_end(&mut body)? == 0 {
            return Err(CodecError::Closed(" inside a message"));
        }
    }
    Ok(M::decode(body.as_slice())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tendermint_proto::v0_38::abci::{request, response, Request, RequestEcho, Response, ResponseInfo};

    fn echo(msg: &str) -> Request {
        Request {
            value: Some(request::Value::Echo(RequestEcho { message: msg.into() })),
        }
    }

    #[test]
    fn frames_round_trip_one_by_one_and_in_a_stream() {
        let a = encode(&echo("hello"));
        let b = encode(&echo(&"x".repeat(300))); // a two-byte length prefix
        assert_eq!(b[0] & 0x80, 0x80);
        let mut stream = a.clone();
        stream.extend_from_slice(&b);
        let (m, used) = decode::<Request>(&stream).unwrap().unwrap();
        assert_eq!((m, used), (echo("hello"), a.len()));
        let (m, used) = decode::<Request>(&stream[a.len()..]).unwrap().unwrap();
        assert_eq!((m, used), (echo(&"x".repeat(300)), b.len()));
        let mut r = std::io::Cursor::new(stream);
        assert_eq!(read::<Request>(&mut r).unwrap(), echo("hello"));
        assert_eq!(read::<Request>(&mut r).unwrap(), echo(&"x".repeat(300)));
        assert!(matches!(read::<Request>(&mut r), Err(CodecError::Closed(""))));
    }

    #[test]
    fn a_partial_frame_waits_for_more() {
        let f = encode(&echo(&"y".repeat(200)));
        for cut in 0..f.len() {
            assert!(decode::<Request>(&f[..cut]).unwrap().is_none(), "cut at {cut}");
            let mut r = std::io::Cursor::new(f[..cut].to_vec());
            assert!(
                matches!(read::<Request>(&mut r), Err(CodecError::Closed(_))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn an_oversized_length_prefix_is_refused_before_any_allocation() {
        let mut f = Vec::new();
        prost::encoding::encode_varint(u64::MAX, &mut f);
        assert!(matches!(decode::<Response>(&f), Err(CodecError::TooLong(u64::MAX))));
        assert!(matches!(
            read::<Response>(&mut std::io::Cursor::new(f)),
            Err(CodecError::TooLong(_))
        ));
        let mut f = Vec::new();
        prost::encoding::encode_varint(MAX_MESSAGE_BYTES + 1, &mut f);
        assert!(matches!(decode::<Response>(&f), Err(CodecError::TooLong(_))));
        // A length just under the limit with no body: the reader stops at the end of the
        // stream instead of waiting for (or reserving) 64 MiB.
        let mut f = Vec::new();
        prost::encoding::encode_varint(MAX_MESSAGE_BYTES, &mut f);
        let e = read::<Response>(&mut std::io::Cursor::new(f)).unwrap_err();
        assert!(matches!(e, CodecError::Closed(" inside a message")), "{e}");
    }

    #[test]
    fn an_endless_varint_is_refused() {
        let f = [0xff; 11];
        assert!(matches!(decode::<Response>(&f), Err(CodecError::BadVarint)));
        assert!(matches!(
            read::<Response>(&mut std::io::Cursor::new(f.to_vec())),
            Err(CodecError::BadVarint)
        ));
        // Ten bytes whose last carries more than the 64th bit.
        let mut f = [0xff; 10];
        f[9] = 0x02;
        assert!(matches!(decode::<Response>(&f), Err(CodecError::BadVarint)));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // A frame whose body is not a protobuf `Response` (a field with wire type 7).
        let f = [3u8, 0xff, 0xff, 0xff];
        assert!(matches!(decode::<Response>(&f), Err(CodecError::Protobuf(_))));
        // Any bytes at all: an answer, never a panic.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..2_000usize {
            let bytes: Vec<u8> = (0..n % 97)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode::<Response>(&bytes);
            let _ = read::<Response>(&mut std::io::Cursor::new(bytes));
        }
        let ok = Response {
            value: Some(response::Value::Info(ResponseInfo {
                last_block_height: 7,
                ..Default::default()
            })),
        };
        assert_eq!(decode::<Response>(&encode(&ok)).unwrap().unwrap().0, ok);
    }
}
