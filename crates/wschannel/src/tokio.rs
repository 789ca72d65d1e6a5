//! An async WebSocket for tokio over any [`AsyncRead`] + [`AsyncWrite`] stream (a
//! [`tokio::net::TcpStream`](::tokio::net::TcpStream), a TLS stream...), behind the `tokio`
//! feature: the same calls as the blocking [`sync::WebSocket`](crate::sync::WebSocket),
//! awaited.
//!
//! ```no_run
//! # async fn run() -> Result<(), wschannel::Error> {
//! use tokio::net::TcpStream;
//! use wschannel::tokio::WebSocket;
//! use wschannel::Message;
//!
//! let stream = TcpStream::connect("127.0.0.1:9001").await?;
//! let mut ws = WebSocket::connect(stream, "127.0.0.1:9001", "/").await?;
//! ws.send_text("Hello").await?;
//! while let Some(message) = ws.read().await? {
//!     if let Message::Text(text) = message {
//!         println!("{text}");
//!         ws.close(Some(1000), "").await?;
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Pings are answered while [`WebSocket::read`] runs; wrap calls in
//! [`tokio::time::timeout`](https://docs.rs/tokio/latest/tokio/time/fn.timeout.html) to
//! bound a silent peer. A call cancelled mid-way (its future dropped) may leave a frame half
//! written: drop the WebSocket then.

use ::tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::driver::{self, Core, Next};
use crate::engine::{Config, Connection, Counters};
use crate::handshake::{AcceptOptions, ClientOptions, Limits, ServerHandshake};
use crate::{Error, Message};

/// A WebSocket connection over an async stream `S`. See the [module docs](self).
pub struct WebSocket<S> {
    stream: S,
    core: Core,
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Runs the client's opening handshake on `stream`, as
    /// [`sync::WebSocket::connect`](crate::sync::WebSocket::connect) does.
    pub async fn connect(stream: S, host: &str, resource: &str) -> Result<Self, Error> {
        let options = ClientOptions::default();
        Self::connect_with(stream, host, resource, &options, Config::default()).await
    }

    /// [`WebSocket::connect`] with `options` and `config`, as
    /// [`sync::WebSocket::connect_with`](crate::sync::WebSocket::connect_with).
    pub async fn connect_with(
        mut stream: S,
        host: &str,
        resource: &str,
        options: &ClientOptions,
        config: Config,
    ) -> Result<Self, Error> {
        let mut hs = driver::client_handshake(host, resource, options)?;
        stream.write_all(hs.request()).await?;
        stream.flush().await?;
        let mut buf = vec![0; 4096];
        loop {
            let n = stream.read(&mut buf).await?;
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

    /// Runs the server's opening handshake on `stream`, as
    /// [`sync::WebSocket::accept`](crate::sync::WebSocket::accept) does.
    pub async fn accept(stream: S) -> Result<Self, Error> {
        Self::accept_with(stream, &AcceptOptions::default(), Config::default()).await
    }

    /// [`WebSocket::accept`] with `options` and `config`, as
    /// [`sync::WebSocket::accept_with`](crate::sync::WebSocket::accept_with).
    pub async fn accept_with(
        mut stream: S,
        options: &AcceptOptions,
        config: Config,
    ) -> Result<Self, Error> {
        let mut hs = ServerHandshake::new(Limits::default());
        let mut buf = vec![0; 4096];
        let request = loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(driver::eof_in_handshake());
            }
            match hs.receive_data(&buf[..n]) {
                Ok(Some(request)) => break request,
                Ok(None) => {}
                Err(e) => {
                    stream.write_all(&driver::refusal(&e)).await?;
                    stream.flush().await?;
                    return Err(e.into());
                }
            }
        };
        let (response, core) = driver::answer(request, options, config);
        stream.write_all(&response).await?;
        stream.flush().await?;
        Ok(WebSocket {
            stream,
            core: core?,
        })
    }

    /// A WebSocket over a stream whose opening handshake was done elsewhere, as
    /// [`sync::WebSocket::from_parts`](crate::sync::WebSocket::from_parts).
    pub fn from_parts(stream: S, conn: Connection, leftover: &[u8]) -> Self {
        WebSocket {
            stream,
            core: Core::new(conn, leftover, None),
        }
    }

    /// The next message, as [`sync::WebSocket::read`](crate::sync::WebSocket::read):
    /// `Ok(None)` once the closing handshake is over.
    pub async fn read(&mut self) -> Result<Option<Message>, Error> {
        loop {
            let next = self.core.next();
            self.write_out().await?;
            match next? {
                Next::Message(message) => return Ok(Some(message)),
                Next::Closed => return Ok(None),
                Next::Read => {
                    let n = self.stream.read(&mut self.core.read_buf).await?;
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
    pub async fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.core.queue_text(text)?;
        self.write_out().await
    }

    /// Sends a binary message as one frame (compressed if agreed).
    pub async fn send_binary(&mut self, data: &[u8]) -> Result<(), Error> {
        self.core.queue_binary(data)?;
        self.write_out().await
    }

    /// Sends a ping carrying `data` (at most 125 bytes); its pong is not reported.
    pub async fn ping(&mut self, data: &[u8]) -> Result<(), Error> {
        self.core.queue_ping(data)?;
        self.write_out().await
    }

    /// Starts the closing handshake, as
    /// [`sync::WebSocket::close`](crate::sync::WebSocket::close): keep reading until
    /// [`WebSocket::read`] returns `Ok(None)`.
    pub async fn close(&mut self, code: Option<u16>, reason: &str) -> Result<(), Error> {
        self.core.queue_close(code, reason)?;
        self.write_out().await
    }

    async fn write_out(&mut self) -> Result<(), Error> {
        if !self.core.out.is_empty() {
            self.stream.write_all(&self.core.out).await?;
            self.core.out.clear();
            self.stream.flush().await?;
        }
        Ok(())
    }

    /// The subprotocol agreed in the opening handshake, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.core.protocol()
    }

    /// The close code, as [`sync::WebSocket::close_code`](crate::sync::WebSocket::close_code).
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

    /// The stream. Reading or writing it directly corrupts the connection.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The stream, giving up the connection.
    pub fn into_inner(self) -> S {
        self.stream
    }
}
