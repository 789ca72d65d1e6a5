//! `wschannel`'s WebSocket engine: sans-I/O, no sockets, clocks or threads.
//!
//! Bytes in, events out; commands in, bytes out. The Python binding lives in
//! [`python`] behind the `python` feature, so `cargo test` runs without Python.

pub mod deflate;
pub mod engine;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod session;
pub mod utf8;

#[cfg(feature = "python")]
mod python;

pub use engine::{Connection, Event, Role};
pub use handshake::sign_key;
