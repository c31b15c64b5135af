//! CometBFT's URI form puts quotes in the query string (`/broadcast_tx_commit?tx="k=v"`, as
//! its documentation's `curl` lines do), and the `http` crate under hyper refuses a request
//! target with `"`, `<` or `>` (they should be percent-encoded). [`Lenient`] percent-encodes
//! those three bytes in each request line as it is read, before hyper parses it, and passes
//! everything else through unchanged.
//!
//! To know where each request line starts, it follows the framing: the request line, header
//! lines (noting `Content-Length` and `Transfer-Encoding`), the empty line, then a body of
//! `Content-Length` bytes. A chunked body or an `Upgrade` (websocket) ends the rewriting for
//! that connection (the bytes then pass unchanged; a later quoted URL on it gets hyper's 400).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    RequestLine,
    Headers,
    Body(u64),
    Passthrough,
}

/// A header line longer than this is not one of the two the framing needs.
const MAX_FRAMING_LINE: usize = 128;

/// The request-line rewriter: pure, fed byte slices, so it is tested without sockets.
#[derive(Debug)]
pub struct Framing {
    state: State,
    line: Vec<u8>,
    content_length: u64,
    chunked: bool,
}

impl Default for Framing {
    fn default() -> Self {
        Framing {
            state: State::RequestLine,
            line: Vec::new(),
            content_length: 0,
            chunked: false,
        }
    }
}

impl Framing {
    /// Appends `input`, rewritten, to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Passthrough => {
                    out.extend_from_slice(&input[i..]);
                    return;
                }
                State::Body(n) => {
                    let take = (n.min((input.len() - i) as u64)) as usize;
                    out.extend_from_slice(&input[i..i + take]);
                    i += take;
                    self.state = if n == take as u64 {
                        State::RequestLine
                    } else {
                        State::Body(n - take as u64)
                    };
                }
                State::RequestLine => {
                    let b = input[i];
                    match b {
                        b'"' => out.extend_from_slice(b"%22"),
                        b'<' => out.extend_from_slice(b"%3C"),
                        b'>' => out.extend_from_slice(b"%3E"),
                        b'\n' => {
                            out.push(b);
                            self.start_headers();
                        }
                        _ => out.push(b),
                    }
                    i += 1;
                }
                State::Headers => {
                    let b = input[i];
                    out.push(b);
                    i += 1;
                    if b == b'\n' {
                        self.end_header_line();
                    } else if self.line.len() < MAX_FRAMING_LINE {
                        self.line.push(b);
                    }
                }
            }
        }
    }

    fn start_headers(&mut self) {
        self.state = State::Headers;
        self.line.clear();
        self.content_length = 0;
        self.chunked = false;
    }

    fn end_header_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\r');
        if text.is_empty() {
            self.state = match (self.chunked, self.content_length) {
                (true, _) => State::Passthrough,
                (false, 0) => State::RequestLine,
                (false, n) => State::Body(n),
            };
            return;
        }
        if let Some((name, value)) = text.split_once(':') {
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            if name == "content-length" {
                match value.parse() {
                    Ok(n) => self.content_length = n,
                    Err(_) => self.chunked = true, // unknown framing: stop rewriting
                }
            } else if name == "transfer-encoding" || name == "upgrade" {
                // A chunked body, or a websocket after this head: no request lines follow
                // that this framing could find.
                self.chunked = true;
            }
        }
        self.line = line;
        self.line.clear();
    }
}

/// A stream whose request lines are made acceptable to hyper (see the module doc).
pub struct Lenient<S> {
    inner: S,
    framing: Framing,
    /// Rewritten bytes not yet handed to the reader.
    pending: Vec<u8>,
    at: usize,
}

impl<S> Lenient<S> {
    pub fn new(inner: S) -> Self {
        Lenient {
            inner,
            framing: Framing::default(),
            pending: Vec::new(),
            at: 0,
        }
    }
}

/// Bytes read from the socket at once.
const READ_CHUNK: usize = 8192;

impl<S: AsyncRead + Unpin> AsyncRead for Lenient<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let me = &mut *self;
        if me.at == me.pending.len() {
            let mut raw = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut raw);
            ready!(Pin::new(&mut me.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(())); // end of stream
            }
            me.pending.clear();
            me.at = 0;
            me.framing.feed(rb.filled(), &mut me.pending);
        }
        let n = (me.pending.len() - me.at).min(buf.remaining());
        buf.put_slice(&me.pending[me.at..me.at + n]);
        me.at += n;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Lenient<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut f = Framing::default();
        let mut out = Vec::new();
        for c in chunks {
            f.feed(c, &mut out);
        }
        out
    }

    #[test]
    fn quotes_in_request_lines_only() {
        let req = b"GET /tx?tx=\"k=v\" HTTP/1.1\r\nHost: x\r\nX: \"q\"\r\n\r\n";
        let want = b"GET /tx?tx=%22k=v%22 HTTP/1.1\r\nHost: x\r\nX: \"q\"\r\n\r\n".to_vec();
        assert_eq!(run(&[req]), want);
        // Split anywhere, the same.
        for cut in 0..req.len() {
            assert_eq!(run(&[&req[..cut], &req[cut..]]), want, "cut at {cut}");
        }
    }

    #[test]
    fn bodies_pass_unchanged_and_the_next_request_is_found() {
        let body = br#"{"a":"<b>"}"#;
        let mut two = format!("POST / HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len()).into_bytes();
        two.extend_from_slice(body);
        two.extend_from_slice(b"GET /a?x=\"1\" HTTP/1.1\r\n\r\n");
        let out = run(&[&two]);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(r#"{"a":"<b>"}"#), "{text}");
        assert!(text.ends_with("GET /a?x=%221%22 HTTP/1.1\r\n\r\n"), "{text}");
    }

    #[test]
    fn chunked_bodies_stop_the_rewriting() {
        let req = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n\"a\"\r\n0\r\n\r\nGET /?\" HTTP/1.1\r\n";
        assert_eq!(run(&[req]), req.to_vec());
    }
}
