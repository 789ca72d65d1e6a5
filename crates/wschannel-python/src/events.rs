//! The control events `Connection.receive_data` returns besides `str` and `bytes` messages.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::engine::{Event, Receiver};

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
        };
        self.push(item);
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Ping>()?;
    m.add_class::<Pong>()?;
    m.add_class::<Close>()?;
    m.add_class::<Failure>()?;
    Ok(())
}
