//! A blocking WebSocket over any [`Read`] + [`Write`] stream (a [`std::net::TcpStream`], a
//! TLS stream, a Unix socket...): the opening handshake in either role, then messages in
//! and out, pings answered, the closing handshake.
//!
//! ```no_run
//! use std::net::TcpStream;
//! use wschannel::sync::WebSocket;
//! use wschannel::Message;
//!
//! let stream = TcpStream::connect("127.0.0.1:9001")?;
//! let mut ws = WebSocket::connect(stream, "127.0.0.1:9001", "/")?;
//! ws.send_text("Hello")?;
//! while let Some(message) = ws.read()? {
//!     if let Message::Text(text) = message {
//!         println!("{text}");
//!         ws.close(Some(1000), "")?;
//!     }
//! }
//! # Ok::<(), wschannel::Error>(())
//! ```
//!
//! The engine's limits are on (1 MiB messages, 16 KiB handshake heads; see [`Config`]).
//! Time is not: set read and write timeouts on the stream (e.g.
//! [`TcpStream::set_read_timeout`](std::net::TcpStream::set_read_timeout)) to bound a
//! silent peer. Pings are answered while [`WebSocket::read`] runs.

use std::io::{Read, Write};

use crate::driver::{self, Core, Next};
use crate::engine::{Config, Connection, Counters};
use crate::handshake::{AcceptOptions, ClientOptions, Limits, ServerHandshake};
use crate::{Error, Message};

/// A WebSocket connection over a blocking stream `S`. See the [module docs](self).
pub struct WebSocket<S> {
    stream: S,
    core: Core,
}

impl<S: Read + Write> WebSocket<S> {
    /// Runs the client's opening handshake on `stream` (RFC 6455 §4.1): `host` is the
    /// `Host` header (with the port when it is not the default), `resource` the path and
    /// query. Offers no subprotocol or extension; see [`WebSocket::connect_with`].
    pub fn connect(stream: S, host: &str, resource: &str) -> Result<Self, Error> {
        Self::connect_with(
            stream,
            host,
            resource,
            &ClientOptions::default(),
            Config::default(),
        )
    }

    /// [`WebSocket::connect`] with subprotocols, extra headers, permessage-deflate and
    /// handshake limits (`options`) and the connection's limits (`config`; its `deflate` is
    /// what the server agreed to).
    pub fn connect_with(
        mut stream: S,
        host: &str,
        resource: &str,
        options: &ClientOptions,
        config: Config,
    ) -> Result<Self, Error> {
        let mut hs = driver::client_handshake(host, resource, options)?;
        stream.write_all(hs.request())?;
        stream.flush()?;
        let mut buf = vec![0; 4096];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(driver::eof_in_handshake());
            }
            if hs.receive_data(&buf[..n])? {
                break;
            }
        }
        let core = Core::client(hs, config);
        Ok(WebSocket { stream, core })
    }

    /// Runs the server's opening handshake on `stream` (RFC 6455 §4.2): reads the request,
    /// answers a valid upgrade with 101, anything else with an HTTP error (then fails with
    /// [`Error::Refused`]). Selects no subprotocol and declines extensions; see
    /// [`WebSocket::accept_with`].
    pub fn accept(stream: S) -> Result<Self, Error> {
        Self::accept_with(stream, &AcceptOptions::default(), Config::default())
    }

    /// [`WebSocket::accept`] with the subprotocols, permessage-deflate and extra headers
    /// this server agrees to (`options`) and the connection's limits (`config`). The request
    /// head is bounded by [`Limits::default`]; for other limits or checks (allowed origins,
    /// the path), run a [`ServerHandshake`] yourself and call [`WebSocket::from_parts`].
    pub fn accept_with(
        mut stream: S,
        options: &AcceptOptions,
        config: Config,
    ) -> Result<Self, Error> {
        let mut hs = ServerHandshake::new(Limits::default());
        let mut buf = vec![0; 4096];
        let request = loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Err(driver::eof_in_handshake());
            }
            match hs.receive_data(&buf[..n]) {
                Ok(Some(request)) => break request,
                Ok(None) => {}
                Err(e) => {
                    stream.write_all(&driver::refusal(&e))?;
                    stream.flush()?;
                    return Err(e.into());
                }
            }
        };
        let (response, core) = driver::answer(request, options, config);
        stream.write_all(&response)?;
        stream.flush()?;
        Ok(WebSocket {
            stream,
            core: core?,
        })
    }

    /// A WebSocket over a stream whose opening handshake was done elsewhere: `conn` is the
    /// engine's connection, `leftover` the bytes read after the handshake's head.
    pub fn from_parts(stream: S, conn: Connection, leftover: &[u8]) -> Self {
        WebSocket {
            stream,
            core: Core::new(conn, leftover, None),
        }
    }

    /// The next message. Answers pings and the peer's close frame on the way. `Ok(None)`
    /// once the closing handshake is over (either side started it; see
    /// [`WebSocket::close_code`]): drop the WebSocket then to close the stream. A peer that
    /// breaks the protocol gives [`Error::Failed`] (this side's close frame is sent), one
    /// that closes the stream without a close frame an `UnexpectedEof` I/O error.
    pub fn read(&mut self) -> Result<Option<Message>, Error> {
        loop {
            let next = self.core.next();
            self.write_out()?;
            match next? {
                Next::Message(message) => return Ok(Some(message)),
                Next::Closed => return Ok(None),
                Next::Read => {
                    let n = self.stream.read(&mut self.core.read_buf)?;
                    if n == 0 {
                        self.core.eof()?;
                        return Ok(None);
                    }
                    self.core.received(n);
                }
            }
        }
    }

    /// Sends a text message as one frame (compressed if agreed).
    pub fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.core.queue_text(text)?;
        self.write_out()
    }

    /// Sends a binary message as one frame (compressed if agreed).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), Error> {
        self.core.queue_binary(data)?;
        self.write_out()
    }

    /// Sends a ping carrying `data` (at most 125 bytes); its pong is not reported.
    pub fn ping(&mut self, data: &[u8]) -> Result<(), Error> {
        self.core.queue_ping(data)?;
        self.write_out()
    }

    /// Starts the closing handshake (RFC 6455 §7.1.2) with `code` (none: an empty close
    /// frame) and `reason`; nothing if this side's close frame went out already. Keep
    /// calling [`WebSocket::read`] until it returns `Ok(None)`: the peer may still send
    /// messages before its close frame.
    pub fn close(&mut self, code: Option<u16>, reason: &str) -> Result<(), Error> {
        self.core.queue_close(code, reason)?;
        self.write_out()
    }

    fn write_out(&mut self) -> Result<(), Error> {
        if !self.core.out.is_empty() {
            self.stream.write_all(&self.core.out)?;
            self.core.out.clear();
            self.stream.flush()?;
        }
        Ok(())
    }

    /// The subprotocol agreed in the opening handshake, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.core.protocol()
    }

    /// The peer's close code (1005 if its close frame had none), the code this side failed
    /// with, or 1006 after the stream ended without a close frame; `None` before.
    pub fn close_code(&self) -> Option<u16> {
        self.core.conn.close_code()
    }

    /// The reason that goes with [`WebSocket::close_code`].
    pub fn close_reason(&self) -> Option<&str> {
        self.core.conn.close_reason()
    }

    /// Messages and bytes each way so far.
    pub fn counters(&self) -> Counters {
        self.core.conn.counters()
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, e.g. to set its timeouts. Reading or writing it directly corrupts the
    /// connection.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream, giving up the connection.
    pub fn into_inner(self) -> S {
        self.stream
    }
}
