//! `Connection`: the engine's state machine for Python, one call per read or message.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::events::ListReceiver;
use super::{state_number, with_bytes};
use crate::deflate::parse_params;
use crate::engine::{self, Config, SendError};
use crate::frame::{shared_frame, OpCode, OutFrame, Role};

/// One open WebSocket connection (RFC 6455 §5-7), after the opening handshake.
#[pyclass(name = "Connection", module = "wschannel._wschannel")]
pub struct PyConnection {
    pub(crate) inner: engine::Connection,
}

pub(crate) fn send_error(e: SendError) -> PyErr {
    match e {
        SendError::Closed => PyRuntimeError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

fn frame_bytes<'py>(py: Python<'py>, frame: &OutFrame<'_>) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, frame.len(), |buf| {
        frame.write_to(buf);
        Ok(())
    })
}

#[pymethods]
impl PyConnection {
    #[new]
    #[pyo3(signature = (client, *, max_message_size = Some(engine::DEFAULT_MAX_MESSAGE_SIZE), max_frame_size = None, deflate = None, deflate_level = 6, seed = None))]
    fn new(
        client: bool,
        max_message_size: Option<usize>,
        max_frame_size: Option<usize>,
        deflate: Option<&str>,
        deflate_level: u32,
        seed: Option<u64>,
    ) -> PyResult<Self> {
        let deflate = match deflate {
            Some(value) => {
                Some(parse_params(value).map_err(|e| PyValueError::new_err(e.to_string()))?)
            }
            None => None,
        };
        if deflate_level > 9 {
            return Err(PyValueError::new_err("deflate_level must be 0..9"));
        }
        let config = Config {
            max_message_size,
            max_frame_size,
            deflate,
            deflate_level,
        };
        let role = if client { Role::Client } else { Role::Server };
        let inner = match seed {
            Some(seed) => engine::Connection::with_seed(role, config, seed),
            None => engine::Connection::new(role, config),
        };
        Ok(PyConnection { inner })
    }

    #[getter]
    fn state(&self) -> u8 {
        state_number(self.inner.state())
    }

    #[getter]
    fn client(&self) -> bool {
        self.inner.role() == Role::Client
    }

    #[getter]
    fn close_sent(&self) -> bool {
        self.inner.close_sent()
    }

    /// Whether a frame from `encode_shared_frame` may be written to this connection as is.
    #[getter]
    fn accepts_shared_frames(&self) -> bool {
        self.inner.accepts_shared_frames()
    }

    /// Whether permessage-deflate was negotiated.
    #[getter]
    fn compressed(&self) -> bool {
        self.inner.compressed()
    }

    /// Whether a compressor or decompressor is allocated now.
    #[getter]
    fn holds_compression_state(&self) -> bool {
        self.inner.holds_compression_state()
    }

    /// Frees the compression state of a connection idle since the last call (see the engine's
    /// `compact_if_idle`); True if it did.
    fn compact_if_idle(&mut self, py: Python<'_>) -> bool {
        let freed = self.inner.compact_if_idle();
        if freed {
            return_freed_memory(py);
        }
        freed
    }

    /// Frees the compression state and buffers of a connection that is over (the engine's
    /// `release`).
    fn release(&mut self, py: Python<'_>) {
        let held = self.inner.compressed();
        self.inner.release();
        if held {
            return_freed_memory(py);
        }
    }

    #[getter]
    fn close_received(&self) -> bool {
        self.inner.close_received()
    }

    #[getter]
    fn close_code(&self) -> Option<u16> {
        self.inner.close_code()
    }

    #[getter]
    fn close_reason(&self) -> Option<&str> {
        self.inner.close_reason()
    }

    /// Messages and bytes so far: `(messages_received, messages_sent, bytes_received,
    /// bytes_sent)`; bytes of frames as on the wire, after the opening handshake.
    #[getter]
    fn counters(&self) -> (u64, u64, u64, u64) {
        let c = self.inner.counters();
        (
            c.messages_received,
            c.messages_sent,
            c.bytes_received,
            c.bytes_sent,
        )
    }

    /// Counts a frame from `encode_shared_frame`, written to this connection by the caller,
    /// as one message of `size` bytes sent.
    fn count_shared_frame(&mut self, size: usize) {
        self.inner.count_shared_frame(size);
    }

    fn receive_data<'py>(
        &mut self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut rx = ListReceiver::new(py);
        with_bytes(data, |bytes| self.inner.receive_data(bytes, &mut rx))?;
        match rx.error {
            Some(e) => Err(e),
            None => Ok(rx.list),
        }
    }

    fn receive_eof(&mut self) {
        self.inner.receive_eof();
    }

    fn send_text<'py>(&mut self, py: Python<'py>, data: &str) -> PyResult<Bound<'py, PyBytes>> {
        let frame = self
            .inner
            .encode_message(OpCode::Text, data.as_bytes())
            .map_err(send_error)?;
        frame_bytes(py, &frame)
    }

    fn send_binary<'py>(
        &mut self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        with_bytes(data, |bytes| {
            let frame = self
                .inner
                .encode_message(OpCode::Binary, bytes)
                .map_err(send_error)?;
            frame_bytes(py, &frame)
        })?
    }

    #[pyo3(signature = (data = None))]
    fn send_ping<'py>(
        &mut self,
        py: Python<'py>,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.control(py, OpCode::Ping, data)
    }

    #[pyo3(signature = (data = None))]
    fn send_pong<'py>(
        &mut self,
        py: Python<'py>,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        self.control(py, OpCode::Pong, data)
    }

    #[pyo3(signature = (code = None, reason = ""))]
    fn send_close<'py>(
        &mut self,
        py: Python<'py>,
        code: Option<u16>,
        reason: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let frame = self.inner.send_close(code, reason).map_err(send_error)?;
        Ok(PyBytes::new(py, &frame))
    }

    fn data_to_send<'py>(&mut self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.data_to_send())
    }

    fn close_expected(&self) -> bool {
        self.inner.close_expected()
    }
}

impl PyConnection {
    fn control<'py>(
        &mut self,
        py: Python<'py>,
        opcode: OpCode,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut encode = |bytes: &[u8]| match self.inner.encode_control(opcode, bytes) {
            Ok(Some(frame)) => frame_bytes(py, &frame),
            Ok(None) => Ok(PyBytes::new(py, b"")),
            Err(e) => Err(send_error(e)),
        };
        match data {
            Some(data) => with_bytes(data, encode)?,
            None => encode(b""),
        }
    }
}

/// After compression state was freed: with glibc, give the freed pages back to the system
/// (`malloc_trim`) once a second or every 32 connections compacted, whichever comes first.
/// The zlib states of many connections are allocated between small objects on the heap, so
/// freeing them makes the memory reusable but leaves the process's resident size as it was
/// (measured: 135 KiB per connection before, with 10,000 compressed connections).
fn return_freed_memory(py: Python<'_>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        static LAST: AtomicU64 = AtomicU64::new(0);
        static FREED: AtomicU32 = AtomicU32::new(0);
        let now = START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1000;
        let freed = FREED.fetch_add(1, Ordering::Relaxed) + 1;
        if freed >= 32 || now >= LAST.load(Ordering::Relaxed) + 1000 {
            FREED.store(0, Ordering::Relaxed);
            LAST.store(now, Ordering::Relaxed);
            // Without the GIL: on a large heap it takes a while, and other threads may run.
            // SAFETY: malloc_trim only releases free memory; it is thread-safe.
            py.detach(|| unsafe {
                libc::malloc_trim(0);
            });
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = py;
}

/// One uncompressed, unmasked frame for many server connections (a broadcast): `str` as
/// text, any other buffer as binary.
#[pyfunction]
fn encode_shared_frame<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyBytes>> {
    if let Ok(text) = data.cast::<pyo3::types::PyString>() {
        let text = text.to_str()?;
        return frame_bytes(py, &shared_frame(OpCode::Text, text.as_bytes()));
    }
    with_bytes(data, |bytes| {
        frame_bytes(py, &shared_frame(OpCode::Binary, bytes))
    })?
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyConnection>()?;
    m.add_function(wrap_pyfunction!(encode_shared_frame, m)?)
}
