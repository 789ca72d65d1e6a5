//! TLS set-up shared by the anchor servers and the load generator: PEM files in, rustls
//! configurations out (the `ring` provider, so that nothing needs cmake to build).

use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio_rustls::{TlsAcceptor, TlsConnector};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn certificates(path: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let mut reader = BufReader::new(File::open(path)?);
    let certs = rustls_pemfile::certs(&mut reader).collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err(format!("{path}: no certificate in it").into());
    }
    Ok(certs)
}

fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::ring::default_provider())
}

/// An acceptor for a server with this certificate chain and key (PEM files).
pub fn acceptor(cert: &str, key: &str) -> Result<TlsAcceptor, Error> {
    let chain = certificates(cert)?;
    let mut reader = BufReader::new(File::open(key)?);
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut reader)?
        .ok_or_else(|| format!("{key}: no private key"))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A connector that trusts the certificate authority in this PEM file.
pub fn connector(ca: &str) -> Result<TlsConnector, Error> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots.add(cert)?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}
