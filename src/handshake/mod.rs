//! The opening handshake of RFC 6455 (§1.3, §4), sans I/O.
//!
//! Both sides are driven by feeding bytes in and taking bytes out; nothing here touches a
//! socket, a clock or a thread. Randomness (the client's nonce) is injected so tests are
//! deterministic.
//!
//! * Client: [`ClientHandshake::new`] builds the upgrade request ([`ClientHandshake::request`]),
//!   then [`ClientHandshake::receive_data`] parses and validates the server's answer.
//! * Server: [`ServerHandshake::receive_data`] parses the request into a [`Request`],
//!   [`Request::check`] decides whether to accept it, and [`accept_response`] or
//!   [`reject_response`] produce the answer.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha1::{Digest, Sha1};

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
            | HandshakeError::InvalidResponse(_) => 101,
            HandshakeError::MalformedRequest(_) | HandshakeError::InvalidRequest(_) => 400,
            HandshakeError::RequestTooLarge { .. }
            | HandshakeError::TooManyRequestHeaders { .. } => 431,
            _ => 0,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers shared by both sides.

/// RFC 9110 §5.6.2 `tchar`: a byte of a token (also the extension parser's, in `deflate`).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A non-empty HTTP token.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

fn check_header_name(name: &str) -> Result<(), HandshakeError> {
    if is_token(name) {
        Ok(())
    } else {
        Err(HandshakeError::InvalidHeaderName(name.to_owned()))
    }
}

fn check_header_value(name: &str, value: &str) -> Result<(), HandshakeError> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        Err(HandshakeError::InvalidHeaderValue(name.to_owned()))
    } else {
        Ok(())
    }
}

fn check_header(name: &str, value: &str) -> Result<(), HandshakeError> {
    check_header_name(name)?;
    check_header_value(name, value)
}

fn check_protocol(protocol: &str) -> Result<(), HandshakeError> {
    if is_token(protocol) {
        Ok(())
    } else {
        Err(HandshakeError::InvalidProtocol(protocol.to_owned()))
    }
}

fn write_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Values of every line of header `name` (case-insensitive), in order.
fn values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// All comma-separated, trimmed, non-empty items of header `name`, across repeated lines.
fn list_items<'a>(headers: &'a [(String, String)], name: &'a str) -> Vec<&'a str> {
    values(headers, name)
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

/// Whether header `name` has an item equal (case-insensitive) to `token`.
fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    list_items(headers, name)
        .iter()
        .any(|item| item.eq_ignore_ascii_case(token))
}

/// Trimmed, non-empty values of header `name` joined with ", ", or None if there are none.
fn joined(headers: &[(String, String)], name: &str) -> Option<String> {
    let parts: Vec<&str> = values(headers, name)
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    if parts.is_empty() {
        None
    } else {
        Some(parts.join(", "))
    }
}

fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect()
}

/// Raw values of every line of header `name` (case-insensitive) of a parsed head, as sent
/// (httparse has stripped the whitespace around them, nothing else).
fn raw_values<'h, 'b>(
    headers: &'h [httparse::Header<'b>],
    name: &'h str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Whether a head has a line feed that does not follow a carriage return.
fn has_bare_lf(head: &[u8]) -> bool {
    head.first() == Some(&b'\n') || head.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r')
}

/// Why a head that can have no body (an upgrade request, a 101 response) is refused: the
/// bytes after it are WebSocket frames, so any header that frames a body (RFC 9112 §6) would
/// make a reader that honours it see the frames as a body, or the body as frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyProblem {
    /// `Content-Length` and `Transfer-Encoding` together (RFC 9112 §6.3: the classic
    /// request-smuggling pair, each reader picking a different one).
    LengthAndTransferEncoding,
    /// Any `Transfer-Encoding`, chunked or not.
    TransferEncoding,
    /// More than one `Content-Length` line, even with equal values.
    RepeatedLength,
    /// A `Content-Length` that is not 1*DIGIT (RFC 9110 §8.6): a sign, a list, hex, empty.
    InvalidLength,
    /// A `Content-Length` other than 0 (any number of zero digits is 0).
    NonZeroLength,
}

impl BodyProblem {
    /// The first problem with the body headers of `headers`, if any. A single
    /// `Content-Length: 0` is no problem: some clients send it, and it frames no body.
    fn find(headers: &[httparse::Header<'_>]) -> Option<BodyProblem> {
        let transfer_encoding = raw_values(headers, "Transfer-Encoding").next().is_some();
        let lengths: Vec<&[u8]> = raw_values(headers, "Content-Length").collect();
        match (transfer_encoding, lengths.as_slice()) {
            (true, [_, ..]) => Some(BodyProblem::LengthAndTransferEncoding),
            (true, []) => Some(BodyProblem::TransferEncoding),
            (false, []) => None,
            (false, [length]) if length.is_empty() || !length.iter().all(u8::is_ascii_digit) => {
                Some(BodyProblem::InvalidLength)
            }
            (false, [length]) if length.iter().any(|&b| b != b'0') => {
                Some(BodyProblem::NonZeroLength)
            }
            (false, [_]) => None,
            (false, _) => Some(BodyProblem::RepeatedLength),
        }
    }

    /// The reason given to a client whose upgrade request has this problem.
    fn in_request(self) -> &'static str {
        match self {
            BodyProblem::LengthAndTransferEncoding => {
                "Content-Length and Transfer-Encoding together"
            }
            BodyProblem::TransferEncoding => {
                "Transfer-Encoding header, but an upgrade request has no body"
            }
            BodyProblem::RepeatedLength => "more than one Content-Length header",
            BodyProblem::InvalidLength => "Content-Length is not a decimal number",
            BodyProblem::NonZeroLength => {
                "Content-Length is not 0, but an upgrade request has no body"
            }
        }
    }

    /// The reason a client refuses a 101 response with this problem.
    fn in_response(self) -> &'static str {
        match self {
            BodyProblem::LengthAndTransferEncoding => {
                "Content-Length and Transfer-Encoding together"
            }
            BodyProblem::TransferEncoding => {
                "Transfer-Encoding header, but a 101 response has no body"
            }
            BodyProblem::RepeatedLength => "more than one Content-Length header",
            BodyProblem::InvalidLength => "Content-Length is not a decimal number",
            BodyProblem::NonZeroLength => "Content-Length is not 0, but a 101 response has no body",
        }
    }
}

/// Accumulates bytes of an HTTP head and decides when it is worth parsing.
#[derive(Debug, Clone, Default)]
struct HeadBuffer {
    buf: Vec<u8>,
}

impl HeadBuffer {
    /// Appends `data` and returns the slice worth parsing (at most the first `max` bytes), or
    /// None when the new data cannot have changed the outcome of a parse.
    ///
    /// A head only ends with a line feed, and a malformed line shows once its line has
    /// arrived, so parsing only when new data holds a line feed bounds the work by the
    /// number of lines rather than by the number of calls (one byte at a time stays linear).
    fn push(&mut self, data: &[u8], max: usize) -> Option<&[u8]> {
        self.buf.extend_from_slice(data);
        if data.contains(&b'\n') {
            Some(&self.buf[..self.buf.len().min(max)])
        } else {
            None
        }
    }

    fn len(&self) -> usize {
        self.buf.len()
    }

    fn leftover(&self, head_len: usize) -> Vec<u8> {
        self.buf[head_len..].to_vec()
    }
}

// ---------------------------------------------------------------------------------------------
// Client side.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Waiting,
    Done,
    Failed,
}

/// The client half of the opening handshake: the request to send and the validation of the
/// server's answer.
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    request: Vec<u8>,
    key: String,
    offered: Vec<String>,
    limits: Limits,
    buf: HeadBuffer,
    state: ClientState,
    status: u16,
    headers: Vec<(String, String)>,
    protocol: Option<String>,
    extensions: Option<String>,
    leftover: Vec<u8>,
}

/// Handshake headers a client's extra headers may not carry.
const CLIENT_RESERVED: [&str; 6] = [
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
];

impl ClientHandshake {
    /// Builds the upgrade request.
    ///
    /// `host` is the Host header value (the caller adds a non-default port); `resource` is
    /// path and query ("/" if empty). `protocols` are the offered subprotocols, each a
    /// non-empty HTTP token. `extensions` is a ready-made `Sec-WebSocket-Extensions` offer.
    /// `headers` are extra headers: a `Host` among them replaces `host` (only one Host line
    /// is written); the other handshake headers (`Upgrade`, `Connection`,
    /// `Sec-WebSocket-Key`/`-Version`/`-Protocol`/`-Extensions`) are refused, as they must
    /// come from the handshake or the arguments above. The key is 16 bytes from `rng`, in
    /// base64.
    pub fn new(
        host: &str,
        resource: &str,
        protocols: &[String],
        extensions: Option<&str>,
        headers: &[(String, String)],
        limits: Limits,
        rng: &mut dyn rand::RngCore,
    ) -> Result<ClientHandshake, HandshakeError> {
        let resource = if resource.is_empty() { "/" } else { resource };
        if resource.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(HandshakeError::InvalidResource(resource.to_owned()));
        }
        for protocol in protocols {
            check_protocol(protocol)?;
        }
        if let Some(ext) = extensions {
            check_header_value("Sec-WebSocket-Extensions", ext)?;
        }
        let mut host = host;
        let mut user_host = false;
        for (name, value) in headers {
            check_header(name, value)?;
            if let Some(reserved) = CLIENT_RESERVED
                .iter()
                .find(|r| r.eq_ignore_ascii_case(name))
            {
                return Err(HandshakeError::ReservedHeader((*reserved).to_owned()));
            }
            if name.eq_ignore_ascii_case("Host") {
                if user_host {
                    return Err(HandshakeError::DuplicateHeader("Host".to_owned()));
                }
                user_host = true;
                host = value;
            }
        }
        check_header_value("Host", host)?;

        let mut nonce = [0u8; 16];
        rng.fill_bytes(&mut nonce);
        let key = BASE64.encode(nonce);

        let mut request = Vec::with_capacity(256);
        request.extend_from_slice(b"GET ");
        request.extend_from_slice(resource.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\n");
        write_header(&mut request, "Host", host);
        write_header(&mut request, "Upgrade", "websocket");
        write_header(&mut request, "Connection", "Upgrade");
        write_header(&mut request, "Sec-WebSocket-Key", &key);
        write_header(&mut request, "Sec-WebSocket-Version", "13");
        if !protocols.is_empty() {
            write_header(
                &mut request,
                "Sec-WebSocket-Protocol",
                &protocols.join(", "),
            );
        }
        if let Some(ext) = extensions {
            write_header(&mut request, "Sec-WebSocket-Extensions", ext);
        }
        for (name, value) in headers {
            if !name.eq_ignore_ascii_case("Host") {
                write_header(&mut request, name, value);
            }
        }
        request.extend_from_slice(b"\r\n");

        Ok(ClientHandshake {
            request,
            key,
            offered: protocols.to_vec(),
            limits,
            buf: HeadBuffer::default(),
            state: ClientState::Waiting,
            status: 0,
            headers: Vec::new(),
            protocol: None,
            extensions: None,
            leftover: Vec::new(),
        })
    }

    /// The request bytes to send.
    pub fn request(&self) -> &[u8] {
        &self.request
    }

    /// The `Sec-WebSocket-Key` sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Feeds response bytes, in any chunking. Ok(false): more bytes are needed. Ok(true): the
    /// response is complete and valid. An error is final; so is success: later calls fail
    /// with [`HandshakeError::Finished`]. Bytes after the head are kept as leftover (also
    /// when the status is not 101, so the caller can read a body).
    pub fn receive_data(&mut self, data: &[u8]) -> Result<bool, HandshakeError> {
        if self.state != ClientState::Waiting {
            return Err(HandshakeError::Finished);
        }
        match self.parse(data) {
            Ok(None) => Ok(false),
            Ok(Some(())) => {
                self.state = ClientState::Done;
                Ok(true)
            }
            Err(err) => {
                self.state = ClientState::Failed;
                Err(err)
            }
        }
    }

    fn parse(&mut self, data: &[u8]) -> Result<Option<()>, HandshakeError> {
        let limits = self.limits;
        let Some(head) = self.buf.push(data, limits.max_header_size) else {
            return if self.buf.len() > limits.max_header_size {
                Err(HandshakeError::ResponseTooLarge {
                    limit: limits.max_header_size,
                })
            } else {
                Ok(None)
            };
        };
        let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
        let mut response = httparse::Response::new(&mut slots);
        let head_len = match response.parse(head) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return if self.buf.len() > limits.max_header_size {
                    Err(HandshakeError::ResponseTooLarge {
                        limit: limits.max_header_size,
                    })
                } else {
                    Ok(None)
                };
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HandshakeError::TooManyResponseHeaders {
                    limit: limits.max_headers,
                })
            }
            Err(err) => return Err(HandshakeError::MalformedResponse(err.to_string())),
        };
        let status = response.code.unwrap_or(0);
        let reason = response.reason.unwrap_or("").to_owned();
        let body_problem = BodyProblem::find(response.headers);
        let headers = owned_headers(response.headers);
        self.leftover = self.buf.leftover(head_len);
        self.buf = HeadBuffer::default();
        self.status = status;
        self.headers = headers;

        if status != 101 {
            return Err(HandshakeError::UnexpectedStatus {
                status,
                reason,
                headers: self.headers.clone(),
            });
        }
        if let Some(problem) = body_problem {
            return Err(HandshakeError::InvalidResponse(problem.in_response()));
        }
        self.validate()?;
        Ok(Some(()))
    }

    /// Checks a 101 response's headers (RFC 6455 §4.1, items 2 to 6 of the client's checks),
    /// strictly: `Upgrade` is one line holding the single token `websocket` (any case), and
    /// `Sec-WebSocket-Accept` one line (RFC 6455 §11.3.3). `Connection` may list other
    /// tokens beside `Upgrade`, on any number of lines.
    fn validate(&mut self) -> Result<(), HandshakeError> {
        let headers = &self.headers;

        if values(headers, "Upgrade").nth(1).is_some() {
            return Err(HandshakeError::InvalidResponse(
                "more than one Upgrade header",
            ));
        }
        match joined(headers, "Upgrade") {
            None => return Err(HandshakeError::MissingUpgrade),
            Some(v) => match list_items(headers, "Upgrade").as_slice() {
                [one] if one.eq_ignore_ascii_case("websocket") => {}
                _ => return Err(HandshakeError::InvalidUpgrade(v)),
            },
        }
        match joined(headers, "Connection") {
            None => return Err(HandshakeError::MissingConnection),
            Some(v) if !has_token(headers, "Connection", "upgrade") => {
                return Err(HandshakeError::InvalidConnection(v))
            }
            Some(_) => {}
        }

        let accepts: Vec<&str> = values(headers, "Sec-WebSocket-Accept").collect();
        let expected = sign_key(self.key.as_bytes());
        match accepts.as_slice() {
            [] => return Err(HandshakeError::MissingAccept),
            [one] if *one == expected => {}
            [_, _, ..] => {
                return Err(HandshakeError::InvalidResponse(
                    "more than one Sec-WebSocket-Accept header",
                ))
            }
            _ => {
                return Err(HandshakeError::InvalidAccept {
                    got: accepts.join(", "),
                    expected,
                })
            }
        }

        let selected = list_items(headers, "Sec-WebSocket-Protocol");
        self.protocol = match selected.as_slice() {
            [] => None,
            [one] if self.offered.iter().any(|p| p == one) => Some((*one).to_owned()),
            [one] => return Err(HandshakeError::UnofferedProtocol((*one).to_owned())),
            many => return Err(HandshakeError::MultipleProtocols(many.join(", "))),
        };

        self.extensions = joined(headers, "Sec-WebSocket-Extensions");
        Ok(())
    }

    /// The response's status code; 0 until the status line has been parsed.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The response's headers in order (values trimmed, lossy UTF-8); empty until parsed.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The subprotocol the server selected, if any (set once the handshake succeeded).
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Every `Sec-WebSocket-Extensions` value of the response joined with ", ", unvalidated;
    /// None if there was none (set once the handshake succeeded).
    pub fn extensions(&self) -> Option<&str> {
        self.extensions.as_deref()
    }

    /// Takes the bytes received after the response head (the first WebSocket frames, or a
    /// body after a refusal).
    pub fn take_leftover(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.leftover)
    }
}

// ---------------------------------------------------------------------------------------------
// Server side.

/// A parsed HTTP request head, as received by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. "GET".
    pub method: String,
    /// The request target (path and query).
    pub path: String,
    /// The HTTP/1.x minor version: 1 for HTTP/1.1.
    pub version: u8,
    /// The headers in order (values trimmed, lossy UTF-8).
    pub headers: Vec<(String, String)>,
    leftover: Vec<u8>,
}

/// A refusal to send with [`reject_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status.
    pub status: u16,
    /// The body text.
    pub message: String,
    /// Headers to add to the response.
    pub headers: Vec<(String, String)>,
}

impl Rejection {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: message.into(),
            headers: Vec::new(),
        }
    }
}

const NOT_WEBSOCKET: &str = "Only WebSocket connections are supported.";

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The values of every line of header `name` (case-insensitive), in order.
    pub fn header_values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + 'a {
        let name = name.to_owned();
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(&name))
            .map(|(_, v)| v.as_str())
    }

    /// All comma-separated, trimmed, non-empty items of header `name` across repeated lines,
    /// in their original case.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        list_items(&self.headers, name)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// The subprotocols the client offered, in its order.
    pub fn offered_protocols(&self) -> Vec<String> {
        self.tokens("Sec-WebSocket-Protocol")
    }

    /// Every `Sec-WebSocket-Extensions` value joined with ", "; None if there was none.
    pub fn offered_extensions(&self) -> Option<String> {
        joined(&self.headers, "Sec-WebSocket-Extensions")
    }

    /// The client's `Sec-WebSocket-Key`, if any.
    pub fn key(&self) -> Option<&str> {
        self.header("Sec-WebSocket-Key")
    }

    /// Takes the bytes received after the request head.
    pub fn take_leftover(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.leftover)
    }

    /// Validates the request as a WebSocket upgrade, in shelf_web_socket's order, returning
    /// the refusal to send when it is not acceptable:
    ///
    /// 1. method not GET → 404;
    /// 2. no `Connection` token "upgrade" (case-insensitive) → 404;
    /// 3. no `Upgrade` token "websocket" (case-insensitive) → 404;
    /// 4. `Sec-WebSocket-Version` missing or repeated → 400; not "13" → 426 with the header
    ///    `Sec-WebSocket-Version: 13` (RFC 6455 §4.4);
    /// 5. HTTP version not 1.1 → 400;
    /// 6. `Sec-WebSocket-Key` missing, repeated or not the base64 of 16 bytes → 400;
    /// 7. `Host` missing → 400;
    /// 8. `Origin` repeated → 400; with `allowed_origins`, an `Origin` whose lower-cased
    ///    value is not among the lower-cased allowed origins → 403 (a request without
    ///    `Origin` is allowed).
    ///
    /// RFC 6455 §11.3.1 and §11.3.5 (and RFC 6454 §7.3 for `Origin`) allow each of these
    /// headers once in a request; with two, this server would use the first and a reader in
    /// front of it might check the other. A repeated `Host`, and headers that frame a body,
    /// are refused earlier, by [`ServerHandshake::receive_data`].
    pub fn check(&self, allowed_origins: Option<&[String]>) -> Result<(), Rejection> {
        if self.method != "GET" {
            return Err(Rejection::new(404, NOT_WEBSOCKET));
        }
        if !has_token(&self.headers, "Connection", "upgrade") {
            return Err(Rejection::new(404, NOT_WEBSOCKET));
        }
        if !has_token(&self.headers, "Upgrade", "websocket") {
            return Err(Rejection::new(404, NOT_WEBSOCKET));
        }
        if self.header_values("Sec-WebSocket-Version").nth(1).is_some() {
            return Err(Rejection::new(
                400,
                "more than one Sec-WebSocket-Version header.",
            ));
        }
        match self.header("Sec-WebSocket-Version") {
            None => return Err(Rejection::new(400, "missing Sec-WebSocket-Version header.")),
            Some("13") => {}
            Some(other) => {
                let mut rejection = Rejection::new(
                    426,
                    format!("unsupported Sec-WebSocket-Version \"{other}\"."),
                );
                rejection
                    .headers
                    .push(("Sec-WebSocket-Version".to_owned(), "13".to_owned()));
                return Err(rejection);
            }
        }
        if self.version != 1 {
            return Err(Rejection::new(
                400,
                format!("unexpected HTTP version \"1.{}\".", self.version),
            ));
        }
        if self.header_values("Sec-WebSocket-Key").nth(1).is_some() {
            return Err(Rejection::new(
                400,
                "more than one Sec-WebSocket-Key header.",
            ));
        }
        match self.key() {
            None => return Err(Rejection::new(400, "missing Sec-WebSocket-Key header.")),
            Some(key) => match BASE64.decode(key) {
                Ok(nonce) if nonce.len() == 16 => {}
                _ => return Err(Rejection::new(400, "invalid Sec-WebSocket-Key header.")),
            },
        }
        if self.header("Host").is_none() {
            return Err(Rejection::new(400, "missing Host header."));
        }
        if self.header_values("Origin").nth(1).is_some() {
            return Err(Rejection::new(400, "more than one Origin header."));
        }
        if let (Some(allowed), Some(origin)) = (allowed_origins, self.header("Origin")) {
            let lower = origin.to_lowercase();
            if !allowed.iter().any(|a| a.to_lowercase() == lower) {
                return Err(Rejection::new(403, format!("invalid origin \"{origin}\".")));
            }
        }
        Ok(())
    }

    /// The subprotocol to select: the first of the client's offers, in the client's order,
    /// that is in `supported`; None if there is none.
    pub fn choose_protocol(&self, supported: &[String]) -> Option<String> {
        self.offered_protocols()
            .into_iter()
            .find(|offered| supported.contains(offered))
    }
}

/// The server half of the opening handshake: parses the client's request head.
#[derive(Debug, Clone)]
pub struct ServerHandshake {
    limits: Limits,
    buf: HeadBuffer,
    finished: bool,
}

impl ServerHandshake {
    /// A handshake waiting for a request head within `limits`.
    pub fn new(limits: Limits) -> Self {
        ServerHandshake {
            limits,
            buf: HeadBuffer::default(),
            finished: false,
        }
    }

    /// Feeds request bytes, in any chunking. Ok(None): more bytes are needed. Ok(Some):
    /// the request head, with the bytes after it as its leftover. A head that is too large or
    /// has too many headers is an error with status 431. These are errors with status 400,
    /// so that a request another HTTP reader could frame or route differently never reaches
    /// the application:
    ///
    /// * a malformed head ([`HandshakeError::MalformedRequest`]): what httparse refuses
    ///   (among others whitespace between a header name and its colon, obs-fold
    ///   continuation lines, a bare CR or a control character in a value, RFC 9112 §5.1-5.2)
    ///   and a line ending in LF without CR (RFC 9112 §2.2 lets a reader accept it, so a
    ///   reader in front of this one may split lines differently);
    /// * an invalid head ([`HandshakeError::InvalidRequest`]): more than one `Host` (RFC 9110
    ///   §7.2), any `Transfer-Encoding`, `Content-Length` with `Transfer-Encoding`, more
    ///   than one `Content-Length`, or one that is not a single 0 (a GET upgrade has no
    ///   body; the bytes after the head are WebSocket frames). `Content-Length: 0` is
    ///   accepted.
    ///
    /// After a request or an error, later calls fail with [`HandshakeError::Finished`].
    pub fn receive_data(&mut self, data: &[u8]) -> Result<Option<Request>, HandshakeError> {
        if self.finished {
            return Err(HandshakeError::Finished);
        }
        let result = self.parse(data);
        if !matches!(result, Ok(None)) {
            self.finished = true;
            self.buf = HeadBuffer::default();
        }
        result
    }

    fn parse(&mut self, data: &[u8]) -> Result<Option<Request>, HandshakeError> {
        let limits = self.limits;
        let too_large = HandshakeError::RequestTooLarge {
            limit: limits.max_header_size,
        };
        let Some(head) = self.buf.push(data, limits.max_header_size) else {
            return if self.buf.len() > limits.max_header_size {
                Err(too_large)
            } else {
                Ok(None)
            };
        };
        let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
        let mut request = httparse::Request::new(&mut slots);
        let head_len = match request.parse(head) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return if self.buf.len() > limits.max_header_size {
                    Err(too_large)
                } else {
                    Ok(None)
                };
            }
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HandshakeError::TooManyRequestHeaders {
                    limit: limits.max_headers,
                })
            }
            Err(err) => return Err(HandshakeError::MalformedRequest(err.to_string())),
        };
        if has_bare_lf(&head[..head_len]) {
            return Err(HandshakeError::MalformedRequest(
                "invalid new line: LF without CR".to_owned(),
            ));
        }
        if raw_values(request.headers, "Host").nth(1).is_some() {
            return Err(HandshakeError::InvalidRequest("more than one Host header"));
        }
        if let Some(problem) = BodyProblem::find(request.headers) {
            return Err(HandshakeError::InvalidRequest(problem.in_request()));
        }
        Ok(Some(Request {
            method: request.method.unwrap_or("").to_owned(),
            path: request.path.unwrap_or("").to_owned(),
            version: request.version.unwrap_or(0),
            headers: owned_headers(request.headers),
            leftover: self.buf.leftover(head_len),
        }))
    }
}

/// Headers [`accept_response`] writes itself.
const ACCEPT_RESERVED: [&str; 5] = [
    "Upgrade",
    "Connection",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Protocol",
    "Sec-WebSocket-Extensions",
];

/// The 101 response accepting a request whose `Sec-WebSocket-Key` is `key`:
/// status line, `Upgrade`, `Connection`, `Sec-WebSocket-Accept`, then the selected
/// `protocol` and `extensions` if any, then the extra `headers`, then the empty line.
///
/// Errors: `protocol` not a token, `extensions` or a header value with CR/LF/NUL, a header
/// name not a token, or an extra header that this function writes itself.
pub fn accept_response(
    key: &str,
    protocol: Option<&str>,
    extensions: Option<&str>,
    headers: &[(String, String)],
) -> Result<Vec<u8>, HandshakeError> {
    if let Some(protocol) = protocol {
        check_protocol(protocol)?;
    }
    if let Some(ext) = extensions {
        check_header_value("Sec-WebSocket-Extensions", ext)?;
    }
    for (name, value) in headers {
        check_header(name, value)?;
        if let Some(reserved) = ACCEPT_RESERVED
            .iter()
            .find(|r| r.eq_ignore_ascii_case(name))
        {
            return Err(HandshakeError::ReservedHeader((*reserved).to_owned()));
        }
    }
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    write_header(&mut out, "Upgrade", "websocket");
    write_header(&mut out, "Connection", "Upgrade");
    write_header(&mut out, "Sec-WebSocket-Accept", &sign_key(key.as_bytes()));
    if let Some(protocol) = protocol {
        write_header(&mut out, "Sec-WebSocket-Protocol", protocol);
    }
    if let Some(ext) = extensions {
        write_header(&mut out, "Sec-WebSocket-Extensions", ext);
    }
    for (name, value) in headers {
        write_header(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// The reason phrase of an HTTP status (RFC 9110 §15); "Unknown" for others.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        451 => "Unavailable For Legal Reasons",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Headers [`reject_response`] writes itself and will not take from the caller.
const REJECT_RESERVED: [&str; 3] = ["Content-Length", "Connection", "Transfer-Encoding"];

/// A complete refusal: "HTTP/1.1 {status} {reason phrase}", the caller's `headers`,
/// `Content-Length`, `Connection: close`, `Content-Type: text/plain; charset=utf-8` unless
/// the caller gave a Content-Type, the empty line, then `body`.
///
/// Errors: a status outside 100..=999, a header name not a token, a value with CR/LF/NUL,
/// or a `Content-Length`, `Connection` or `Transfer-Encoding` header from the caller.
pub fn reject_response(
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Vec<u8>, HandshakeError> {
    if !(100..=999).contains(&status) {
        return Err(HandshakeError::InvalidStatus(status));
    }
    let mut has_content_type = false;
    for (name, value) in headers {
        check_header(name, value)?;
        if let Some(reserved) = REJECT_RESERVED
            .iter()
            .find(|r| r.eq_ignore_ascii_case(name))
        {
            return Err(HandshakeError::ReservedHeader((*reserved).to_owned()));
        }
        has_content_type |= name.eq_ignore_ascii_case("Content-Type");
    }
    let mut out = Vec::with_capacity(128 + body.len());
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    for (name, value) in headers {
        write_header(&mut out, name, value);
    }
    write_header(&mut out, "Content-Length", &body.len().to_string());
    write_header(&mut out, "Connection", "close");
    if !has_content_type {
        write_header(&mut out, "Content-Type", "text/plain; charset=utf-8");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    Ok(out)
}

#[cfg(test)]
mod tests;
