//! TLS 1.3 for QUIC with per-process self-signed certificates.
//!
//! TLS gives confidentiality and a unique session; it does not give identity. Identity is the
//! node key: right after the QUIC handshake each side signs the session's keying-material
//! exporter with its k256 node key (see [`crate::wire::Hello`]). The certificate itself is
//! therefore not checked against any authority, but the TLS 1.3 handshake signature is still
//! verified, so the server proves it holds its certificate key.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::Arc;

/// ALPN of the tendr protocol; the protocol version proper travels in the hello.
pub const ALPN: &[u8] = b"tendr";
/// Name the client asks for; certificates are self-signed for it.
pub const SERVER_NAME: &str = "tendr";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any server certificate (identity is proven by the node-key signature over the
/// exporter), but verifies the TLS 1.3 handshake signature made with that certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General(
            "TLS 1.2 is not supported; tendr speaks TLS 1.3 only".into(),
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Server and client QUIC configurations with a fresh self-signed certificate.
pub fn configs(transport: Arc<quinn::TransportConfig>) -> Result<(quinn::ServerConfig, quinn::ClientConfig), String> {
    let certified = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()])
        .map_err(|e| format!("generating the self-signed TLS certificate: {e}"))?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()));

    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS 1.3 server config: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| format!("TLS server certificate: {e}"))?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let server =
        quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(|e| format!("QUIC server crypto: {e}"))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport.clone());

    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS 1.3 client config: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth();
    client.alpn_protocols = vec![ALPN.to_vec()];
    let client =
        quinn::crypto::rustls::QuicClientConfig::try_from(client).map_err(|e| format!("QUIC client crypto: {e}"))?;
    let mut client = quinn::ClientConfig::new(Arc::new(client));
    client.transport_config(transport);
    Ok((server, client))
}
