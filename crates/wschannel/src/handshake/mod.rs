//! The opening handshake of RFC 6455 (§1.3, §4), sans I/O.
//!
//! Both sides are driven by feeding bytes in and taking bytes out; nothing here touches a
//! socket, a clock or a thread. The client's nonce comes from the operating system, or from
//! a seed for tests that need the same bytes every time.
//!
//! * Client: [`ClientHandshake::new`] builds the upgrade request ([`ClientHandshake::request`]),
//!   then [`ClientHandshake::receive_data`] parses and validates the server's answer.
//! * Server: [`ServerHandshake::receive_data`] parses the request into a [`Request`],
//!   [`Request::check`] decides whether to accept it, and [`Request::accept`] (or
//!   [`accept_response`]) or [`reject_response`] produce the answer.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

mod client;
mod http;
mod server;

pub use client::{ClientHandshake, ClientOptions};
pub(crate) use http::is_tchar;
pub use server::{
    accept_response, reason_phrase, reject_response, AcceptOptions, Accepted, Rejection, Request,
    ServerHandshake,
};

/// The magic GUID appended to the client's key before hashing (RFC 6455 §1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a key: base64(sha1(key ++ GUID)) (RFC 6455 §4.2.2).
pub fn sign_key(key: &[u8]) -> String {
    let mut hasher = Sha1::new();
    hasher.update(key);
    hasher.update(GUID.as_bytes());
    BASE64.encode(hasher.finalize())
}

/// Bounds on the HTTP head that either side is willing to parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of the head, request/status line and final empty line included.
    pub max_header_size: usize,
    /// Most header lines accepted.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_size: 16384,
            max_headers: 128,
        }
    }
}

/// Everything that can go wrong in the opening handshake.
///
/// [`HandshakeError::status`] tells which HTTP status goes with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The request target given to the client contains a space or a control character.
    #[error("invalid resource {0:?}: it must not contain spaces or control characters")]
    InvalidResource(String),
    /// An offered or selected subprotocol is not a non-empty HTTP token.
    #[error("invalid subprotocol {0:?}: a subprotocol must be a non-empty HTTP token")]
    InvalidProtocol(String),
    /// A header name is not a non-empty HTTP token.
    #[error("invalid header name {0:?}: a header name must be a non-empty HTTP token")]
    InvalidHeaderName(String),
    /// A header value contains CR, LF or NUL.
    #[error("invalid value for header '{0}': it must not contain CR, LF or NUL")]
    InvalidHeaderValue(String),
    /// An extra header would duplicate or contradict one the handshake writes itself.
    #[error(
        "header '{0}' is written by the handshake itself and cannot be given as an extra header"
    )]
    ReservedHeader(String),
    /// An extra header that may appear only once was given more than once.
    #[error("header '{0}' was given more than once")]
    DuplicateHeader(String),
    /// A status code that cannot be written as a three-digit HTTP status.
    #[error("invalid HTTP status {0}: it must be between 100 and 999")]
    InvalidStatus(u16),

    /// The client received a response head larger than [`Limits::max_header_size`].
    #[error("HTTP response head exceeds {limit} bytes")]
    ResponseTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The client received a response with more than [`Limits::max_headers`] headers.
    #[error("HTTP response has more than {limit} headers")]
    TooManyResponseHeaders {
        /// The limit in force.
        limit: usize,
    },
    /// The client received bytes that are not an HTTP/1.x response head.
    #[error("malformed HTTP response: {0}")]
    MalformedResponse(String),
    /// The server did not switch protocols.
    #[error("server answered with status {status}, not 101 Switching Protocols")]
    UnexpectedStatus {
        /// The status code of the response.
        status: u16,
        /// Its reason phrase (lossy UTF-8).
        reason: String,
        /// Its headers, in order (values lossy UTF-8).
        headers: Vec<(String, String)>,
    },
    /// The 101 response has no `Upgrade` header.
    #[error("missing Upgrade: websocket header")]
    MissingUpgrade,
    /// The 101 response's `Upgrade` header is not the single token `websocket` (another
    /// protocol listed beside it would mean switching to both).
    #[error("Upgrade header is '{0}', expected 'websocket'")]
    InvalidUpgrade(String),
    /// The 101 response has no `Connection` header.
    #[error("missing Connection: Upgrade header")]
    MissingConnection,
    /// The 101 response's `Connection` header has no `upgrade` token.
    #[error("Connection header is '{0}', which has no 'Upgrade' token")]
    InvalidConnection(String),
    /// The 101 response has no `Sec-WebSocket-Accept` header.
    #[error("missing Sec-WebSocket-Accept header")]
    MissingAccept,
    /// The 101 response's `Sec-WebSocket-Accept` does not match the key that was sent.
    #[error("Sec-WebSocket-Accept is '{got}', expected '{expected}'")]
    InvalidAccept {
        /// What the server sent.
        got: String,
        /// `sign_key` of the key that was sent.
        expected: String,
    },
    /// The server selected more than one subprotocol.
    #[error("server selected more than one subprotocol: '{0}'")]
    MultipleProtocols(String),
    /// The server selected a subprotocol that was not offered.
    #[error("server selected subprotocol '{0}', which the client did not offer")]
    UnofferedProtocol(String),
    /// The server answered with extensions although the client offered none.
    #[error("server answered extensions '{0}', which the client did not offer")]
    UnofferedExtension(String),
    /// The server's `Sec-WebSocket-Extensions` answer does not agree with the
    /// permessage-deflate offer (RFC 7692 §7.1): malformed, another extension, a parameter
    /// the offer did not allow.
    #[error("{0}")]
    InvalidExtension(String),
    /// The [`DeflateConfig`](crate::deflate::DeflateConfig) given to the client is out of
    /// range.
    #[error("{0}")]
    InvalidExtensionConfig(String),
    /// The 101 response repeats a header that must appear once (`Upgrade`,
    /// `Sec-WebSocket-Accept`), or announces a body (`Transfer-Encoding`, a `Content-Length`
    /// other than a single 0) although the bytes after its head are WebSocket frames.
    #[error("invalid 101 response: {0}")]
    InvalidResponse(&'static str),

    /// The server received a request head larger than [`Limits::max_header_size`].
    #[error("HTTP request head exceeds {limit} bytes")]
    RequestTooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The server received a request with more than [`Limits::max_headers`] headers.
    #[error("HTTP request has more than {limit} headers")]
    TooManyRequestHeaders {
        /// The limit in force.
        limit: usize,
    },
    /// The server received bytes that are not an HTTP/1.x request head.
    #[error("malformed HTTP request: {0}")]
    MalformedRequest(String),
    /// The server received a request head that parses but that another HTTP reader could
    /// frame or route differently: a repeated `Host`, a `Transfer-Encoding`, or a
    /// `Content-Length` other than a single 0 (an upgrade request has no body, and the bytes
    /// after its head are WebSocket frames).
    #[error("invalid HTTP request: {0}")]
    InvalidRequest(&'static str),

    /// Data was fed to a handshake that has already completed or failed.
    #[error("the handshake is already over and accepts no more data")]
    Finished,
}

impl HandshakeError {
    /// The HTTP status that goes with this error.
    ///
    /// Server side: the status to answer with (400 for a malformed or invalid request, 431 for
    /// a head that is too large or has too many headers). Client side: the status code of the
    /// response when one was parsed (the checks after the status line only run on a 101),
    /// else 0. Errors in arguments given by the caller, and [`HandshakeError::Finished`],
    /// give 0.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::UnexpectedStatus { status, .. } => *status,
            HandshakeError::MissingUpgrade
            | HandshakeError::InvalidUpgrade(_)
            | HandshakeError::MissingConnection
            | HandshakeError::InvalidConnection(_)
            | HandshakeError::MissingAccept
            | HandshakeError::InvalidAccept { .. }
            | HandshakeError::MultipleProtocols(_)
            | HandshakeError::UnofferedProtocol(_)
            | HandshakeError::UnofferedExtension(_)
            | HandshakeError::InvalidExtension(_)
            | HandshakeError::InvalidResponse(_) => 101,
            HandshakeError::MalformedRequest(_) | HandshakeError::InvalidRequest(_) => 400,
            HandshakeError::RequestTooLarge { .. }
            | HandshakeError::TooManyRequestHeaders { .. } => 431,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests;
