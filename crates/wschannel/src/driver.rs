//! What the blocking and the tokio [`WebSocket`](crate::sync::WebSocket)s share: the
//! message type, the error type, the handshake steps and the loop that turns the engine's
//! events into messages and replies, with no I/O of its own (each wrapper moves the bytes).

use std::collections::VecDeque;
use std::io;

use crate::engine::{Config, Connection, Event, Receiver, Role, SendError};
use crate::handshake::{
    reject_response, AcceptOptions, Accepted, ClientHandshake, ClientOptions, HandshakeError,
    Request,
};

/// Bytes asked of the stream per read: room for a whole 64 KiB message and its header, which
/// the engine then delivers from this buffer without copying it into a message buffer first
/// (measured on a 64 KiB echo: 64 KiB reads made the crate 0.8x tungstenite's rate, which
/// reads 128 KiB at a time).
pub(crate) const READ_SIZE: usize = 128 * 1024;

/// A complete message from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A text message (valid UTF-8, checked as it arrived).
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

/// Why a [`WebSocket`](crate::sync::WebSocket) call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The stream failed; `UnexpectedEof` when the peer closed it without a close frame
    /// (RFC 6455 §7.1.5: close code 1006).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The opening handshake failed (client: the server's answer; server: the request
    /// could not be read).
    #[error("opening handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// Server: the request was not a WebSocket upgrade this server accepts; it was answered
    /// with this HTTP status and message.
    #[error("refused the upgrade request with HTTP {status}: {message}")]
    Refused {
        /// The HTTP status sent.
        status: u16,
        /// The response body sent.
        message: String,
    },
    /// Misuse: sending after this side's close frame, an invalid close code or reason, a
    /// control payload over 125 bytes. The connection is unaffected.
    #[error(transparent)]
    Send(#[from] SendError),
    /// The peer broke the protocol (or a limit): this side failed the connection with
    /// `code` (RFC 6455 §7.1.7) and sent its close frame.
    #[error("the connection failed with close code {code}: {reason}")]
    Failed {
        /// 1002 (protocol error), 1007 (invalid data) or 1009 (too big).
        code: u16,
        /// What the peer did.
        reason: String,
    },
}

/// The engine's events, in order, until the wrapper hands them out.
#[derive(Default)]
struct Events(VecDeque<Event>);

impl Receiver for Events {
    fn text(&mut self, text: &str) {
        self.0.push_back(Event::Text(text.to_owned()));
    }
    fn binary(&mut self, data: &[u8]) {
        self.0.push_back(Event::Binary(data.to_vec()));
    }
    fn control(&mut self, event: Event) {
        self.0.push_back(event);
    }
}

/// What the wrapper does next.
pub(crate) enum Next {
    /// Hand this message to the user.
    Message(Message),
    /// Read more bytes (after writing [`Core::out`]).
    Read,
    /// The closing handshake is over: the transport may be closed.
    Closed,
}

/// One open connection's state between I/O calls.
pub(crate) struct Core {
    pub(crate) conn: Connection,
    events: Events,
    /// Bytes to write before anything else is done (replies, frames to send).
    pub(crate) out: Vec<u8>,
    pub(crate) read_buf: Box<[u8]>,
    protocol: Option<String>,
}

impl Core {
    pub(crate) fn new(conn: Connection, leftover: &[u8], protocol: Option<String>) -> Self {
        let mut core = Core {
            conn,
            events: Events::default(),
            out: Vec::new(),
            read_buf: vec![0; READ_SIZE].into_boxed_slice(),
            protocol,
        };
        core.conn.receive_data(leftover, &mut core.events);
        core
    }

    /// A client's connection after its handshake succeeded.
    pub(crate) fn client(mut hs: ClientHandshake, config: Config) -> Self {
        let config = Config {
            deflate: hs.deflate(),
            ..config
        };
        let conn = Connection::new(Role::Client, config);
        let protocol = hs.protocol().map(str::to_owned);
        Self::new(conn, &hs.take_leftover(), protocol)
    }

    /// A server's connection after it accepted `request`.
    pub(crate) fn server(mut request: Request, accepted: Accepted, config: Config) -> Self {
        let config = Config {
            deflate: accepted.deflate,
            ..config
        };
        let conn = Connection::new(Role::Server, config);
        Self::new(conn, &request.take_leftover(), accepted.protocol)
    }

    pub(crate) fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The next thing to do, taking the replies owed as the events come out (so that the
    /// user may answer a message before the close echo that follows it goes out).
    pub(crate) fn next(&mut self) -> Result<Next, Error> {
        while let Some(event) = self.events.0.pop_front() {
            match event {
                Event::Text(text) => return Ok(Next::Message(Message::Text(text))),
                Event::Binary(data) => return Ok(Next::Message(Message::Binary(data))),
                // Never made here: this driver delivers whole messages.
                Event::Pong(_) | Event::TextPiece { .. } | Event::BinaryPiece { .. } => {}
                Event::Ping(_) | Event::Close { .. } => self.take_reply(),
                Event::Failure { code, reason } => {
                    self.take_reply();
                    return Err(Error::Failed { code, reason });
                }
            }
        }
        if self.closed() {
            Ok(Next::Closed)
        } else {
            Ok(Next::Read)
        }
    }

    fn take_reply(&mut self) {
        if let Some(reply) = self.conn.next_reply() {
            self.out.extend_from_slice(&reply);
        }
    }

    /// Whether the connection is over: both close frames crossed, or it failed.
    pub(crate) fn closed(&self) -> bool {
        self.conn.close_sent() && self.conn.close_received()
            || self.conn.state() == crate::engine::State::Closed
    }

    /// `n` bytes were read into `read_buf`.
    pub(crate) fn received(&mut self, n: usize) {
        self.conn
            .receive_data(&self.read_buf[..n], &mut self.events);
    }

    /// The peer closed the stream: fine once the closing handshake is over.
    pub(crate) fn eof(&mut self) -> Result<(), Error> {
        let clean = self.closed();
        self.conn.receive_eof();
        if clean {
            return Ok(());
        }
        Err(Error::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the connection without a close frame (1006)",
        )))
    }

    pub(crate) fn queue_text(&mut self, text: &str) -> Result<(), Error> {
        self.conn.encode_text(text)?.append_to(&mut self.out);
        Ok(())
    }

    pub(crate) fn queue_binary(&mut self, data: &[u8]) -> Result<(), Error> {
        self.conn.encode_binary(data)?.append_to(&mut self.out);
        Ok(())
    }

    pub(crate) fn queue_ping(&mut self, data: &[u8]) -> Result<(), Error> {
        self.conn.encode_ping(data)?.append_to(&mut self.out);
        Ok(())
    }

    /// Queues this side's close frame; nothing if one was sent already.
    pub(crate) fn queue_close(&mut self, code: Option<u16>, reason: &str) -> Result<(), Error> {
        if self.conn.close_sent() || self.closed() {
            return Ok(());
        }
        let frame = self.conn.send_close(code, reason)?;
        self.out.extend_from_slice(&frame);
        Ok(())
    }
}

/// A server's answer to a parsed request: the bytes to write, and the accepted connection
/// (or the refusal to report once they are written).
pub(crate) fn answer(
    request: Request,
    options: &AcceptOptions,
    config: Config,
) -> (Vec<u8>, Result<Core, Error>) {
    let refused = |status: u16, message: String, headers: &[(String, String)]| {
        let response = reject_response(status, headers, message.as_bytes()).unwrap_or_default();
        (response, Err(Error::Refused { status, message }))
    };
    if let Err(no) = request.check(None) {
        return refused(no.status, no.message, &no.headers);
    }
    match request.accept(options) {
        Ok(accepted) => {
            let response = accepted.response.clone();
            (response, Ok(Core::server(request, accepted, config)))
        }
        Err(e) if e.status() != 0 => refused(e.status(), e.to_string(), &[]),
        Err(e) => (Vec::new(), Err(Error::Handshake(e))),
    }
}

/// The HTTP error response to a request head that could not be read (400, 431).
pub(crate) fn refusal(e: &HandshakeError) -> Vec<u8> {
    let message = e.to_string();
    reject_response(e.status(), &[], message.as_bytes()).unwrap_or_default()
}

/// A client's handshake, checked before any I/O.
pub(crate) fn client_handshake(
    host: &str,
    resource: &str,
    options: &ClientOptions,
) -> Result<ClientHandshake, Error> {
    Ok(ClientHandshake::new(host, resource, options)?)
}

/// The end of the stream during the opening handshake.
pub(crate) fn eof_in_handshake() -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the peer closed the connection during the opening handshake",
    ))
}
