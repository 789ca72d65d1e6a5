//! The Python binding of the `wschannel` engine (the `wschannel._wschannel` module): the
//! only crate that imports pyo3.
//!
//! Every engine error maps to one Python exception here; peer misbehaviour is never an
//! exception (it arrives as a `Failure` event).

// The engine's modules, named as in the engine crate (`crate::engine`, `crate::session`...;
// `handshake` is the binding's own).
use wschannel::{deflate, engine, frame, session};

mod connection;
mod events;
mod handshake;
mod lock;
#[cfg(unix)]
mod socket;
#[cfg(unix)]
mod tls;

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::engine::State;

/// Runs `f` on the bytes of any object with the buffer protocol, without copying them while
/// the GIL keeps other threads' Python code out. `bytes` is immutable and never copied; any
/// other buffer (a `bytearray`, a `memoryview`) could be written by another thread while `f`
/// reads it when the GIL is off (free-threaded CPython), so it is copied first then.
pub(crate) fn with_bytes<R>(data: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return Ok(f(bytes.as_bytes()));
    }
    let buffer = PyBuffer::<u8>::get(data)?;
    if !buffer.is_c_contiguous() {
        return Err(pyo3::exceptions::PyBufferError::new_err(
            "the buffer must be contiguous: pass bytes(data)",
        ));
    }
    if lock::gil_disabled() {
        return Ok(f(&buffer.to_vec(data.py())?));
    }
    // SAFETY: the buffer is contiguous, holds `len_bytes()` bytes, and stays alive and
    // pinned while `buffer` does; with the GIL on, no other thread runs Python code (which
    // could write to it) while `f` runs, as `f` cannot release the GIL (it gets no `Python`
    // token).
    let slice =
        unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const u8, buffer.len_bytes()) };
    Ok(f(slice))
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
#[pyfunction]
fn sign_key(key: &str) -> String {
    wschannel::handshake::sign_key(key.as_bytes())
}

pub(crate) fn state_number(state: State) -> u8 {
    match state {
        State::Open => 1,
        State::Closing => 2,
        State::Closed => 3,
    }
}

/// glibc gives the free top of the heap back to the system whenever more than its trim
/// threshold is free there: 128 KiB when a process starts, raised to twice the size of the
/// largest `mmap`ed block freed so far. Until then, receiving and echoing 64 KiB messages
/// makes the heap shrink and grow again around every read, and every page is faulted in anew
/// (measured on a server echoing 64 KiB messages, 64 in flight: a `brk` per read, 6 page
/// faults per message, 28,000 messages/s; 67,000 with the threshold raised). Allocating and
/// freeing one 1 MiB block puts glibc where it would be after the first large message: 1 MiB
/// `mmap` and 2 MiB trim thresholds, still adjusted as it goes (and left alone if the
/// application set them with `mallopt`). `malloc_trim` (after compression state is freed)
/// still returns everything free.
fn settle_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: a block from malloc, freed once; black_box keeps the pair from being elided.
    unsafe {
        let block = std::hint::black_box(libc::malloc(1 << 20));
        if !block.is_null() {
            libc::free(block);
        }
    }
}

/// Declared safe without the GIL (free-threaded CPython): the state the GIL protected is
/// locked or copied (`lock.rs`, `with_bytes`).
#[pymodule(gil_used = false)]
fn _wschannel(m: &Bound<'_, PyModule>) -> PyResult<()> {
    settle_allocator();
    lock::read_gil_state(m.py())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("OPEN", state_number(State::Open))?;
    m.add("CLOSING", state_number(State::Closing))?;
    m.add("CLOSED", state_number(State::Closed))?;
    m.add_function(wrap_pyfunction!(sign_key, m)?)?;
    events::register(m)?;
    connection::register(m)?;
    handshake::register(m)?;
    #[cfg(unix)]
    socket::register(m)?;
    #[cfg(unix)]
    tls::register(m)?;
    Ok(())
}
