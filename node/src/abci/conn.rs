//! One blocking connection to an ABCI application: a request, a `Flush` (Go servers buffer
//! their answers until one), then the answer and the flush's answer, each read within the
//! connection's timeout. Any failure closes the connection; the next call opens a new one.

use super::codec::{self, CodecError};
use super::ProxyApp;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;
use tendermint_proto::v0_38::abci::{request, response, Request, RequestFlush, Response};

/// What went wrong talking to the application, in words that name `proxy_app` and the fix.
#[derive(Debug, thiserror::Error)]
pub enum AbciError {
    #[error(
        "cannot connect to the ABCI application at proxy_app `{addr}`: {source}; start the application \
         (e.g. `kvstore-rs --port 26658`) or correct `proxy_app` in the config"
    )]
    Connect { addr: String, source: std::io::Error },
    #[error(
        "the ABCI application at proxy_app `{addr}` did not answer {call} within {timeout_ms} ms; \
         check that it is not overloaded or stuck, or raise `proxy_app_timeout_ms` in the config"
    )]
    Timeout {
        addr: String,
        call: &'static str,
        timeout_ms: u64,
    },
    #[error(
        "the ABCI application at proxy_app `{addr}` failed on {call}: {source}; check that proxy_app \
         points at an ABCI (CometBFT v0.38 socket protocol) application and look at its log"
    )]
    Protocol {
        addr: String,
        call: &'static str,
        source: CodecError,
    },
    #[error("the ABCI application at proxy_app `{addr}` answered {call} with {got}; it does not speak CometBFT v0.38's ABCI")]
    WrongAnswer {
        addr: String,
        call: &'static str,
        got: String,
    },
    #[error("the ABCI application at proxy_app `{addr}` reported an error on {call}: {error}; look at its log")]
    Exception {
        addr: String,
        call: &'static str,
        error: String,
    },
    #[error("the ABCI application at proxy_app `{addr}`: {detail}")]
    Refused { addr: String, detail: String },
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// An open connection; [`Conn::call`] sends one request and reads its answer.
pub struct Conn {
    stream: Stream,
    addr: String,
    timeout: Duration,
}

impl Conn {
    pub fn open(app: &ProxyApp, timeout: Duration) -> Result<Conn, AbciError> {
        let addr = app.to_string();
        let connect = |source| AbciError::Connect {
            addr: addr.clone(),
            source,
        };
        let stream = match app {
            ProxyApp::Tcp(hostport) => {
                let sa = hostport
                    .to_socket_addrs()
                    .map_err(connect)?
                    .next()
                    .ok_or_else(|| connect(std::io::Error::other("the host resolves to no address")))?;
                let s = TcpStream::connect_timeout(&sa, timeout).map_err(connect)?;
                s.set_nodelay(true).map_err(connect)?;
                s.set_read_timeout(Some(timeout)).map_err(connect)?;
                s.set_write_timeout(Some(timeout)).map_err(connect)?;
                Stream::Tcp(s)
            }
            ProxyApp::Unix(path) => {
                let s = UnixStream::connect(path).map_err(connect)?;
                s.set_read_timeout(Some(timeout)).map_err(connect)?;
                s.set_write_timeout(Some(timeout)).map_err(connect)?;
                Stream::Unix(s)
            }
        };
        Ok(Conn { stream, addr, timeout })
    }

    /// Sends `req` and returns the application's answer (an `Exception` is an error).
    pub fn call(&mut self, call: &'static str, req: request::Value) -> Result<response::Value, AbciError> {
        let mut bytes = codec::encode(&Request { value: Some(req) });
        bytes.extend(codec::encode(&Request {
            value: Some(request::Value::Flush(RequestFlush {})),
        }));
        self.stream
            .write_all(&bytes)
            .and_then(|()| self.stream.flush())
            .map_err(|e| self.io_error(call, CodecError::Io(e)))?;
        self.quick_ack();
        let answer = self.read(call)?;
        self.quick_ack();
        let flushed = self.read(call)?;
        if !matches!(flushed, response::Value::Flush(_)) {
            return Err(self.wrong(call, &flushed));
        }
        match answer {
            response::Value::Exception(e) => Err(AbciError::Exception {
                addr: self.addr.clone(),
                call,
                error: e.error,
            }),
            a => Ok(a),
        }
    }

    /// Acknowledges what arrives at once instead of after the kernel's delayed-ACK timer:
    /// a server that writes the answer and the flush's answer separately without
    /// `TCP_NODELAY` (as `tendermint-abci`'s) holds the second until the first is
    /// acknowledged, which made every call take 40 ms on Linux.
    fn quick_ack(&self) {
        #[cfg(target_os = "linux")]
        if let Stream::Tcp(s) = &self.stream {
            // Only a matter of speed: a failure leaves the delayed ACKs.
            let _ = socket2::SockRef::from(s).set_tcp_quickack(true);
        }
    }

    fn read(&mut self, call: &'static str) -> Result<response::Value, AbciError> {
        match codec::read::<Response>(&mut self.stream) {
            Ok(Response { value: Some(v) }) => Ok(v),
            Ok(Response { value: None }) => Err(AbciError::WrongAnswer {
                addr: self.addr.clone(),
                call,
                got: "an empty response".into(),
            }),
            Err(e) => Err(self.io_error(call, e)),
        }
    }

    fn io_error(&self, call: &'static str, e: CodecError) -> AbciError {
        if let CodecError::Io(io) = &e {
            if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) {
                return AbciError::Timeout {
                    addr: self.addr.clone(),
                    call,
                    timeout_ms: self.timeout.as_millis() as u64,
                };
            }
        }
        AbciError::Protocol {
            addr: self.addr.clone(),
            call,
            source: e,
        }
    }

    /// The error of an answer of another kind than the call's.
    pub fn wrong(&self, call: &'static str, got: &response::Value) -> AbciError {
        AbciError::WrongAnswer {
            addr: self.addr.clone(),
            call,
            got: format!("a {} response", kind(got)),
        }
    }
}

/// The name of a response, for errors (the debug form would print its whole content).
fn kind(v: &response::Value) -> &'static str {
    use response::Value as V;
    match v {
        V::Exception(_) => "Exception",
        V::Echo(_) => "Echo",
        V::Flush(_) => "Flush",
        V::Info(_) => "Info",
        V::InitChain(_) => "InitChain",
        V::Query(_) => "Query",
        V::CheckTx(_) => "CheckTx",
        V::Commit(_) => "Commit",
        V::ListSnapshots(_) => "ListSnapshots",
        V::OfferSnapshot(_) => "OfferSnapshot",
        V::LoadSnapshotChunk(_) => "LoadSnapshotChunk",
        V::ApplySnapshotChunk(_) => "ApplySnapshotChunk",
        V::PrepareProposal(_) => "PrepareProposal",
        V::ProcessProposal(_) => "ProcessProposal",
        V::ExtendVote(_) => "ExtendVote",
        V::VerifyVoteExtension(_) => "VerifyVoteExtension",
        V::FinalizeBlock(_) => "FinalizeBlock",
    }
}
