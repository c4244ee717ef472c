//! TLS server settings shared by the edge's HTTPS and the origin's RTMPS: a PEM certificate
//! chain and private key into a rustls config (ring provider, TLS 1.2 and 1.3).

use std::sync::Arc;

/// Loads `cert_pem` (a chain) and `key_pem` into a server config offering `alpn` (may be
/// empty). Errors say which part was wrong.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate in the PEM file".into());
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("private key: {e}"))?
        .ok_or("no private key in the PEM file")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate/key: {e}"))?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_refused_with_the_reason() {
        let e = server_config(b"not pem", b"not pem", &[]).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
    }
}
