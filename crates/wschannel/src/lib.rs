#![doc = include_str!("../README.md")]
//!
//! # The layers
//!
//! From the wire up: [`mask`] and [`utf8`] (the byte-level transforms and checks),
//! [`frame`] (frame headers and outgoing frames), [`deflate`] (permessage-deflate),
//! [`handshake`] (the HTTP upgrade, both sides), [`engine`] (one connection's frames and
//! messages: [`Connection`]) and [`session`] (its lifecycle: closing rules, keepalive,
//! deadlines, with time as an input: [`Session`]).
//!
//! # A connection, sans I/O
//!
//! The handshake and the connection are fed bytes and hand back bytes to write; moving them
//! is the caller's business. Here both ends live in memory:
//!
//! ```
//! use wschannel::handshake::{AcceptOptions, ClientOptions, Limits};
//! use wschannel::{ClientHandshake, Config, Connection, Event, Role, ServerHandshake};
//!
//! // The opening handshake (RFC 6455 §4).
//! let mut client_hs = ClientHandshake::new("example.com", "/", &ClientOptions::default())?;
//! let mut server_hs = ServerHandshake::new(Limits::default());
//! let request = server_hs.receive_data(client_hs.request())?.expect("a whole head");
//! request.check(None).expect("a valid upgrade");
//! let accepted = request.accept(&AcceptOptions::default())?;
//! assert!(client_hs.receive_data(&accepted.response)?);
//!
//! // Frames and messages (RFC 6455 §5).
//! let config = |deflate| Config { deflate, ..Config::default() };
//! let mut client = Connection::new(Role::Client, config(client_hs.deflate()));
//! let mut server = Connection::new(Role::Server, config(accepted.deflate));
//!
//! let mut wire = client.send_text("Hello")?;
//! wire.extend(client.send_ping(b"are you there?")?);
//! let mut events = Vec::new(); // any `Receiver`; a Vec<Event> collects owned events
//! server.receive_data(&wire, &mut events);
//! assert_eq!(events[0], Event::Text("Hello".into()));
//! assert_eq!(events[1], Event::Ping(b"are you there?".to_vec()));
//!
//! // The engine answered the ping itself: write what it owes after every read.
//! let mut events = Vec::new();
//! client.receive_data(&server.data_to_send(), &mut events);
//! assert_eq!(events, [Event::Pong(b"are you there?".to_vec())]);
//!
//! // The closing handshake (RFC 6455 §7): the server echoes the client's close.
//! let mut events = Vec::new();
//! server.receive_data(&client.send_close(Some(1000), "bye")?, &mut events);
//! assert_eq!(events, [Event::Close { code: 1000, reason: "bye".into() }]);
//! client.receive_data(&server.data_to_send(), &mut Vec::new());
//! assert!(server.close_expected()); // the server closes TCP
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A driver that also wants keepalive, close deadlines and the rules of who closes the
//! transport puts a [`Session`] beside the connection: see the [`session`] module.

#![deny(missing_docs)]

pub mod deflate;
mod driver;
pub mod engine;
pub mod frame;
pub mod handshake;
pub mod mask;
mod random;
pub mod session;
pub mod sync;
#[cfg(feature = "tokio")]
pub mod tokio;
pub mod utf8;

pub use deflate::{DeflateConfig, DeflateParams};
pub use driver::{Error, Message};
pub use engine::{
    Chunk, Config, Connection, Counters, Delivery, Event, ReadInto, Receiver, Role, SendError,
    State,
};
pub use handshake::{
    sign_key, ClientHandshake, ClientOptions, HandshakeError, Limits, ServerHandshake,
};
pub use session::{Action, Session, SessionConfig};
