//! TLS for the admin client (`--url https://…`): a stack behind a host's
//! HTTPS proxy (a Hugging Face Space, a PaaS) is only reachable that way.
//!
//! The same TLS stack and trust store as pushes (libgit2) and blob
//! transfers (reqwest): the system's OpenSSL, so a private CA given in
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` or the system store works for all three.
//! Certificates and host names are checked; nothing here loosens that.

/// The TLS connector the admin client's reqwest transport is built on.
pub(crate) fn connector() -> Result<native_tls::TlsConnector, String> {
    native_tls::TlsConnector::new().map_err(|e| e.to_string())
}
