//! What the GIL used to guarantee, made explicit for free-threaded CPython (PEP 703).
//!
//! - [`EngineLock`]: a `Connection`'s state behind a mutex. Calls from several threads are
//!   serialised (each call is atomic); a thread waiting for it detaches from the interpreter,
//!   so it never holds up the GIL or a stop-the-world pause. A call that re-enters the same
//!   object from the thread already inside it (a finalizer run by the garbage collector in
//!   the middle of a call) raises `RuntimeError` instead of deadlocking.
//! - [`ThreadOwner`]: `SocketIO` belongs to its event loop's thread; a call from another
//!   thread raises `RuntimeError` saying how to reach that thread.
//! - [`gil_disabled`]: whether other threads may run Python code during a call, so that a
//!   mutable buffer could change while the engine reads it (`with_bytes` copies it then).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;

thread_local! {
    static MARK: u8 = const { 0 };
}

/// A number for the calling thread, unique among the threads alive (never 0).
fn thread_mark() -> usize {
    MARK.with(|mark| mark as *const u8 as usize)
}

/// `T` behind a mutex that a thread waits for detached from the interpreter.
pub(crate) struct EngineLock<T> {
    mutex: Mutex<T>,
    /// The thread inside (its [`thread_mark`]), 0 if none: tells a re-entrant call from a
    /// concurrent one.
    owner: AtomicUsize,
}

/// The state, locked; the lock is let go when this is dropped.
pub(crate) struct EngineGuard<'a, T> {
    guard: MutexGuard<'a, T>,
    owner: &'a AtomicUsize,
}

impl<T> EngineLock<T> {
    pub(crate) fn new(value: T) -> Self {
        EngineLock {
            mutex: Mutex::new(value),
            owner: AtomicUsize::new(0),
        }
    }

    /// Locks the state, waiting (detached) while another thread has it. `what` names the
    /// object in the error a re-entrant call gets.
    pub(crate) fn lock(&self, py: Python<'_>, what: &str) -> PyResult<EngineGuard<'_, T>> {
        let me = thread_mark();
        let guard = match self.mutex.try_lock() {
            Ok(guard) => guard,
            // Release builds abort on panic; a test build's panic left the state as it was.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => {
                // Only this thread stores its own mark, and it clears it before unlocking:
                // reading it here means this thread is inside a call already.
                if self.owner.load(Ordering::Relaxed) == me {
                    return Err(PyRuntimeError::new_err(format!(
                        "{what} was called while a call on it was still running in the same \
                         thread (from a finalizer or a callback): defer the call until the \
                         first returns, e.g. with loop.call_soon"
                    )));
                }
                self.mutex
                    .lock_py_attached(py)
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
            }
        };
        self.owner.store(me, Ordering::Relaxed);
        Ok(EngineGuard {
            guard,
            owner: &self.owner,
        })
    }
}

impl<T> Deref for EngineGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for EngineGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

impl<T> Drop for EngineGuard<'_, T> {
    fn drop(&mut self) {
        // Before the mutex is let go (the guard field drops after this).
        self.owner.store(0, Ordering::Relaxed);
    }
}

/// The thread an object was created on, which alone may use it.
pub(crate) struct ThreadOwner(usize);

impl ThreadOwner {
    pub(crate) fn current() -> Self {
        ThreadOwner(thread_mark())
    }

    /// Err if the calling thread is not the owner. `what` names the object.
    pub(crate) fn check(&self, what: &str) -> PyResult<()> {
        if self.0 == thread_mark() {
            return Ok(());
        }
        Err(PyRuntimeError::new_err(format!(
            "{what} was called from a thread other than its event loop's: it is not \
             thread-safe; hand the call to the loop's thread with \
             loop.call_soon_threadsafe(...)"
        )))
    }
}

static GIL_DISABLED: AtomicBool = AtomicBool::new(false);

/// Reads whether this interpreter runs without the GIL (free-threaded CPython with the GIL
/// off), once, when the module is imported. A free-threaded interpreter can turn the GIL on
/// later (importing a module that needs it), never off again, so the answer stays on the
/// safe side.
pub(crate) fn read_gil_state(py: Python<'_>) -> PyResult<()> {
    let sys = py.import("sys")?;
    let disabled = match sys.getattr("_is_gil_enabled") {
        Ok(is_enabled) => !is_enabled.call0()?.extract::<bool>()?,
        Err(_) => false, // before 3.13: always a GIL
    };
    GIL_DISABLED.store(disabled, Ordering::Relaxed);
    Ok(())
}

/// Whether other threads may run Python code while this one is in a call.
pub(crate) fn gil_disabled() -> bool {
    GIL_DISABLED.load(Ordering::Relaxed)
}
