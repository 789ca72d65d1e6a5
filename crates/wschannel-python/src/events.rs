//! The control events `Connection.receive_data` returns besides `str` and `bytes` messages.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::engine::{Chunk, Event, Receiver};

/// A ping frame from the peer; the engine has already queued the pong.
#[pyclass(frozen, module = "wschannel._wschannel")]
pub struct Ping {
    data: Vec<u8>,
}

/// A pong frame from the peer.
#[pyclass(frozen, module = "wschannel._wschannel")]
pub struct Pong {
    data: Vec<u8>,
}

#[pymethods]
impl Ping {
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data)
    }
    fn __repr__(&self) -> String {
        format!("Ping(data={})", bytes_repr(&self.data))
    }
}

#[pymethods]
impl Pong {
    #[getter]
    fn data<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.data)
    }
    fn __repr__(&self) -> String {
        format!("Pong(data={})", bytes_repr(&self.data))
    }
}

/// A piece of a message received in pieces (`Connection.set_delivery`): `data` is `str` for
/// text (whole characters) or `bytes` for binary; `last` on the message's last piece.
#[pyclass(frozen, get_all, module = "wschannel._wschannel")]
pub struct Fragment {
    data: Py<PyAny>,
    last: bool,
}

#[pymethods]
impl Fragment {
    /// A piece made in Python: a whole message received before pieces were asked for is one
    /// piece with `last=True`.
    #[new]
    #[pyo3(signature = (data, last = true))]
    fn new(data: &Bound<'_, PyAny>, last: bool) -> PyResult<Self> {
        if !(data.is_instance_of::<PyString>() || data.is_instance_of::<PyBytes>()) {
            return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                "Fragment data is str or bytes, not {}",
                data.get_type().name()?
            )));
        }
        Ok(Fragment {
            data: data.clone().unbind(),
            last,
        })
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let data = self.data.bind(py);
        let len = data.len()?;
        let kind = if data.is_instance_of::<PyString>() {
            "str"
        } else {
            "bytes"
        };
        let last = if self.last { "True" } else { "False" };
        Ok(format!("Fragment(<{len} {kind}>, last={last})"))
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> PyResult<bool> {
        let Ok(other) = other.cast::<Fragment>() else {
            return Ok(false);
        };
        let other = other.get();
        Ok(self.last == other.last && self.data.bind(py).eq(other.data.bind(py))?)
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        (self.data.bind(py), self.last).into_pyobject(py)?.hash()
    }
}

/// The peer's close frame (RFC 6455 §5.5.1): code 1005 and '' when it had no code.
#[pyclass(frozen, get_all, module = "wschannel._wschannel")]
pub struct Close {
    code: u16,
    reason: String,
}

/// This side failed the connection because of the peer (RFC 6455 §7.1.7).
#[pyclass(frozen, get_all, module = "wschannel._wschannel")]
pub struct Failure {
    code: u16,
    reason: String,
}

#[pymethods]
impl Close {
    fn __repr__(&self) -> String {
        format!("Close(code={}, reason={:?})", self.code, self.reason)
    }
}

#[pymethods]
impl Failure {
    fn __repr__(&self) -> String {
        format!("Failure(code={}, reason={:?})", self.code, self.reason)
    }
}

fn bytes_repr(data: &[u8]) -> String {
    let escaped: String = data
        .iter()
        .flat_map(|b| std::ascii::escape_default(*b))
        .map(char::from)
        .collect();
    format!("b'{escaped}'")
}

/// Collects events into a Python list: messages as `str`/`bytes`, built straight from the
/// engine's buffers, control events as the classes above.
pub struct ListReceiver<'py> {
    py: Python<'py>,
    pub list: Bound<'py, PyList>,
    pub error: Option<PyErr>,
}

impl<'py> ListReceiver<'py> {
    pub fn new(py: Python<'py>) -> Self {
        ListReceiver {
            py,
            list: PyList::empty(py),
            error: None,
        }
    }

    fn push(&mut self, item: PyResult<Bound<'py, PyAny>>) {
        if let Err(e) = item.and_then(|obj| self.list.append(obj)) {
            self.error.get_or_insert(e);
        }
    }
}

impl Receiver for ListReceiver<'_> {
    fn text(&mut self, text: &str) {
        let item = PyString::new(self.py, text).into_any();
        self.push(Ok(item));
    }

    fn binary(&mut self, data: &[u8]) {
        let item = PyBytes::new(self.py, data).into_any();
        self.push(Ok(item));
    }

    fn piece(&mut self, piece: Chunk<'_>, fin: bool) {
        let py = self.py;
        let data = match piece {
            Chunk::Text(text) => PyString::new(py, text).into_any(),
            Chunk::Binary(data) => PyBytes::new(py, data).into_any(),
        };
        let item = Bound::new(
            py,
            Fragment {
                data: data.unbind(),
                last: fin,
            },
        )
        .map(Bound::into_any);
        self.push(item);
    }

    fn control(&mut self, event: Event) {
        let py = self.py;
        let item = match event {
            Event::Ping(data) => Bound::new(py, Ping { data }).map(Bound::into_any),
            Event::Pong(data) => Bound::new(py, Pong { data }).map(Bound::into_any),
            Event::Close { code, reason } => {
                Bound::new(py, Close { code, reason }).map(Bound::into_any)
            }
            Event::Failure { code, reason } => {
                Bound::new(py, Failure { code, reason }).map(Bound::into_any)
            }
            Event::Text(text) => Ok(PyString::new(py, &text).into_any()),
            Event::Binary(data) => Ok(PyBytes::new(py, &data).into_any()),
            Event::TextPiece { text, fin } => {
                return self.piece(Chunk::Text(&text), fin);
            }
            Event::BinaryPiece { data, fin } => {
                return self.piece(Chunk::Binary(&data), fin);
            }
        };
        self.push(item);
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Ping>()?;
    m.add_class::<Pong>()?;
    m.add_class::<Close>()?;
    m.add_class::<Failure>()?;
    m.add_class::<Fragment>()?;
    Ok(())
}
