//! TLS for the admin client (`--url https://…`): a stack behind a host's
//! HTTPS proxy (a Hugging Face Space, a PaaS) is only reachable that way.
//!
//! The same TLS stack and trust store as pushes (libgit2) and blob
//! transfers (reqwest): the system's OpenSSL, so a private CA given in
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` or the system store works for all three.

use std::net::TcpStream;

/// A TLS session over `tcp` for `host`, handshake done.
pub(crate) fn wrap(host: &str, tcp: TcpStream) -> Result<native_tls::TlsStream<TcpStream>, String> {
    let connector = native_tls::TlsConnector::new().map_err(|e| e.to_string())?;
    connector.connect(host, tcp).map_err(|e| match e {
        native_tls::HandshakeError::Failure(e) => e.to_string(),
        // A read or write timeout set on the socket ends a stalled handshake.
        native_tls::HandshakeError::WouldBlock(_) => "the TLS handshake timed out".into(),
    })
}
