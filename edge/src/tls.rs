//! HTTPS for the edge: the rustls config with ALPN (`h2`, `http/1.1`); the server itself is
//! [`media::server::serve`], shared with the origin.

use std::sync::Arc;

/// Loads a PEM certificate chain and private key into a rustls config with ALPN h2 + http/1.1.
pub fn tls_config(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<rustls::ServerConfig>, String> {
    media::tls::server_config(cert_pem, key_pem, &[b"h2", b"http/1.1"])
}
