//! The opening handshake for Python: `ClientHandshake`, `ServerHandshake`, `Request`.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::with_bytes;
use wschannel::deflate::{self, DeflateConfig};
use wschannel::handshake::{self, HandshakeError as Error, Limits};

create_exception!(
    _wschannel,
    HandshakeError,
    PyException,
    "The opening handshake failed (RFC 6455 §4); `status` is the HTTP status involved."
);

fn handshake_error(py: Python<'_>, status: u16, message: String) -> PyErr {
    let err = HandshakeError::new_err(message);
    if let Err(e) = err.value(py).setattr("status", status) {
        return e;
    }
    err
}

fn from_engine(py: Python<'_>, e: Error) -> PyErr {
    handshake_error(py, e.status(), e.to_string())
}

/// The compression level of a Python connection that does not choose one: the default of
/// `DeflateOptions(level=...)` and of `Connection(deflate_level=...)`, and the module's
/// `DEFAULT_DEFLATE_LEVEL` (which `wschannel._net` takes). 4, not zlib's 6 (the engine
/// crate's own default, `Config::default()`, stays 6 for Rust users): with a Python server's
/// default 8 KiB windows it compresses the benchmark's JSON corpus as small as level 6 did
/// with 4 KiB ones, at about 8 % less CPU per message (docs/asyncio.md, "Compression").
pub const DEFAULT_DEFLATE_LEVEL: u32 = 4;

/// permessage-deflate settings (RFC 7692 §7.1). `level` defaults to
/// [`DEFAULT_DEFLATE_LEVEL`].
#[pyclass(frozen, module = "wschannel._wschannel")]
#[derive(Clone)]
pub struct DeflateOptions {
    config: DeflateConfig,
}

#[pymethods]
impl DeflateOptions {
    #[new]
    #[pyo3(signature = (*, server_no_context_takeover = false, client_no_context_takeover = false, server_max_window_bits = None, client_max_window_bits = None, level = DEFAULT_DEFLATE_LEVEL))]
    fn new(
        server_no_context_takeover: bool,
        client_no_context_takeover: bool,
        server_max_window_bits: Option<u8>,
        client_max_window_bits: Option<u8>,
        level: u32,
    ) -> PyResult<Self> {
        let config = DeflateConfig {
            server_no_context_takeover,
            client_no_context_takeover,
            server_max_window_bits,
            client_max_window_bits,
            level,
        };
        config
            .validate()
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(DeflateOptions { config })
    }

    #[getter]
    fn level(&self) -> u32 {
        self.config.level
    }

    fn __repr__(&self) -> String {
        let c = &self.config;
        format!(
            "DeflateOptions(server_no_context_takeover={}, client_no_context_takeover={}, \
             server_max_window_bits={}, client_max_window_bits={}, level={})",
            py_bool(c.server_no_context_takeover),
            py_bool(c.client_no_context_takeover),
            py_bits(c.server_max_window_bits),
            py_bits(c.client_max_window_bits),
            c.level
        )
    }
}

fn py_bits(bits: Option<u8>) -> String {
    bits.map_or_else(|| "None".to_owned(), |b| b.to_string())
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

fn limits(max_header_size: usize, max_headers: usize) -> Limits {
    Limits {
        max_header_size,
        max_headers,
    }
}

/// The client's opening handshake (RFC 6455 §4.1).
#[pyclass(module = "wschannel._wschannel")]
pub struct ClientHandshake {
    inner: handshake::ClientHandshake,
    extensions: Option<String>,
    done: bool,
}

#[pymethods]
impl ClientHandshake {
    #[new]
    #[pyo3(signature = (host, resource, *, protocols = Vec::new(), headers = Vec::new(), deflate = None, max_header_size = 16384, max_headers = 128, seed = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: &str,
        resource: &str,
        protocols: Vec<String>,
        headers: Vec<(String, String)>,
        deflate: Option<DeflateOptions>,
        max_header_size: usize,
        max_headers: usize,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        let options = handshake::ClientOptions {
            protocols,
            headers,
            deflate: deflate.map(|d| d.config),
            limits: limits(max_header_size, max_headers),
        };
        let inner = match seed {
            Some(seed) => handshake::ClientHandshake::with_seed(host, resource, &options, seed),
            None => handshake::ClientHandshake::new(host, resource, &options),
        }
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
        let _ = py;
        Ok(ClientHandshake {
            inner,
            extensions: None,
            done: false,
        })
    }

    fn request<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.inner.request())
    }

    fn receive_data(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<bool> {
        if self.done {
            return Err(PyRuntimeError::new_err("the handshake is already complete"));
        }
        let complete = with_bytes(data, |bytes| self.inner.receive_data(bytes))?
            .map_err(|e| from_engine(py, e))?;
        if !complete {
            return Ok(false);
        }
        // The engine checked the answer against the offer; what was agreed, normalised.
        self.extensions = self.inner.deflate().map(|params| params.to_string());
        self.done = true;
        Ok(true)
    }

    #[getter]
    fn status(&self) -> u16 {
        self.inner.status()
    }

    #[getter]
    fn headers(&self) -> Vec<(String, String)> {
        self.inner.headers().to_vec()
    }

    #[getter]
    fn protocol(&self) -> Option<&str> {
        self.inner.protocol()
    }

    #[getter]
    fn extensions(&self) -> Option<&str> {
        self.extensions.as_deref()
    }

    fn leftover<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.take_leftover())
    }
}

/// An HTTP request received by a server (RFC 6455 §4.2.1).
#[pyclass(module = "wschannel._wschannel")]
pub struct Request {
    inner: handshake::Request,
}

#[pymethods]
impl Request {
    #[getter]
    fn method(&self) -> &str {
        &self.inner.method
    }

    #[getter]
    fn path(&self) -> &str {
        &self.inner.path
    }

    #[getter]
    fn headers(&self) -> Vec<(String, String)> {
        self.inner.headers.clone()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.inner.header(name)
    }

    fn leftover<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.take_leftover())
    }

    fn __repr__(&self) -> String {
        format!(
            "Request(method={:?}, path={:?})",
            self.inner.method, self.inner.path
        )
    }
}

/// A refusal as Python sees it: `(status, message, headers)`.
type RejectionTuple = (u16, String, Vec<(String, String)>);

/// The server's opening handshake (RFC 6455 §4.2).
#[pyclass(module = "wschannel._wschannel")]
pub struct ServerHandshake {
    inner: handshake::ServerHandshake,
    protocol: Option<String>,
    extensions: Option<String>,
}

#[pymethods]
impl ServerHandshake {
    #[new]
    #[pyo3(signature = (*, max_header_size = 16384, max_headers = 128))]
    fn new(max_header_size: usize, max_headers: usize) -> Self {
        let inner = handshake::ServerHandshake::new(limits(max_header_size, max_headers));
        ServerHandshake {
            inner,
            protocol: None,
            extensions: None,
        }
    }

    fn receive_data(
        &mut self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Request>> {
        let parsed = with_bytes(data, |bytes| self.inner.receive_data(bytes))?;
        Ok(parsed
            .map_err(|e| from_engine(py, e))?
            .map(|inner| Request { inner }))
    }

    #[pyo3(signature = (request, *, allowed_origins = None))]
    fn check(
        &self,
        request: &Request,
        allowed_origins: Option<Vec<String>>,
    ) -> Option<RejectionTuple> {
        match request.inner.check(allowed_origins.as_deref()) {
            Ok(()) => None,
            Err(r) => Some((r.status, r.message, r.headers)),
        }
    }

    #[pyo3(signature = (request, *, protocols = Vec::new(), deflate = None, headers = Vec::new()))]
    fn accept<'py>(
        &mut self,
        py: Python<'py>,
        request: &Request,
        protocols: Vec<String>,
        deflate: Option<DeflateOptions>,
        headers: Vec<(String, String)>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let key = request
            .inner
            .key()
            .ok_or_else(|| handshake_error(py, 400, "missing Sec-WebSocket-Key header.".into()))?;
        self.protocol = request.inner.choose_protocol(&protocols);
        let offered = request.inner.offered_extensions();
        self.extensions = deflate
            .and_then(|d| deflate::server_negotiate(&d.config, offered.as_deref()))
            .map(|(_, value)| value);
        let response = handshake::accept_response(
            key,
            self.protocol.as_deref(),
            self.extensions.as_deref(),
            &headers,
        )
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyBytes::new(py, &response))
    }

    #[getter]
    fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    #[getter]
    fn extensions(&self) -> Option<&str> {
        self.extensions.as_deref()
    }
}

/// A complete HTTP/1.1 response that refuses an upgrade and closes the connection.
#[pyfunction]
#[pyo3(signature = (status, headers = Vec::new(), body = Vec::new()))]
fn reject_response<'py>(
    py: Python<'py>,
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
) -> PyResult<Bound<'py, PyBytes>> {
    let response = handshake::reject_response(status, &headers, &body)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(PyBytes::new(py, &response))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("HandshakeError", m.py().get_type::<HandshakeError>())?;
    m.add("DEFAULT_DEFLATE_LEVEL", DEFAULT_DEFLATE_LEVEL)?;
    m.add_class::<DeflateOptions>()?;
    m.add_class::<ClientHandshake>()?;
    m.add_class::<Request>()?;
    m.add_class::<ServerHandshake>()?;
    m.add_function(wrap_pyfunction!(reject_response, m)?)?;
    Ok(())
}
