//! `Connection`: the engine's state machine for Python, one call per read or message.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use std::time::{Duration, Instant};

use super::events::ListReceiver;
use super::lock::{EngineGuard, EngineLock};
use super::{state_number, with_bytes};
use crate::deflate::parse_params;
use crate::engine::{self, Chunk, Config, Delivery, Event, SendError};
use crate::frame::{shared_binary, shared_text, OpCode, OutFrame, Role};
use crate::session::{Action, ControlTap, Phase, Session, SessionConfig};

/// One open WebSocket connection (RFC 6455 §5-7), after the opening handshake.
///
/// Safe to call from several threads: each call is atomic (its state is locked, see
/// `lock.rs`). The order of the frames on the wire is the caller's: a driver that writes
/// from several threads holds its own lock across encoding a frame and writing it.
#[pyclass(name = "Connection", module = "wschannel._wschannel", frozen)]
pub struct PyConnection {
    state: EngineLock<ConnectionState>,
}

/// What a `Connection` locks: the engine and its lifecycle.
pub(crate) struct ConnectionState {
    pub(crate) inner: engine::Connection,
    /// The lifecycle, once a driver started it (`start_session`): from then on the control
    /// events' replies are the session's to take, and the driver follows `poll_action`.
    pub(crate) session: Option<Session>,
}

// The actions of `poll_action` other than writes (which are `bytes`).
const STOP_SENDING: u8 = 1;
const PAUSE_READING: u8 = 2;
const RESUME_READING: u8 = 3;
const AWAIT_CONSUMER: u8 = 4;
const SAMPLE_UNSENT: u8 = 5;
const END_STREAM: u8 = 6;
const HALF_CLOSE: u8 = 7;
const CLOSE_TRANSPORT: u8 = 8;
const ABORT: u8 = 9;
const DONE: u8 = 10;

fn seconds(value: Option<f64>, name: &str) -> PyResult<Option<Duration>> {
    value
        .map(|v| {
            Duration::try_from_secs_f64(v).map_err(|_| {
                PyValueError::new_err(format!("{name} must be a number of seconds >= 0, not {v}"))
            })
        })
        .transpose()
}

impl PyConnection {
    /// The state, locked for one call (waiting while another thread is in a call).
    pub(crate) fn lock(&self, py: Python<'_>) -> PyResult<EngineGuard<'_, ConnectionState>> {
        self.state.lock(py, "Connection")
    }
}

impl ConnectionState {
    /// Feeds the control events a read produced to the session, if there is one.
    pub(crate) fn feed_controls(&mut self, controls: &[Event]) {
        if controls.is_empty() {
            return;
        }
        if let Some(session) = self.session.as_mut() {
            session.handle_events(&mut self.inner, controls, Instant::now());
        }
    }

    fn session(&mut self) -> PyResult<&mut Session> {
        self.session
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("call start_session() first"))
    }
}

pub(crate) fn send_error(e: SendError) -> PyErr {
    match e {
        SendError::Closed | SendError::MessageInProgress | SendError::NoMessageInProgress => {
            PyRuntimeError::new_err(e.to_string())
        }
        SendError::FragmentKind(_) => pyo3::exceptions::PyTypeError::new_err(e.to_string()),
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
    #[pyo3(signature = (client, *, max_message_size = Some(engine::DEFAULT_MAX_MESSAGE_SIZE), max_frame_size = None, deflate = None, deflate_level = crate::handshake::DEFAULT_DEFLATE_LEVEL, seed = None))]
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
        Ok(PyConnection {
            state: EngineLock::new(ConnectionState {
                inner,
                session: None,
            }),
        })
    }

    /// Starts the lifecycle (the session, `src/session`): keepalive, the close rules and
    /// deadlines. Durations in seconds; `None` turns a timer off.
    #[pyo3(signature = (*, ping_interval = None, pong_timeout = None, close_timeout = Some(10.0), consumer_wait = None, pause_reading_while_writes_wait = None, half_close = true, compact_interval = None))]
    #[allow(clippy::too_many_arguments)]
    fn start_session(
        &self,
        py: Python<'_>,
        ping_interval: Option<f64>,
        pong_timeout: Option<f64>,
        close_timeout: Option<f64>,
        consumer_wait: Option<f64>,
        pause_reading_while_writes_wait: Option<bool>,
        half_close: bool,
        compact_interval: Option<f64>,
    ) -> PyResult<()> {
        let mut c = self.lock(py)?;
        let role = c.inner.role();
        let mut config = SessionConfig::new(role);
        config.ping_interval = seconds(ping_interval, "ping_interval")?;
        config.pong_timeout = seconds(pong_timeout, "pong_timeout")?;
        config.close_timeout = seconds(close_timeout, "close_timeout")?;
        if let Some(wait) = seconds(consumer_wait, "consumer_wait")? {
            config.consumer_wait = wait;
        }
        if let Some(pause) = pause_reading_while_writes_wait {
            config.pause_reading_while_writes_wait = pause;
        }
        config.half_close = half_close;
        config.compact_interval = seconds(compact_interval, "compact_interval")?;
        let now = Instant::now();
        match c.session.as_mut() {
            Some(session) => session.reconfigure(config, now),
            None => c.session = Some(Session::new(role, config, now)),
        }
        Ok(())
    }

    /// The next thing the driver must do: `bytes` to write, one of the action numbers, or
    /// None. One at a time, so that what doing it changes (a write that fills the buffer)
    /// is known to the session before the next.
    fn poll_action<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(action) = self
            .lock(py)?
            .session
            .as_mut()
            .and_then(Session::poll_action)
        else {
            return Ok(None);
        };
        let number = match action {
            Action::Write(bytes) => return Ok(Some(PyBytes::new(py, &bytes).into_any())),
            Action::StopSending => STOP_SENDING,
            Action::PauseReading => PAUSE_READING,
            Action::ResumeReading => RESUME_READING,
            Action::AwaitConsumer => AWAIT_CONSUMER,
            Action::SampleUnsent => SAMPLE_UNSENT,
            Action::EndStream => END_STREAM,
            Action::HalfClose => HALF_CLOSE,
            Action::CloseTransport => CLOSE_TRANSPORT,
            Action::Abort => ABORT,
            Action::Done => DONE,
        };
        Ok(Some(number.into_pyobject(py)?.into_any()))
    }

    /// Whether `poll_action` has something.
    #[getter]
    fn has_actions(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self
            .lock(py)?
            .session
            .as_ref()
            .is_some_and(Session::has_actions))
    }

    /// Seconds until `handle_timeout` must be called, or None.
    #[getter]
    fn timeout(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        let Some(deadline) = self
            .lock(py)?
            .session
            .as_ref()
            .and_then(Session::poll_timeout)
        else {
            return Ok(None);
        };
        Ok(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .as_secs_f64(),
        ))
    }

    /// The deadlines that passed, applied; `unsent`: bytes written that the peer has not
    /// taken yet (the close deadline's progress rule).
    #[pyo3(signature = (unsent = 0))]
    fn handle_timeout(&self, py: Python<'_>, unsent: usize) -> PyResult<()> {
        let freed = {
            let mut c = self.lock(py)?;
            let ConnectionState { inner, session } = &mut *c;
            let session = session
                .as_mut()
                .ok_or_else(|| PyRuntimeError::new_err("call start_session() first"))?;
            session.handle_timeout(inner, Instant::now(), || unsent)
        };
        if freed {
            return_freed_memory(py);
        }
        Ok(())
    }

    /// The answer to the SAMPLE_UNSENT action.
    fn sample_unsent(&self, py: Python<'_>, unsent: usize) -> PyResult<()> {
        self.lock(py)?.session()?.sample_unsent(unsent);
        Ok(())
    }

    /// The user's close: the close frame is queued as an action.
    #[pyo3(signature = (code = None, reason = ""))]
    fn close(&self, py: Python<'_>, code: Option<u16>, reason: &str) -> PyResult<()> {
        let mut c = self.lock(py)?;
        let ConnectionState { inner, session } = &mut *c;
        let session = session
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("call start_session() first"))?;
        session
            .close(inner, code, reason, Instant::now())
            .map_err(send_error)
    }

    /// The consumer answered what came before the peer's close (AWAIT_CONSUMER).
    fn consumer_caught_up(&self, py: Python<'_>) -> PyResult<()> {
        let mut c = self.lock(py)?;
        let ConnectionState { inner, session } = &mut *c;
        let session = session
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("call start_session() first"))?;
        session.consumer_caught_up(inner, Instant::now());
        Ok(())
    }

    /// Whether the consumer's buffer is full.
    fn set_consumer_full(&self, py: Python<'_>, full: bool) -> PyResult<()> {
        self.lock(py)?.session()?.set_consumer_full(full);
        Ok(())
    }

    /// Whether the write buffer is over its limit.
    fn set_writes_waiting(&self, py: Python<'_>, waiting: bool) -> PyResult<()> {
        self.lock(py)?.session()?.set_writes_waiting(waiting);
        Ok(())
    }

    /// The transport is gone.
    fn connection_lost(&self, py: Python<'_>) -> PyResult<()> {
        self.lock(py)?.session()?.connection_lost();
        Ok(())
    }

    /// Whether messages may still be sent (this side's close frame is not out).
    #[getter]
    fn sending(&self, py: Python<'_>) -> PyResult<bool> {
        let c = self.lock(py)?;
        Ok(match &c.session {
            Some(session) => session.sending(),
            None => !c.inner.close_sent(),
        })
    }

    /// Where the lifecycle is: "open", "close-sent", "awaiting-consumer", "awaiting-eof",
    /// "lingering", "closing-transport", "closed" (None before `start_session`).
    #[getter]
    fn phase(&self, py: Python<'_>) -> PyResult<Option<&'static str>> {
        let c = self.lock(py)?;
        let Some(session) = c.session.as_ref() else {
            return Ok(None);
        };
        Ok(Some(match session.phase() {
            Phase::Opening => "opening",
            Phase::Open => "open",
            Phase::CloseSent => "close-sent",
            Phase::AwaitingConsumer => "awaiting-consumer",
            Phase::AwaitingEof => "awaiting-eof",
            Phase::Lingering => "lingering",
            Phase::ClosingTransport => "closing-transport",
            Phase::Closed => "closed",
        }))
    }

    /// The round-trip time of the last keepalive ping answered, in seconds.
    #[getter]
    fn latency(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        let c = self.lock(py)?;
        Ok(c.session
            .as_ref()
            .and_then(Session::round_trip)
            .map(|d| d.as_secs_f64()))
    }

    #[getter]
    fn state(&self, py: Python<'_>) -> PyResult<u8> {
        Ok(state_number(self.lock(py)?.inner.state()))
    }

    #[getter]
    fn client(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.inner.role() == Role::Client)
    }

    #[getter]
    fn close_sent(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.inner.close_sent())
    }

    /// Whether a frame from `encode_shared_frame` may be written to this connection as is.
    #[getter]
    fn accepts_shared_frames(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.inner.accepts_shared_frames())
    }

    /// Whether permessage-deflate was negotiated.
    #[getter]
    fn compressed(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.inner.compressed())
    }

    /// Whether a compressor or decompressor is allocated now.
    #[getter]
    fn holds_compression_state(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.inner.holds_compression_state())
    }

    /// Frees the compression state of a connection idle since the last call (see the engine's
    /// `compact_if_idle`); True if it did.
    fn compact_if_idle(&self, py: Python<'_>) -> PyResult<bool> {
        let freed = self.lock(py)?.inner.compact_if_idle();
        if freed {
            return_freed_memory(py);
        }
        Ok(freed)
    }

    /// Frees the compression state and buffers of a connection that is over (the engine's
    /// `release`).
    fn release(&self, py: Python<'_>) -> PyResult<()> {
        let held = {
            let mut c = self.lock(py)?;
            let held = c.inner.compressed();
            c.inner.release();
            held
        };
        if held {
            return_freed_memory(py);
        }
        Ok(())
    }

    #[getter]
    fn close_received(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.inner.close_received())
    }

    /// With a session, the code to report (the session's rules); before, the engine's.
    #[getter]
    fn close_code(&self, py: Python<'_>) -> PyResult<Option<u16>> {
        let c = self.lock(py)?;
        Ok(match &c.session {
            Some(session) => session.close_code(),
            None => c.inner.close_code(),
        })
    }

    #[getter]
    fn close_reason(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let c = self.lock(py)?;
        Ok(match &c.session {
            Some(session) => session.close_reason(),
            None => c.inner.close_reason(),
        }
        .map(str::to_owned))
    }

    /// Messages and bytes so far: `(messages_received, messages_sent, bytes_received,
    /// bytes_sent)`; bytes of frames as on the wire, after the opening handshake.
    #[getter]
    fn counters(&self, py: Python<'_>) -> PyResult<(u64, u64, u64, u64)> {
        let c = self.lock(py)?.inner.counters();
        Ok((
            c.messages_received,
            c.messages_sent,
            c.bytes_received,
            c.bytes_sent,
        ))
    }

    /// Counts a frame from `encode_shared_frame`, written to this connection by the caller,
    /// as one message of `size` bytes sent.
    fn count_shared_frame(&self, py: Python<'_>, size: usize) -> PyResult<()> {
        self.lock(py)?.inner.count_shared_frame(size);
        Ok(())
    }

    fn receive_data<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let mut c = self.lock(py)?;
        let mut rx = ListReceiver::new(py);
        let controls = with_bytes(data, |bytes| {
            let mut tap = ControlTap::new(&mut rx);
            c.inner.receive_data(bytes, &mut tap);
            tap.into_controls()
        })?;
        c.feed_controls(&controls);
        match rx.error {
            Some(e) => Err(e),
            None => Ok(rx.list),
        }
    }

    fn receive_eof(&self, py: Python<'_>) -> PyResult<()> {
        let mut c = self.lock(py)?;
        let ConnectionState { inner, session } = &mut *c;
        match session.as_mut() {
            Some(session) => session.receive_eof(inner),
            None => inner.receive_eof(),
        }
        Ok(())
    }

    fn send_text<'py>(&self, py: Python<'py>, data: &str) -> PyResult<Bound<'py, PyBytes>> {
        let mut c = self.lock(py)?;
        let frame = c.inner.encode_text(data).map_err(send_error)?;
        frame_bytes(py, &frame)
    }

    fn send_binary<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut c = self.lock(py)?;
        with_bytes(data, |bytes| {
            let frame = c.inner.encode_binary(bytes).map_err(send_error)?;
            frame_bytes(py, &frame)
        })?
    }

    /// One fragment of a message sent in pieces (the engine's `encode_fragment`): `str` for
    /// text, any other buffer for binary; `first` starts the message, `fin` ends it.
    #[pyo3(signature = (data, *, first, fin))]
    fn send_fragment<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        first: bool,
        fin: bool,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let mut c = self.lock(py)?;
        if let Ok(text) = data.cast::<pyo3::types::PyString>() {
            let text = text.to_str()?;
            let frame = c
                .inner
                .encode_fragment(Chunk::Text(text), first, fin)
                .map_err(send_error)?;
            return frame_bytes(py, &frame);
        }
        with_bytes(data, |bytes| {
            let frame = c
                .inner
                .encode_fragment(Chunk::Binary(bytes), first, fin)
                .map_err(send_error)?;
            frame_bytes(py, &frame)
        })?
    }

    /// The limit on a whole message the connection was made with.
    #[getter]
    fn max_message_size(&self, py: Python<'_>) -> PyResult<Option<usize>> {
        Ok(self.lock(py)?.inner.max_message_size())
    }

    /// Whether a fragmented message is being sent (`send_fragment` without its last one).
    #[getter]
    fn sending_fragments(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.inner.sending_fragments())
    }

    /// Deliver messages in pieces (`Fragment`), each message at most `max_message_size`
    /// bytes in total, at once; or whole (`pieces=False`), from the next message.
    #[pyo3(signature = (pieces, *, max_message_size = None))]
    fn set_delivery(
        &self,
        py: Python<'_>,
        pieces: bool,
        max_message_size: Option<usize>,
    ) -> PyResult<()> {
        let delivery = if pieces {
            Delivery::Pieces { max_message_size }
        } else {
            Delivery::Messages
        };
        self.lock(py)?.inner.set_delivery(delivery);
        Ok(())
    }

    #[pyo3(signature = (data = None))]
    fn send_ping<'py>(
        &self,
        py: Python<'py>,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        control(&mut *self.lock(py)?, py, OpCode::Ping, data)
    }

    #[pyo3(signature = (data = None))]
    fn send_pong<'py>(
        &self,
        py: Python<'py>,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        control(&mut *self.lock(py)?, py, OpCode::Pong, data)
    }

    #[pyo3(signature = (code = None, reason = ""))]
    fn send_close<'py>(
        &self,
        py: Python<'py>,
        code: Option<u16>,
        reason: &str,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let frame = self
            .lock(py)?
            .inner
            .send_close(code, reason)
            .map_err(send_error)?;
        Ok(PyBytes::new(py, &frame))
    }

    fn data_to_send<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = self.lock(py)?.inner.data_to_send();
        Ok(PyBytes::new(py, &data))
    }

    fn next_reply<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let reply = self.lock(py)?.inner.next_reply().unwrap_or_default();
        Ok(PyBytes::new(py, &reply))
    }

    fn close_expected(&self, py: Python<'_>) -> PyResult<bool> {
        Ok(self.lock(py)?.inner.close_expected())
    }
}

/// A ping or a pong through the engine's checked calls.
fn encode_control<'a>(
    conn: &mut engine::Connection,
    opcode: OpCode,
    bytes: &'a [u8],
) -> Result<Option<OutFrame<'a>>, SendError> {
    match opcode {
        OpCode::Ping => conn.encode_ping(bytes).map(Some),
        _ => conn.encode_pong(bytes),
    }
}

fn control<'py>(
    c: &mut ConnectionState,
    py: Python<'py>,
    opcode: OpCode,
    data: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyBytes>> {
    let mut encode = |bytes: &[u8]| match encode_control(&mut c.inner, opcode, bytes) {
        Ok(Some(frame)) => frame_bytes(py, &frame),
        Ok(None) => Ok(PyBytes::new(py, b"")),
        Err(e) => Err(send_error(e)),
    };
    match data {
        Some(data) => with_bytes(data, encode)?,
        None => encode(b""),
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
        return frame_bytes(py, &shared_text(text));
    }
    with_bytes(data, |bytes| frame_bytes(py, &shared_binary(bytes)))?
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyConnection>()?;
    for (name, value) in [
        ("STOP_SENDING", STOP_SENDING),
        ("PAUSE_READING", PAUSE_READING),
        ("RESUME_READING", RESUME_READING),
        ("AWAIT_CONSUMER", AWAIT_CONSUMER),
        ("SAMPLE_UNSENT", SAMPLE_UNSENT),
        ("END_STREAM", END_STREAM),
        ("HALF_CLOSE", HALF_CLOSE),
        ("CLOSE_TRANSPORT", CLOSE_TRANSPORT),
        ("ABORT", ABORT),
        ("DONE", DONE),
    ] {
        m.add(name, value)?;
    }
    m.add_function(wrap_pyfunction!(encode_shared_frame, m)?)
}
