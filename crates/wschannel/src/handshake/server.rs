//! The server side: parsing and checking the request, and the responses that accept or
//! refuse it.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::http::{
    check_header, check_header_value, check_protocol, has_bare_lf, has_token, joined, list_items,
    owned_headers, raw_values, write_header, BodyProblem, HeadBuffer,
};
use super::{sign_key, HandshakeError, Limits};
use crate::deflate::{server_negotiate, DeflateConfig, DeflateParams};

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

/// What a server agrees to, for [`Request::accept`].
#[derive(Clone, Debug, Default)]
pub struct AcceptOptions {
    /// The subprotocols this server speaks: the first of the client's offers (in the
    /// client's order) that is among them is selected.
    pub protocols: Vec<String>,
    /// permessage-deflate, if this server accepts it (RFC 7692): the client's first
    /// acceptable offer is taken. `None`: offers are declined.
    pub deflate: Option<DeflateConfig>,
    /// Extra response headers (not the ones the 101 writes itself).
    pub headers: Vec<(String, String)>,
}

/// A request accepted by [`Request::accept`]: the 101 response to send, and what it agreed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The complete `101 Switching Protocols` response.
    pub response: Vec<u8>,
    /// The subprotocol selected, if any.
    pub protocol: Option<String>,
    /// The permessage-deflate parameters agreed on, for the connection's
    /// [`Config::deflate`](crate::engine::Config::deflate); `None` without compression.
    pub deflate: Option<DeflateParams>,
}

impl Request {
    /// Accepts the request: selects a subprotocol, negotiates permessage-deflate and writes
    /// the 101 response (RFC 6455 §4.2.2). Run [`Request::check`] first: this only fails
    /// for a request without a `Sec-WebSocket-Key` (status 400) and for invalid `options`.
    pub fn accept(&self, options: &AcceptOptions) -> Result<Accepted, HandshakeError> {
        let key = self.key().ok_or(HandshakeError::InvalidRequest(
            "missing Sec-WebSocket-Key header",
        ))?;
        let protocol = self.choose_protocol(&options.protocols);
        let offered = self.offered_extensions();
        let negotiated = options
            .deflate
            .as_ref()
            .and_then(|config| server_negotiate(config, offered.as_deref()));
        let answer = negotiated.as_ref().map(|(_, value)| value.as_str());
        let response = accept_response(key, protocol.as_deref(), answer, &options.headers)?;
        Ok(Accepted {
            response,
            protocol,
            deflate: negotiated.map(|(params, _)| params),
        })
    }
}

/// The server half of the opening handshake: parses the client's request head.
///
/// ```
/// use wschannel::handshake::{reject_response, AcceptOptions, Limits, ServerHandshake};
///
/// let mut handshake = ServerHandshake::new(Limits::default());
/// let request = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
///     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
///     Sec-WebSocket-Version: 13\r\n\r\n";
/// let request = handshake.receive_data(request).unwrap().expect("a whole head");
/// let response = match request.check(None) {
///     Ok(()) => request.accept(&AcceptOptions::default()).unwrap().response,
///     Err(no) => reject_response(no.status, &no.headers, no.message.as_bytes()).unwrap(),
/// };
/// assert!(response.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
/// // RFC 6455 §1.3's example key and its accept value:
/// assert!(response.windows(28).any(|w| w == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
/// ```
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
