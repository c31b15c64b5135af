//! The small HTTP client the CLI uses to talk to a node's RPC (one request per connection),
//! and the query-string helpers both sides share.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Percent-decodes a query-string value (`+` is a space), lossily as text.
pub fn percent_decode(s: &str) -> String {
    String::from_utf8_lossy(&percent_decode_bytes(s)).into_owned()
}

/// Percent-decodes a query-string value (`+` is a space) into bytes.
pub fn percent_decode_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// Percent-encodes everything but unreserved characters, for a query-string value.
pub fn percent_encode(data: &[u8]) -> String {
    data.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An HTTP response: status code and body.
pub struct HttpReply {
    /// The HTTP status code.
    pub code: u16,
    /// The body, de-chunked.
    pub body: String,
}

/// One HTTP/1.1 request with `Connection: close`; enough for our own server.
pub fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Result<HttpReply, String> {
    let timeout = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| {
        format!("cannot reach the node's RPC at {addr}: {e} (is the node running? is `rpc_addr` right?)")
    })?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .and_then(|_| s.write_all(body))
        .map_err(|e| format!("RPC {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("RPC {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("RPC {addr}: malformed HTTP response"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("RPC {addr}: malformed status line"))?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(HttpReply { code, body })
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// GET `path` and parse the JSON body; a non-200 reply becomes its `error` message.
pub fn get_json<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str) -> Result<T, String> {
    let r = request(addr, "GET", path, b"")?;
    parse_reply(addr, r)
}

/// POST `body` to `path` and parse the JSON reply; a non-200 reply becomes its `error` message.
pub fn post_json<T: serde::de::DeserializeOwned>(addr: SocketAddr, path: &str, body: &[u8]) -> Result<T, String> {
    let r = request(addr, "POST", path, body)?;
    parse_reply(addr, r)
}

fn parse_reply<T: serde::de::DeserializeOwned>(addr: SocketAddr, r: HttpReply) -> Result<T, String> {
    if r.code != 200 {
        let msg = serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or(r.body);
        return Err(msg);
    }
    serde_json::from_str(&r.body).map_err(|e| format!("RPC {addr}: unexpected reply ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%3Db+c"), "a=b c");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
        assert_eq!(
            percent_decode_bytes(&percent_encode(&[0, 255, b'a'])),
            vec![0, 255, b'a']
        );
    }
}
