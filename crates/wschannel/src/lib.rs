//! `wschannel`'s WebSocket engine: sans-I/O, no sockets, clocks or threads.
//!
//! Bytes in, events out; commands in, bytes out.
//!
//! The layers, from the wire up: [`mask`] and [`utf8`] (the byte-level checks and transforms),
//! [`frame`] (frame headers and outgoing frames), [`deflate`] (permessage-deflate),
//! [`handshake`] (the HTTP upgrade), [`engine`] (one connection's frames and messages) and
//! [`session`] (its lifecycle: closing, keepalive, deadlines).

#![deny(missing_docs)]

pub mod deflate;
pub mod engine;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod session;
pub mod utf8;

pub use engine::{Connection, Event, Role};
pub use handshake::sign_key;
