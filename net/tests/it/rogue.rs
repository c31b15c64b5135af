//! A raw QUIC client built from the crate's public pieces, for peers that misbehave.

use std::net::SocketAddr;
use std::sync::Arc;
use tendr_core::{Hash, PrivateKey, PublicKey};
use tendr_net::wire::{self, Frame, Hello, HelloBody, Side, PROTOCOL_VERSION};

pub struct Rogue {
    pub endpoint: quinn::Endpoint,
    pub key: PrivateKey,
    pub claimed: PublicKey,
    pub chain_id: String,
    pub genesis_hash: Hash,
    pub version: u32,
}

impl Rogue {
    pub fn new(seed: &str, chain_id: &str, genesis_hash: Hash) -> Rogue {
        Self::new_at(seed, chain_id, genesis_hash, "127.0.0.1")
    }

    /// A rogue whose connections come from `ip` (any of 127.0.0.0/8 works on Linux), so that
    /// bans by address can be told apart from the honest nodes on 127.0.0.1.
    pub fn new_at(seed: &str, chain_id: &str, genesis_hash: Hash, ip: &str) -> Rogue {
        let (_, client) = tendr_net::tls::configs(Arc::new(quinn::TransportConfig::default())).unwrap();
        let bind = SocketAddr::new(ip.parse().unwrap(), 0);
        let mut endpoint = quinn::Endpoint::client(bind).unwrap();
        endpoint.set_default_client_config(client);
        let key = PrivateKey::from_seed(seed.as_bytes());
        Rogue {
            endpoint,
            claimed: key.public_key(),
            key,
            chain_id: chain_id.into(),
            genesis_hash,
            version: PROTOCOL_VERSION,
        }
    }

    /// Connects and sends a hello; `Err` carries the reason the listener gave for refusing.
    pub async fn connect(&self, to: SocketAddr) -> (quinn::Connection, Result<(), String>) {
        let conn = self.endpoint.connect(to, "tendr").unwrap().await.unwrap();
        let exporter = wire::exporter(&conn).unwrap();
        let body = HelloBody {
            chain_id: self.chain_id.clone(),
            genesis_hash: self.genesis_hash,
            public_key: self.claimed,
            is_validator: false,
            advertise: self.endpoint.local_addr().unwrap(),
            validator: None,
        };
        let hello = Hello::sign(&self.key, Side::Dialer, &exporter, body);
        // A refused peer may be closed before its hello stream opens (a banned address).
        let Ok((mut send, mut recv)) = conn.open_bi().await else {
            let why = closed_reason(&conn).await;
            return (conn, Err(why));
        };
        if send
            .write_all(&wire::hello_frame_with_version(&hello, self.version))
            .await
            .is_err()
        {
            let why = closed_reason(&conn).await;
            return (conn, Err(why));
        }
        let res = match wire::read_frame(&mut recv).await {
            Ok(Some(b)) => match wire::decode_frame(&b) {
                Ok(Frame::Hello(h)) => h.verify(Side::Listener, &exporter).map(|_| ()),
                other => Err(format!("unexpected answer {other:?}")),
            },
            _ => Err(closed_reason(&conn).await),
        };
        (conn, res)
    }
}

/// Waits for the connection to close and returns the reason the other side gave.
pub async fn closed_reason(conn: &quinn::Connection) -> String {
    match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(c) => String::from_utf8_lossy(&c.reason).into_owned(),
        e => e.to_string(),
    }
}
