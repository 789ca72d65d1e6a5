//! TLS in the binding (rustls, with the ring provider), so that a `wss://` connection takes
//! the direct socket path (`socket.rs`): one call reads, decrypts and parses, one encodes,
//! encrypts and sends.
//!
//! Python keeps configuring TLS the Python way: `wschannel._tls` maps an `ssl.SSLContext`
//! to a [`TlsClientConfig`] (its CA certificates, the protocol versions and cipher suites it
//! allows; verification always on, host name always checked) or says it cannot, and the
//! connection then keeps asyncio's `ssl` transport. A server's [`TlsServerConfig`] comes
//! from certificate and key files. Errors read as Python's `ssl` module's do:
//! `ssl.SSLCertVerificationError` with `verify_code` and `verify_message` for a certificate
//! that does not verify, `ssl.SSLError` for the rest.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pyo3::exceptions::{PyConnectionResetError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use rustls::client::ResolvesClientCert;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, Connection, RootCertStore,
    ServerConfig, ServerConnection, SignatureScheme, SupportedCipherSuite,
};

/// A CA certificate, a certificate chain or a key in PEM is at most this large (a CA
/// bundle of a few hundred certificates is about 250 KiB).
const MAX_PEM_FILE: u64 = 16 << 20;

/// The OpenSSL name of each cipher suite rustls (ring) offers: an `ssl.SSLContext`'s
/// `get_ciphers()` names the ones it allows.
fn openssl_name(suite: SupportedCipherSuite) -> &'static str {
    use rustls::CipherSuite as S;
    match suite.suite() {
        S::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        S::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        S::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => "ECDHE-ECDSA-AES256-GCM-SHA384",
        S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => "ECDHE-ECDSA-AES128-GCM-SHA256",
        S::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-ECDSA-CHACHA20-POLY1305",
        S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => "ECDHE-RSA-AES256-GCM-SHA384",
        S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => "ECDHE-RSA-AES128-GCM-SHA256",
        S::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => "ECDHE-RSA-CHACHA20-POLY1305",
        _ => "",
    }
}

/// The ring provider with the cipher suites whose OpenSSL name is in `allowed` (all if
/// None), and the protocol versions asked for; a `ValueError` if none is left.
fn provider(
    allowed: Option<&[String]>,
    tls12: bool,
    tls13: bool,
) -> PyResult<(
    Arc<CryptoProvider>,
    Vec<&'static rustls::SupportedProtocolVersion>,
)> {
    let mut versions = Vec::new();
    if tls13 {
        versions.push(&rustls::version::TLS13);
    }
    if tls12 {
        versions.push(&rustls::version::TLS12);
    }
    let mut provider = ring::default_provider();
    provider.cipher_suites.retain(|suite| {
        let version_ok = match suite {
            SupportedCipherSuite::Tls13(_) => tls13,
            SupportedCipherSuite::Tls12(_) => tls12,
        };
        version_ok
            && allowed.map_or(true, |names| {
                names.iter().any(|n| n == openssl_name(*suite))
            })
    });
    if versions.is_empty() || provider.cipher_suites.is_empty() {
        return Err(PyValueError::new_err(
            "no TLS 1.2 or 1.3 cipher suite that rustls offers is allowed",
        ));
    }
    Ok((Arc::new(provider), versions))
}

fn config_error(err: rustls::Error) -> PyErr {
    PyValueError::new_err(format!("cannot configure TLS: {err}"))
}

/// How a client verifies servers: the CA certificates it trusts (DER), the TLS versions
/// and cipher suites it may use, the ALPN protocols it offers. Verification is always on and
/// the host name always checked. Immutable; shared by every connection made with it.
#[pyclass(name = "TlsClientConfig", module = "wschannel._wschannel", frozen)]
pub struct TlsClientConfig {
    config: Arc<ClientConfig>,
}

#[pymethods]
impl TlsClientConfig {
    #[new]
    #[pyo3(signature = (roots, *, ciphers = None, tls12 = true, tls13 = true, alpn = Vec::new()))]
    fn new(
        roots: Vec<Vec<u8>>,
        ciphers: Option<Vec<String>>,
        tls12: bool,
        tls13: bool,
        alpn: Vec<Vec<u8>>,
    ) -> PyResult<Self> {
        let mut store = RootCertStore::empty();
        let (added, _ignored) =
            store.add_parsable_certificates(roots.into_iter().map(CertificateDer::from));
        if added == 0 {
            return Err(PyValueError::new_err(
                "no CA certificate to verify servers with: load one (cafile=, cadata=)",
            ));
        }
        let (provider, versions) = provider(ciphers.as_deref(), tls12, tls13)?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(store),
            provider.clone(),
        )
        .build()
        .map_err(|e| PyValueError::new_err(format!("cannot configure TLS: {e}")))?;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(config_error)?
            .with_webpki_verifier(verifier)
            .with_no_client_auth();
        config.alpn_protocols = alpn;
        Ok(TlsClientConfig {
            config: Arc::new(config),
        })
    }
}

/// A server's certificate chain and key, loaded from PEM files.
#[pyclass(name = "TlsServerConfig", module = "wschannel._wschannel", frozen)]
pub struct TlsServerConfig {
    config: Arc<ServerConfig>,
}

fn read_pem(path: &str, what: &str) -> PyResult<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut data = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(file, MAX_PEM_FILE + 1), &mut data)?;
    if data.len() as u64 > MAX_PEM_FILE {
        return Err(PyValueError::new_err(format!(
            "{path} is over {MAX_PEM_FILE} bytes: is it the {what} in PEM?"
        )));
    }
    Ok(data)
}

#[pymethods]
impl TlsServerConfig {
    /// `certfile`: the certificate chain in PEM, the server's first; `keyfile`: its private
    /// key in PEM (PKCS#8, PKCS#1 or SEC1), or None if it is in `certfile`.
    #[new]
    #[pyo3(signature = (certfile, keyfile = None, *, alpn = Vec::new()))]
    fn new(certfile: &str, keyfile: Option<&str>, alpn: Vec<Vec<u8>>) -> PyResult<Self> {
        let pem = read_pem(certfile, "certificate chain")?;
        let chain = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| PyValueError::new_err(format!("{certfile}: {e}")))?;
        if chain.is_empty() {
            return Err(PyValueError::new_err(format!(
                "{certfile} holds no certificate: pass the server's certificate chain in PEM \
                 (BEGIN CERTIFICATE)"
            )));
        }
        let key_path = keyfile.unwrap_or(certfile);
        let key_pem = if keyfile.is_some() {
            read_pem(key_path, "private key")?
        } else {
            pem
        };
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            PyValueError::new_err(format!(
                "{key_path} holds no private key in PEM ({e}): pass keyfile= with the \
                 certificate's key"
            ))
        })?;
        let (provider, versions) = provider(None, true, true)?;
        let builder = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(config_error)?
            .with_no_client_auth();
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| PyValueError::new_err(format!("{certfile}, {key_path}: {e}")))?;
        config.alpn_protocols = alpn;
        Ok(TlsServerConfig {
            config: Arc::new(config),
        })
    }
}

/// Notes that the server asked for a client certificate (and sends none): the connection is
/// then made again with Python's `ssl`, which presents the context's, if it has one.
#[derive(Debug)]
struct NoticeCertificateRequest(Arc<AtomicBool>);

impl ResolvesClientCert for NoticeCertificateRequest {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.store(true, Ordering::Relaxed);
        None
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// One connection's TLS state, as `SocketIO` drives it.
pub(crate) struct Tls {
    pub(crate) conn: Connection,
    /// The name the server's certificate is checked against (clients), for error messages.
    server_name: Option<String>,
    /// Set when the server asked for a client certificate (clients).
    asked_for_certificate: Option<Arc<AtomicBool>>,
    /// The peer sent its `close_notify`.
    pub(crate) peer_closed: bool,
}

impl Tls {
    pub(crate) fn client(config: &TlsClientConfig, server_name: &str) -> PyResult<Self> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
            PyValueError::new_err(format!(
                "{server_name:?} is not a host name or an IP address to check the server's \
                 certificate against"
            ))
        })?;
        let flag = Arc::new(AtomicBool::new(false));
        let mut config = ClientConfig::clone(&config.config);
        config.client_auth_cert_resolver = Arc::new(NoticeCertificateRequest(flag.clone()));
        let mut conn = ClientConnection::new(Arc::new(config), name).map_err(config_error)?;
        conn.set_buffer_limit(None);
        Ok(Tls {
            conn: conn.into(),
            server_name: Some(server_name.to_owned()),
            asked_for_certificate: Some(flag),
            peer_closed: false,
        })
    }

    pub(crate) fn server(config: &TlsServerConfig) -> PyResult<Self> {
        let mut conn = ServerConnection::new(config.config.clone()).map_err(config_error)?;
        conn.set_buffer_limit(None);
        Ok(Tls {
            conn: conn.into(),
            server_name: None,
            asked_for_certificate: None,
            peer_closed: false,
        })
    }

    /// Whether the server asked for a client certificate.
    pub(crate) fn asked_for_certificate(&self) -> bool {
        self.asked_for_certificate
            .as_ref()
            .is_some_and(|flag| flag.load(Ordering::Relaxed))
    }

    /// Decrypts `data` (bytes read from the socket), handing the plaintext to `deliver`
    /// piece by piece. Sets `peer_closed` at the peer's `close_notify`.
    pub(crate) fn feed(
        &mut self,
        mut data: &[u8],
        mut deliver: impl FnMut(&[u8]),
    ) -> Result<(), TlsError> {
        while !data.is_empty() {
            let taken = self.conn.read_tls(&mut data).map_err(TlsError::Io)?;
            self.conn.process_new_packets().map_err(TlsError::Tls)?;
            self.drain(&mut deliver);
            if taken == 0 {
                // rustls takes nothing after the peer's close_notify: what follows it is
                // dropped (never a loop that makes no progress).
                break;
            }
        }
        Ok(())
    }

    /// The plaintext rustls holds, to `deliver`.
    fn drain(&mut self, deliver: &mut impl FnMut(&[u8])) {
        loop {
            let reader = self.conn.reader();
            match reader.into_first_chunk() {
                Ok([]) => {
                    self.peer_closed = true;
                    return;
                }
                Ok(chunk) => {
                    let n = chunk.len();
                    deliver(chunk);
                    io::BufRead::consume(&mut self.conn.reader(), n);
                }
                Err(_) => return, // WouldBlock: nothing more now
            }
        }
    }

    /// The peer's TCP EOF: what rustls held is already out.
    pub(crate) fn eof(&mut self) {
        let _ = self.conn.read_tls(&mut &[][..]);
    }

    /// The Python exception for `err`, as Python's `ssl` module would word it.
    pub(crate) fn error(&self, py: Python<'_>, err: TlsError) -> PyErr {
        match err {
            TlsError::Io(e) => e.into(),
            TlsError::Tls(e) => ssl_error(py, &e, self.server_name.as_deref()),
        }
    }
}

/// What went wrong reading TLS.
pub(crate) enum TlsError {
    Io(io::Error),
    Tls(rustls::Error),
}

/// OpenSSL's verify code and message for a certificate error, as `ssl` reports them.
fn verify_failure(err: &CertificateError, server_name: Option<&str>) -> (i64, String) {
    let name = server_name.unwrap_or("");
    let is_ip = name.parse::<std::net::IpAddr>().is_ok();
    match err {
        CertificateError::UnknownIssuer => (20, "unable to get local issuer certificate".into()),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            if is_ip {
                (
                    64,
                    format!("IP address mismatch, certificate is not valid for '{name}'."),
                )
            } else {
                (
                    62,
                    format!("Hostname mismatch, certificate is not valid for '{name}'."),
                )
            }
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            (10, "certificate has expired".into())
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            (9, "certificate is not yet valid".into())
        }
        CertificateError::Revoked => (23, "certificate revoked".into()),
        CertificateError::BadSignature => (7, "certificate signature failure".into()),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            (26, "unsuitable certificate purpose".into())
        }
        other => (1, format!("{other:?}")),
    }
}

/// An alert's name as OpenSSL writes it: `UnknownCA` -> `unknown ca`.
fn alert_words(alert: AlertDescription) -> String {
    let name = format!("{alert:?}");
    let mut words = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        let boundary = i > 0
            && c.is_uppercase()
            && (chars[i - 1].is_lowercase()
                || chars.get(i + 1).is_some_and(|next| next.is_lowercase()));
        if boundary {
            words.push(' ');
        }
        words.extend(c.to_lowercase());
    }
    words
}

/// `ssl.SSLCertVerificationError` or `ssl.SSLError` for a rustls error.
fn ssl_error(py: Python<'_>, err: &rustls::Error, server_name: Option<&str>) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let ssl = py.import("ssl")?;
        let (class, message, reason, verify) = match err {
            rustls::Error::InvalidCertificate(cert) => {
                let (code, text) = verify_failure(cert, server_name);
                (
                    "SSLCertVerificationError",
                    format!("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {text}"),
                    "CERTIFICATE_VERIFY_FAILED".to_owned(),
                    Some((code, text)),
                )
            }
            rustls::Error::AlertReceived(alert) => {
                let words = alert_words(*alert);
                let reason = format!("TLSV1_ALERT_{}", words.replace(' ', "_").to_uppercase());
                (
                    "SSLError",
                    format!("[SSL: {reason}] tlsv1 alert {words}"),
                    reason,
                    None,
                )
            }
            other => (
                "SSLError",
                format!("[SSL] {other}"),
                String::from("TLS"),
                None,
            ),
        };
        let exc = ssl.getattr(class)?.call1((1, message))?;
        exc.setattr("library", "SSL")?;
        exc.setattr("reason", reason)?;
        if let Some((code, text)) = verify {
            exc.setattr("verify_code", code)?;
            exc.setattr("verify_message", text)?;
        }
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|e| e)
}

/// The error of a peer that closed the connection during the TLS handshake.
pub(crate) fn handshake_eof() -> PyErr {
    PyConnectionResetError::new_err("the peer closed the connection during the TLS handshake")
}

/// The protocol ALPN agreed, if any.
pub(crate) fn alpn<'py>(py: Python<'py>, tls: &Tls) -> Option<Bound<'py, PyBytes>> {
    tls.conn.alpn_protocol().map(|p| PyBytes::new(py, p))
}

/// The negotiated version and cipher suite as `ssl` names them (`("TLSv1.3",
/// "TLS_AES_256_GCM_SHA384")`), once the handshake is done.
pub(crate) fn negotiated(tls: &Tls) -> Option<(&'static str, &'static str)> {
    let version = match tls.conn.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "",
    };
    let suite = openssl_name(tls.conn.negotiated_cipher_suite()?);
    Some((version, suite))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TlsClientConfig>()?;
    m.add_class::<TlsServerConfig>()
}
