//! TLS for the admin client (`--url https://…`): a stack behind a host's
//! HTTPS proxy (a Hugging Face Space, a PaaS) is only reachable that way.
//!
//! Certificates are checked against the web's public roots (webpki-roots,
//! compiled in: the same answer on every machine, no system store needed),
//! with the crypto provider reqwest already brings (ring).

use std::net::TcpStream;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

fn config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
}

/// A TLS client session over `tcp` for `host`; the handshake runs with the
/// first write (its errors come back as `io::Error`s holding a
/// [`rustls::Error`]).
pub(crate) fn wrap(
    host: &str,
    tcp: TcpStream,
) -> Result<StreamOwned<ClientConnection, TcpStream>, String> {
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| format!("`{host}` is not a host name a certificate can be checked for"))?;
    let conn = ClientConnection::new(config()?, name).map_err(|e| e.to_string())?;
    Ok(StreamOwned::new(conn, tcp))
}
