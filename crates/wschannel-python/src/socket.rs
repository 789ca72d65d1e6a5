//! `SocketIO`: the socket reads and writes of an open plain (TCP or Unix) connection, done
//! here on the asyncio event loop's readiness callbacks instead of through an asyncio
//! transport (see `wschannel/_direct.py`).
//!
//! Reading: `receive()` calls `recv` into one buffer shared by the thread and feeds the bytes
//! straight to the engine, so a read costs no Python `bytes`. Writing: a message is encoded
//! and sent in the same call, an unmasked frame as two pieces (header, then the caller's
//! buffer, with no copy); what the kernel does not take waits in a queue of chunks that
//! `flush()` sends with one `sendmsg` of up to 64 pieces when the socket is writable again.
//! A mutable buffer handed over is never kept by reference: what waits of it is copied, so
//! the caller may reuse it at once. An immutable `bytes` body of 8 KiB or more (a message the
//! application sends, or a broadcast's shared frame) waits in the queue as a reference to it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use pyo3::{PyTraverseError, PyVisit};

use super::connection::{send_error, ConnectionState, PyConnection};
use super::events::ListReceiver;
use super::lock::ThreadOwner;
use super::tls::{alpn, handshake_eof, negotiated, Tls, TlsClientConfig, TlsServerConfig};
use super::with_bytes;
use crate::frame::OutFrame;
use crate::session::ControlTap;

/// Bytes asked of the kernel per `recv`.
const READ_SIZE: usize = 256 * 1024;
/// `recv` calls per readable event at most (while each one fills the buffer).
const MAX_READS: usize = 4;
/// Pieces per `sendmsg`.
const MAX_PIECES: usize = 64;
/// While the messages of one read are handled, what they send is gathered (corked) up to
/// this many bytes and sent with one `sendmsg` when they are done: a pipelining peer's
/// batch of small messages costs one system call, not one per answer.
const CORK_LIMIT: usize = 64 * 1024;
/// Gathering stops once it has gone on this long: handling that is costly per message
/// (compression, large payloads) sends as it goes, so that the peer can start on the first
/// answers while this side works on the rest (on a pipelined compressed echo, gathering a
/// whole batch made each side wait for the other and cost 40 % of the throughput).
const CORK_TIME: Duration = Duration::from_micros(50);
/// An immutable `bytes` body at least this large waits in the queue by reference, not as a
/// copy (under it, copying costs less than an extra piece per `sendmsg`).
const SHARE_MIN: usize = 8 * 1024;
/// The cork buffer's allocation is kept between reads up to this size (a larger one is freed,
/// so that an idle connection holds little).
const CORK_KEEP: usize = 2 * 1024;

#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = 0; // Python ignores SIGPIPE: a closed peer gives EPIPE

/// A piece of the write queue.
enum Chunk {
    Owned(Vec<u8>),
    /// `bytes` (immutable) from `start` on.
    Shared {
        owner: Py<PyBytes>,
        start: usize,
    },
}

impl Chunk {
    fn bytes<'a>(&'a self, py: Python<'a>) -> &'a [u8] {
        match self {
            Chunk::Owned(bytes) => bytes,
            Chunk::Shared { owner, start } => &owner.bind(py).as_bytes()[*start..],
        }
    }
}

/// `bytes` whose buffer is exactly `body`, if it is large enough to be queued by reference.
/// Callers pass exact `bytes` only: an instance of a subclass may refer to other objects, and
/// the queue is not visited by the garbage collector.
fn sharable<'a, 'py>(
    owner: Option<&'a Bound<'py, PyBytes>>,
    body: &[u8],
) -> Option<&'a Bound<'py, PyBytes>> {
    owner.filter(|owner| {
        let whole = owner.as_bytes();
        body.len() >= SHARE_MIN && whole.as_ptr() == body.as_ptr() && whole.len() == body.len()
    })
}

thread_local! {
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One `recv`: `Ok(None)` when the socket has nothing now.
fn recv(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call; recv
        // only writes to it.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(None),
            _ => return Err(err),
        }
    }
}

/// `recv` into the engine's message buffer (`Connection::read_payload_in_place`), keeping
/// what it returned.
struct Recv {
    fd: RawFd,
    result: io::Result<Option<usize>>,
}

// SAFETY: `recv` writes at most `room.len()` bytes at the start of `room` and returns their
// count; nothing is reported written when it fails.
unsafe impl wschannel::ReadInto for Recv {
    fn read_into(&mut self, room: &mut [MaybeUninit<u8>]) -> usize {
        self.result = recv(self.fd, room);
        match self.result {
            Ok(Some(n)) => n,
            _ => 0,
        }
    }
}

/// One `sendmsg` of `pieces` (at most [`MAX_PIECES`]): the bytes the kernel took (0 when the
/// socket's buffer is full).
fn send_pieces(fd: RawFd, pieces: &[&[u8]]) -> io::Result<usize> {
    // Only the slots used are written: zeroing all 64 (1 KiB) cost more than the rest of
    // building the call (a memset per message on a server's answers).
    // SAFETY: an array of MaybeUninit needs no initialisation.
    let mut iov: [MaybeUninit<libc::iovec>; MAX_PIECES] =
        unsafe { MaybeUninit::uninit().assume_init() };
    let count = pieces.len().min(MAX_PIECES);
    for (slot, piece) in iov.iter_mut().zip(pieces) {
        slot.write(libc::iovec {
            iov_base: piece.as_ptr() as *mut libc::c_void,
            iov_len: piece.len(),
        });
    }
    // SAFETY: an all-zero msghdr is valid (no address, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr().cast::<libc::iovec>();
    msg.msg_iovlen = count as _;
    loop {
        // SAFETY: `msg` points at `count` iovecs, all written above, describing live,
        // readable slices.
        let n = unsafe { libc::sendmsg(fd, &msg, SEND_FLAGS) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Ok(0),
            _ => return Err(err),
        }
    }
}

/// `io::Write` over the socket, for rustls's `write_tls`: one `sendmsg` per call; `Ok(0)`
/// when the socket's buffer is full.
struct FdWriter(RawFd);

impl io::Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_pieces(self.0, &[buf])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let mut pieces: [&[u8]; MAX_PIECES] = [&[]; MAX_PIECES];
        let count = bufs.len().min(MAX_PIECES);
        for (piece, buf) in pieces.iter_mut().zip(bufs) {
            *piece = buf;
        }
        send_pieces(self.0, &pieces[..count])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The error of a call that finds the SocketIO in another call.
fn busy() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err(
        "SocketIO was called while a call on it was still running (from another thread, or \
         from a callback): it belongs to its event loop's thread; hand the call to that \
         thread with loop.call_soon_threadsafe(...)",
    )
}

/// Reads and writes one connection's socket; the socket itself stays owned by Python.
///
/// Not thread-safe: it belongs to the thread that made it (its event loop's), and a call from
/// another thread raises `RuntimeError` (`ThreadOwner`).
#[pyclass(name = "SocketIO", module = "wschannel._wschannel")]
pub struct SocketIO {
    owner: ThreadOwner,
    fd: RawFd,
    /// The engine's connection: set from the start on a plain socket; on a TLS one, by
    /// `attach()` once the opening handshake (which reads with `receive_plain()`) is over.
    conn: Option<Py<PyConnection>>,
    /// rustls, on a TLS connection: what is sent is encrypted on its way to `send_pieces`
    /// (and the queue holds ciphertext), what is read decrypted on its way to the engine.
    tls: Option<Box<Tls>>,
    /// Plaintext that came with the end of the TLS handshake (a client's request right
    /// behind its `Finished`): the start of the next `receive_plain()`.
    early: Vec<u8>,
    /// A TLS read made rustls queue bytes (an alert, a key update) and the queue stopped
    /// being empty: `wake` is due at the next `uncork()`.
    wake_due: bool,
    /// Called with no arguments when the queue stops being empty, when it grows past
    /// `high`, and when a write fails (the error is then in `error`). Dropped by `discard()`.
    wake: Option<Py<PyAny>>,
    queue: VecDeque<Chunk>,
    /// Bytes of the queue's first chunk already sent.
    offset: usize,
    pending: usize,
    /// The most bytes `pending` has held: the write buffer's high-water mark. Updated only
    /// where the queue grows (the kernel did not take everything), never on the fast path.
    high_water: usize,
    high: usize,
    error: Option<PyErr>,
    /// Set by `discard()`: nothing more goes out.
    closed: bool,
    /// Between `receive()` returning messages and `uncork()`: sends are gathered in `cork`.
    corked: bool,
    cork: Vec<u8>,
    /// When the first bytes went into `cork`.
    cork_started: Option<Instant>,
    /// If set, a send outside a read's handling also starts gathering, and this is called
    /// (once) to have `uncork()` called soon: the asyncio layer schedules it for the loop's
    /// next turn, so what a task sends in one turn leaves in one `sendmsg`.
    defer: Option<Py<PyAny>>,
    defer_due: bool,
    /// A read error that came after some data: raised by the next `receive()`.
    read_error: Option<io::Error>,
    /// When a send outside a read's handling last happened.
    last_send: Option<Instant>,
}

impl SocketIO {
    fn with_tls(
        fd: RawFd,
        conn: Option<Py<PyConnection>>,
        tls: Option<Box<Tls>>,
        wake: Py<PyAny>,
        high: usize,
    ) -> Self {
        SocketIO {
            owner: ThreadOwner::current(),
            fd,
            conn,
            tls,
            early: Vec::new(),
            wake_due: false,
            wake: Some(wake),
            queue: VecDeque::new(),
            offset: 0,
            pending: 0,
            high_water: 0,
            high,
            error: None,
            closed: false,
            corked: false,
            cork: Vec::new(),
            cork_started: None,
            defer: None,
            defer_due: false,
            read_error: None,
            last_send: None,
        }
    }

    /// The engine's connection, or the error of a call that needs it before `attach()`.
    fn connection(&self, py: Python<'_>) -> PyResult<Py<PyConnection>> {
        match &self.conn {
            Some(conn) => Ok(conn.clone_ref(py)),
            None => Err(PyRuntimeError::new_err(
                "SocketIO has no connection yet: attach() the engine's Connection once the \
                 opening handshake is over",
            )),
        }
    }

    /// Encrypts `pieces` (in order, as one stream) and sends the records; what the kernel
    /// does not take is queued. True when `wake` is due.
    fn send_tls(&mut self, pieces: &[&[u8]]) -> bool {
        let Some(tls) = self.tls.as_mut() else {
            return false;
        };
        let mut slices = [io::IoSlice::new(&[]); 4];
        let mut count = 0;
        let mut total = 0;
        for piece in pieces.iter().filter(|p| !p.is_empty()) {
            if count == slices.len() {
                break;
            }
            slices[count] = io::IoSlice::new(piece);
            count += 1;
            total += piece.len();
        }
        let mut result = io::Write::write_vectored(&mut tls.conn.writer(), &slices[..count]);
        if let Ok(written) = result {
            // Without a buffer limit rustls takes everything at once; if it ever does not,
            // the rest goes in order through write_all.
            if written < total {
                let rest: Vec<u8> = pieces.concat();
                result =
                    io::Write::write_all(&mut tls.conn.writer(), &rest[written..]).map(|()| total);
            }
        }
        match result {
            Ok(_) => self.push_tls(),
            Err(e) => self.failed(e),
        }
    }

    /// Sends the records rustls has ready (behind the queue, if any); queues what the kernel
    /// does not take. True when `wake` is due.
    fn push_tls(&mut self) -> bool {
        let fd = self.fd;
        let direct = self.pending == 0;
        let Some(tls) = self.tls.as_mut() else {
            return false;
        };
        if direct {
            let mut out = FdWriter(fd);
            while tls.conn.wants_write() {
                match tls.conn.write_tls(&mut out) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return self.failed(e),
                }
            }
        }
        if !tls.conn.wants_write() {
            return false;
        }
        let mut rest = Vec::new();
        while tls.conn.wants_write() {
            if tls.conn.write_tls(&mut rest).is_err() {
                break; // a Vec takes everything
            }
        }
        self.enqueue(rest, 0)
    }

    /// Reads what the socket has into rustls: calls `deliver` with the plaintext. Returns
    /// whether the socket reported its EOF. A read error after some data is kept for the
    /// next call.
    fn read_tls(&mut self, py: Python<'_>, mut deliver: impl FnMut(&[u8])) -> PyResult<bool> {
        if let Some(err) = self.read_error.take() {
            return Err(err.into());
        }
        let fd = self.fd;
        let Some(tls) = self.tls.as_mut() else {
            return Ok(false);
        };
        let mut later = None;
        let mut read = |buf: &mut Vec<u8>| -> PyResult<bool> {
            if buf.len() < READ_SIZE {
                buf.resize(READ_SIZE, 0);
            }
            for i in 0..MAX_READS {
                // SAFETY: u8 and MaybeUninit<u8> have the same layout; recv only writes,
                // and the buffer is initialised anyway.
                let uninit = unsafe {
                    std::slice::from_raw_parts_mut(
                        buf.as_mut_ptr().cast::<MaybeUninit<u8>>(),
                        buf.len(),
                    )
                };
                match recv(fd, uninit) {
                    Ok(Some(0)) => {
                        tls.eof();
                        return Ok(true);
                    }
                    Ok(Some(n)) => {
                        if let Err(e) = tls.feed(&buf[..n], &mut deliver) {
                            return Err(tls.error(py, e));
                        }
                        if tls.peer_closed || n < buf.len() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) if i == 0 => return Err(e.into()),
                    Err(e) => {
                        // Reported on the next call (the kernel reports an error once).
                        later = Some(e);
                        break;
                    }
                }
            }
            Ok(false)
        };
        let result = READ_BUFFER.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => read(&mut buf),
            Err(_) => read(&mut Vec::new()),
        });
        self.read_error = later;
        result
    }

    /// `handshake()`: the state (0, 1 or 2) and whether `wake` is due.
    fn handshake_step(&mut self, py: Python<'_>) -> PyResult<(u8, bool)> {
        self.owner.check("SocketIO")?;
        if self.tls.is_none() {
            return Err(PyRuntimeError::new_err(
                "handshake() is for a TLS SocketIO (SocketIO.tls_client or tls_server)",
            ));
        }
        let mut early = std::mem::take(&mut self.early);
        let read = self.read_tls(py, |plain| early.extend_from_slice(plain));
        self.early = early;
        let eof = match read {
            Ok(eof) => eof,
            Err(e) => {
                self.push_tls(); // the alert that says why, if rustls has one
                return Err(e);
            }
        };
        let tls = self.tls.as_deref().expect("checked above");
        if tls.asked_for_certificate() {
            return Ok((2, false));
        }
        let done = !tls.conn.is_handshaking();
        let wake = self.push_tls();
        if !done && (eof || self.tls.as_deref().is_some_and(|tls| tls.peer_closed)) {
            return Err(handshake_eof());
        }
        Ok((u8::from(done), wake))
    }

    /// `receive_plain()`: the plaintext (None at the peer's end) and whether `wake` is due.
    fn receive_plain_step(&mut self, py: Python<'_>) -> PyResult<(Option<Vec<u8>>, bool)> {
        self.owner.check("SocketIO")?;
        let mut data = std::mem::take(&mut self.early);
        let eof = self.read_tls(py, |plain| data.extend_from_slice(plain))?;
        let wake = self.push_tls();
        let closed = eof || self.tls.as_deref().is_some_and(|tls| tls.peer_closed);
        if closed && data.is_empty() {
            return Ok((None, wake));
        }
        Ok((Some(data), wake))
    }

    /// `receive()` on a TLS connection.
    fn receive_tls<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        if self.tls.as_deref().is_some_and(|tls| tls.peer_closed) {
            return Ok(None);
        }
        let conn = self.connection(py)?;
        let mut conn = conn.get().lock(py)?;
        let mut rx = ListReceiver::new(py);
        let mut tap = ControlTap::new(&mut rx);
        let read = self.read_tls(py, |plain| conn.inner.receive_data(plain, &mut tap));
        let controls = tap.into_controls();
        conn.feed_controls(&controls);
        // What rustls has to say back (a key update), queued behind what is: wake at uncork.
        let wake = self.push_tls();
        self.wake_due |= wake;
        let eof = read?;
        if let Some(e) = rx.error {
            return Err(e);
        }
        if !rx.list.is_empty() {
            self.corked = true;
            return Ok(Some(rx.list));
        }
        let closed = eof || self.tls.as_deref().is_some_and(|tls| tls.peer_closed);
        Ok((!closed).then_some(rx.list))
    }

    /// Sends `frame` (after anything corked), queueing what the kernel does not take. True
    /// when `wake` must be called (once no borrow is held: it may call back). `owner`: the
    /// `bytes` the message came from, if any.
    fn write_frame(&mut self, frame: &OutFrame<'_>, owner: Option<&Bound<'_, PyBytes>>) -> bool {
        if self.closed || self.error.is_some() {
            return false; // the connection is being torn down; nothing more goes out
        }
        self.start_deferred_cork();
        if self.may_gather(frame.len()) {
            frame.append_to(&mut self.cork);
            return false;
        }
        let cork = std::mem::take(&mut self.cork);
        let wake = match frame.unmasked_parts() {
            Some((head, body)) => self.send_now(&[&cork, head, body], sharable(owner, body)),
            None if cork.is_empty() => self.send_owned(frame.to_vec()),
            None => self.send_now(&[&cork, &frame.to_vec()], None),
        };
        self.reuse_cork(cork);
        wake
    }

    /// Sends `chunk`; what the kernel does not take is queued without another copy.
    fn send_owned(&mut self, chunk: Vec<u8>) -> bool {
        if self.tls.is_some() {
            return self.send_tls(&[&chunk]);
        }
        if self.pending > 0 {
            return self.enqueue(chunk, 0);
        }
        match send_pieces(self.fd, &[&chunk]) {
            Ok(sent) if sent == chunk.len() => false,
            Ok(sent) => self.enqueue(chunk, sent),
            Err(e) => self.failed(e),
        }
    }

    /// Sends `bytes` (after anything corked), queueing what the kernel does not take; true
    /// when `wake` is due.
    fn write_bytes(
        &mut self,
        bytes: &[u8],
        defer: bool,
        owner: Option<&Bound<'_, PyBytes>>,
    ) -> bool {
        if bytes.is_empty() || self.closed || self.error.is_some() {
            return false;
        }
        if defer {
            self.start_deferred_cork();
        }
        if self.may_gather(bytes.len()) {
            self.cork.extend_from_slice(bytes);
            return false;
        }
        let cork = std::mem::take(&mut self.cork);
        let wake = self.send_now(&[&cork, bytes], sharable(owner, bytes));
        self.reuse_cork(cork);
        wake
    }

    /// Whether `len` more bytes may join the gathered ones: while gathering, under the size
    /// limit (never over the write limit, so that `flush()` keeps its meaning) and the time
    /// limit. Starts the clock with the first bytes.
    fn may_gather(&mut self, len: usize) -> bool {
        if !self.corked || self.cork.len() + len > CORK_LIMIT.min(self.high) {
            return false;
        }
        match self.cork_started {
            Some(started) if !self.cork.is_empty() => started.elapsed() < CORK_TIME,
            _ => {
                self.cork_started = Some(Instant::now());
                true
            }
        }
    }

    /// A send outside a read's handling gathers only if it follows another one closely (a
    /// burst): a lone send, or one per connection as in a fan-out to many, goes out at once
    /// and schedules nothing.
    fn start_deferred_cork(&mut self) {
        if self.corked || self.defer.is_none() {
            return;
        }
        let now = Instant::now();
        let recent = self
            .last_send
            .is_some_and(|last| now.duration_since(last) < CORK_TIME);
        self.last_send = Some(now);
        if recent {
            self.corked = true;
            self.defer_due = true;
        }
    }

    /// Sends what is corked; true when `wake` is due.
    fn flush_cork(&mut self) -> bool {
        self.corked = false;
        if self.cork.is_empty() {
            return false;
        }
        let cork = std::mem::take(&mut self.cork);
        let wake = if self.closed || self.error.is_some() {
            false
        } else {
            self.send_now(&[&cork], None)
        };
        self.reuse_cork(cork);
        wake
    }

    /// Keeps the cork buffer's allocation for the next read, unless it grew large.
    fn reuse_cork(&mut self, mut cork: Vec<u8>) {
        if cork.capacity() <= CORK_KEEP {
            cork.clear();
            self.cork = cork;
        }
    }

    /// One `sendmsg` of `pieces` if nothing is queued, else behind the queue; what the kernel
    /// does not take is queued: copied, except the last piece if `shared` is the `bytes` it
    /// is the buffer of (queued as a reference). True when `wake` is due.
    fn send_now(&mut self, pieces: &[&[u8]], shared: Option<&Bound<'_, PyBytes>>) -> bool {
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        if total == 0 {
            return false;
        }
        if self.tls.is_some() {
            return self.send_tls(pieces);
        }
        let sent = if self.pending > 0 {
            0
        } else {
            match send_pieces(self.fd, pieces) {
                Ok(sent) => sent,
                Err(e) => return self.failed(e),
            }
        };
        if sent == total {
            return false;
        }
        let before = self.pending;
        let copied = if shared.is_some() {
            &pieces[..pieces.len() - 1]
        } else {
            pieces
        };
        let copied_len: usize = copied.iter().map(|p| p.len()).sum();
        if sent < copied_len {
            let mut rest = Vec::with_capacity(copied_len - sent);
            let mut skip = sent;
            for piece in copied {
                if skip >= piece.len() {
                    skip -= piece.len();
                } else {
                    rest.extend_from_slice(&piece[skip..]);
                    skip = 0;
                }
            }
            self.queue.push_back(Chunk::Owned(rest));
        }
        if let Some(owner) = shared {
            let start = sent.saturating_sub(copied_len);
            let owner = owner.clone().unbind();
            self.queue.push_back(Chunk::Shared { owner, start });
        }
        self.pending += total - sent;
        self.high_water = self.high_water.max(self.pending);
        self.woken_by(before)
    }

    /// Queues `chunk[offset..]` behind what is already queued; true when `wake` is due.
    fn enqueue(&mut self, chunk: Vec<u8>, offset: usize) -> bool {
        let before = self.pending;
        let added = chunk.len() - offset;
        if added == 0 {
            return false;
        }
        if self.queue.is_empty() {
            self.offset = offset;
            self.queue.push_back(Chunk::Owned(chunk));
        } else if offset == 0 {
            self.queue.push_back(Chunk::Owned(chunk)); // behind others: as it is, no copy
        } else {
            self.queue.push_back(Chunk::Owned(chunk[offset..].to_vec()));
        }
        self.pending += added;
        self.high_water = self.high_water.max(self.pending);
        self.woken_by(before)
    }

    /// Whether `wake` is due now that `pending` grew from `before`: the queue stopped being
    /// empty, or went past the write limit.
    fn woken_by(&self, before: usize) -> bool {
        before == 0 || (before <= self.high && self.pending > self.high)
    }

    fn failed(&mut self, err: io::Error) -> bool {
        self.error = Some(err.into());
        self.clear();
        true
    }

    /// The SocketIO for one call, from its own thread, or the error that says why not.
    fn borrow<'py>(slf: &Bound<'py, Self>) -> PyResult<PyRefMut<'py, Self>> {
        let this = slf.try_borrow_mut().map_err(|_| busy())?;
        this.owner.check("SocketIO")?;
        Ok(this)
    }

    /// Runs `f` on the SocketIO and the connection, then calls `wake` if `f` says so, with
    /// neither borrowed any more.
    fn with_conn(
        slf: &Bound<'_, Self>,
        f: impl FnOnce(&mut Self, &mut ConnectionState) -> PyResult<bool>,
    ) -> PyResult<()> {
        let py = slf.py();
        let due = {
            let mut this = Self::borrow(slf)?;
            let conn = this.connection(py)?;
            let mut conn = conn.get().lock(py)?;
            let wake = f(&mut this, &mut conn)?;
            (wake || this.defer_due).then_some(wake)
        };
        // Nothing to call (the common case): no second borrow.
        due.map_or(Ok(()), |wake| Self::notify(slf, wake))
    }

    /// Calls `wake` if `wake` says so, and `defer` if a send started gathering, with nothing
    /// borrowed (they may call back).
    fn notify(slf: &Bound<'_, Self>, wake: bool) -> PyResult<()> {
        let py = slf.py();
        let (wake, defer) = {
            let mut this = Self::borrow(slf)?;
            let defer = if std::mem::take(&mut this.defer_due) {
                this.defer.as_ref().map(|d| d.clone_ref(py))
            } else {
                None
            };
            let wake = if wake {
                this.wake.as_ref().map(|w| w.clone_ref(py))
            } else {
                None
            };
            (wake, defer)
        };
        // Both, even if the first raises: a gathering with no uncork to come would stall.
        let woken = wake.map_or(Ok(()), |wake| wake.call0(py).map(drop));
        let deferred = defer.map_or(Ok(()), |defer| defer.call0(py).map(drop));
        woken.and(deferred)
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.offset = 0;
        self.pending = 0;
    }
}

#[pymethods]
impl SocketIO {
    #[new]
    #[pyo3(signature = (fd, conn, wake, *, high = 65536))]
    fn new(fd: RawFd, conn: Py<PyConnection>, wake: Py<PyAny>, high: usize) -> Self {
        Self::with_tls(fd, Some(conn), None, wake, high)
    }

    /// A SocketIO for a TLS client connection over `fd` (connected, non-blocking), checking
    /// the server's certificate against `server_name`. Drive the handshake with
    /// `handshake()`, then read the opening handshake with `receive_plain()`, then
    /// `attach()` the engine's connection.
    #[staticmethod]
    #[pyo3(signature = (fd, config, server_name, wake, *, high = 65536))]
    fn tls_client(
        fd: RawFd,
        config: &TlsClientConfig,
        server_name: &str,
        wake: Py<PyAny>,
        high: usize,
    ) -> PyResult<Self> {
        let tls = Tls::client(config, server_name)?;
        Ok(Self::with_tls(fd, None, Some(Box::new(tls)), wake, high))
    }

    /// A SocketIO for a TLS server connection over `fd` (accepted, non-blocking): as
    /// `tls_client`.
    #[staticmethod]
    #[pyo3(signature = (fd, config, wake, *, high = 65536))]
    fn tls_server(
        fd: RawFd,
        config: &TlsServerConfig,
        wake: Py<PyAny>,
        high: usize,
    ) -> PyResult<Self> {
        let tls = Tls::server(config)?;
        Ok(Self::with_tls(fd, None, Some(Box::new(tls)), wake, high))
    }

    /// Reads what the socket has and moves the TLS handshake on, sending what it answers.
    /// Returns 0 while the handshake goes on, 1 once it is done, 2 if the server asked for a
    /// client certificate (nothing was sent: make the connection again with Python's `ssl`,
    /// which presents the context's). Raises `ssl.SSLError` (`ssl.SSLCertVerificationError`
    /// for a certificate that does not verify) or `OSError`.
    fn handshake(slf: &Bound<'_, Self>) -> PyResult<u8> {
        let py = slf.py();
        let (state, wake) = Self::borrow(slf)?.handshake_step(py)?;
        Self::notify(slf, wake)?;
        Ok(state)
    }

    /// After the TLS handshake, before `attach()`: the plaintext the socket had (b"" if
    /// none), or None at the peer's EOF or `close_notify`.
    fn receive_plain<'py>(slf: &Bound<'py, Self>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let py = slf.py();
        let (data, wake) = Self::borrow(slf)?.receive_plain_step(py)?;
        Self::notify(slf, wake)?;
        Ok(data.map(|data| PyBytes::new(py, &data)))
    }

    /// Hands the reads to the engine's connection, once the opening handshake is over.
    fn attach(&mut self, conn: Py<PyConnection>) -> PyResult<()> {
        self.owner.check("SocketIO")?;
        self.conn = Some(conn);
        Ok(())
    }

    /// Whether the peer ended its side of the TLS session (`close_notify`): no more data
    /// comes, whether or not the socket reports its EOF.
    #[getter]
    fn peer_closed(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.peer_closed)
    }

    /// Whether this is a TLS connection.
    #[getter]
    fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The TLS version and cipher suite agreed, as `ssl` names them, or None.
    #[getter]
    fn tls_version(&self) -> Option<(&'static str, &'static str)> {
        self.tls.as_deref().and_then(negotiated)
    }

    /// The ALPN protocol agreed, or None.
    #[getter]
    fn alpn_protocol<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.tls.as_deref().and_then(|tls| alpn(py, tls))
    }

    /// Sends the TLS `close_notify` alert (behind what is queued): nothing more is sent.
    fn close_notify(slf: &Bound<'_, Self>) -> PyResult<()> {
        let wake = {
            let mut this = Self::borrow(slf)?;
            let open = !this.closed && this.error.is_none();
            match this.tls.as_mut() {
                Some(tls) if open => {
                    tls.conn.send_close_notify();
                    this.push_tls()
                }
                _ => false,
            }
        };
        Self::notify(slf, wake)
    }

    /// Bytes waiting to be sent (corked or queued).
    #[getter]
    fn pending(&self) -> usize {
        self.pending + self.cork.len()
    }

    /// The most bytes that have waited in the queue at once (what the kernel did not take;
    /// not the gathering of one read's answers).
    #[getter]
    fn high_water(&self) -> usize {
        self.high_water
    }

    /// The write limit above which `wake` is called.
    #[getter]
    fn get_high(&self) -> usize {
        self.high
    }

    #[setter]
    fn set_high(&mut self, high: usize) {
        self.high = high;
    }

    /// Called (with no arguments) when a send outside a read's handling starts gathering;
    /// it must arrange for `uncork()` to be called soon. None: such sends go out at once.
    #[getter]
    fn get_defer(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.defer.as_ref().map(|d| d.clone_ref(py))
    }

    #[setter]
    fn set_defer(&mut self, defer: Option<Py<PyAny>>) {
        self.defer = defer;
    }

    /// The error of the first write that failed, taken (None if there was none).
    fn take_error(&mut self) -> PyResult<Option<PyErr>> {
        self.owner.check("SocketIO")?;
        Ok(self.error.take())
    }

    /// Reads what the socket has (up to 1 MiB) into the connection: its events, or None
    /// when the peer has closed its side (EOF). Raises OSError if the read fails.
    fn receive<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyList>>> {
        self.owner.check("SocketIO")?;
        if let Some(err) = self.read_error.take() {
            return Err(err.into());
        }
        if self.tls.is_some() {
            return self.receive_tls(py);
        }
        let conn = self.connection(py)?;
        let mut conn = conn.get().lock(py)?;
        let mut rx = ListReceiver::new(py);
        let mut tap = ControlTap::new(&mut rx);
        let fd = self.fd;
        let mut later: Option<io::Error> = None;
        let mut read = |buf: &mut Vec<u8>| -> io::Result<bool> {
            if buf.len() < READ_SIZE {
                buf.resize(READ_SIZE, 0);
            }
            for i in 0..MAX_READS {
                // The payload of a large frame goes straight into its message (one copy
                // less); everything else through the shared buffer.
                let mut source = Recv {
                    fd,
                    result: Ok(None),
                };
                let direct = conn
                    .inner
                    .read_payload_in_place(READ_SIZE, &mut source, &mut tap);
                let (result, asked, direct) = match direct {
                    Some(asked) => (source.result, asked, true),
                    None => {
                        // SAFETY: u8 and MaybeUninit<u8> have the same layout; recv only
                        // writes, and the buffer is initialised anyway.
                        let uninit = unsafe {
                            std::slice::from_raw_parts_mut(
                                buf.as_mut_ptr().cast::<MaybeUninit<u8>>(),
                                buf.len(),
                            )
                        };
                        (recv(fd, uninit), buf.len(), false)
                    }
                };
                match result {
                    Ok(Some(0)) => return Ok(i > 0), // EOF; seen again on the next call
                    Ok(Some(n)) => {
                        if !direct {
                            conn.inner.receive_data(&buf[..n], &mut tap);
                        }
                        if n < asked {
                            break; // the socket had less: nothing more for now
                        }
                    }
                    Ok(None) => break,
                    Err(e) if i == 0 => return Err(e),
                    Err(e) => {
                        // Reported on the next call (the kernel reports an error once).
                        later = Some(e);
                        break;
                    }
                }
            }
            Ok(true)
        };
        let open = READ_BUFFER.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => read(&mut buf),
            Err(_) => read(&mut Vec::new()),
        })?;
        self.read_error = later;
        let controls = tap.into_controls();
        conn.feed_controls(&controls);
        if let Some(e) = rx.error {
            return Err(e);
        }
        if !rx.list.is_empty() {
            self.corked = true;
        }
        Ok(open.then_some(rx.list))
    }

    /// Ends the gathering that `receive()` started when it returned messages: sends what
    /// their handling sent, in one `sendmsg`. Call it once they are handled, even if that
    /// failed.
    fn uncork(slf: &Bound<'_, Self>) -> PyResult<()> {
        let due = {
            let mut this = Self::borrow(slf)?;
            let wake = this.flush_cork() | std::mem::take(&mut this.wake_due);
            (wake || this.defer_due).then_some(wake)
        };
        due.map_or(Ok(()), |wake| Self::notify(slf, wake))
    }

    /// Encodes and sends a text message.
    fn send_text(slf: &Bound<'_, Self>, data: &str) -> PyResult<()> {
        Self::with_conn(slf, |this, conn| {
            let frame = conn.inner.encode_text(data).map_err(send_error)?;
            Ok(this.write_frame(&frame, None))
        })
    }

    /// Encodes and sends a binary message from any contiguous buffer.
    fn send_binary(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let owner = data.cast_exact::<PyBytes>().ok();
        Self::with_conn(slf, |this, conn| {
            with_bytes(data, |bytes| {
                let frame = conn.inner.encode_binary(bytes).map_err(send_error)?;
                Ok(this.write_frame(&frame, owner))
            })?
        })
    }

    /// Sends bytes that are already a frame (or several). With `gather=False` they do not
    /// start a gathering (they join one already under way, to keep the order): a broadcast,
    /// which writes one frame to many connections, sends at once.
    #[pyo3(signature = (data, *, gather = true))]
    fn send(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>, gather: bool) -> PyResult<()> {
        let wake = {
            let mut this = Self::borrow(slf)?;
            let owner = data.cast_exact::<PyBytes>().ok();
            with_bytes(data, |bytes| this.write_bytes(bytes, gather, owner))?
        };
        Self::notify(slf, wake)
    }

    /// Sends a frame from `encode_shared_frame` (one encoding for many connections) as
    /// `send(frame, gather=False)` does, and counts it in the connection as one message sent.
    fn send_shared(slf: &Bound<'_, Self>, frame: &Bound<'_, PyBytes>) -> PyResult<()> {
        let wake = {
            let mut this = Self::borrow(slf)?;
            let py = slf.py();
            this.connection(py)?
                .get()
                .lock(py)?
                .inner
                .count_shared_frame(frame.as_bytes().len());
            let owner = frame.cast_exact::<PyBytes>().ok();
            this.write_bytes(frame.as_bytes(), false, owner)
        };
        Self::notify(slf, wake)
    }

    /// Sends as much of the queue as the kernel takes: the bytes still waiting. Raises
    /// OSError if the write fails (the queue is then dropped).
    fn flush(&mut self, py: Python<'_>) -> PyResult<usize> {
        self.owner.check("SocketIO")?;
        while self.pending > 0 {
            let mut pieces: [&[u8]; MAX_PIECES] = [&[]; MAX_PIECES];
            let mut count = 0;
            for (i, chunk) in self.queue.iter().take(MAX_PIECES).enumerate() {
                let bytes = chunk.bytes(py);
                pieces[i] = if i == 0 { &bytes[self.offset..] } else { bytes };
                count += 1;
            }
            let mut sent = match send_pieces(self.fd, &pieces[..count]) {
                Ok(sent) => sent,
                Err(e) => {
                    self.clear();
                    return Err(e.into());
                }
            };
            if sent == 0 {
                break;
            }
            self.pending -= sent;
            while sent > 0 {
                let front = self.queue.front().map_or(0, |c| c.bytes(py).len()) - self.offset;
                if sent >= front {
                    sent -= front;
                    self.queue.pop_front();
                    self.offset = 0;
                } else {
                    self.offset += sent;
                    sent = 0;
                }
            }
            if count == MAX_PIECES || self.pending == 0 {
                continue;
            }
            break; // the kernel took less than everything: its buffer is full
        }
        Ok(self.pending)
    }

    /// Lets the garbage collector see the callbacks (they refer back to the transport).
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(conn) = &self.conn {
            visit.call(conn)?;
        }
        if let Some(wake) = &self.wake {
            visit.call(wake)?;
        }
        if let Some(defer) = &self.defer {
            visit.call(defer)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.wake = None;
        self.defer = None;
        self.error = None;
    }

    /// Drops whatever is queued, and whatever is sent from now on (the connection is being
    /// torn down).
    fn discard(&mut self) -> PyResult<()> {
        self.owner.check("SocketIO")?;
        self.closed = true;
        // The callbacks refer back to the transport that holds this object: drop them so
        // that no cycle outlives the connection.
        self.wake = None;
        self.defer = None;
        self.corked = false;
        self.cork = Vec::new();
        self.clear();
        Ok(())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SocketIO>()
}
