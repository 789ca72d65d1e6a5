//! The client side: the upgrade request and the checks of the server's response.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::http::{
    check_header, check_header_value, check_protocol, has_token, joined, list_items, owned_headers,
    values, write_header, BodyProblem, HeadBuffer,
};
use super::{sign_key, HandshakeError, Limits};
use crate::deflate::{client_accept, client_offer, DeflateConfig, DeflateParams};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Waiting,
    Done,
    Failed,
}

/// What a client asks for in its opening handshake, beyond the host and the resource.
///
/// ```
/// use wschannel::deflate::DeflateConfig;
/// use wschannel::handshake::ClientOptions;
///
/// let options = ClientOptions {
///     protocols: vec!["chat".into()],
///     deflate: Some(DeflateConfig::default()),
///     ..ClientOptions::default()
/// };
/// # let _ = options;
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// The subprotocols to offer (`Sec-WebSocket-Protocol`), each a non-empty HTTP token,
    /// in order of preference; the server may select one of them.
    pub protocols: Vec<String>,
    /// Extra request headers. A `Host` among them replaces the host argument (only one
    /// `Host` line is written); the headers the handshake writes itself (`Upgrade`,
    /// `Connection`, `Sec-WebSocket-Key`/`-Version`/`-Protocol`/`-Extensions`) are refused.
    pub headers: Vec<(String, String)>,
    /// permessage-deflate to offer (RFC 7692); `None`: no extension is offered, and a
    /// server that answers with one fails the handshake.
    pub deflate: Option<DeflateConfig>,
    /// Bounds on the response head.
    pub limits: Limits,
}

/// The client half of the opening handshake: the request to send and the validation of the
/// server's answer (RFC 6455 §4.1), extensions included.
///
/// ```
/// use wschannel::handshake::{accept_response, ClientHandshake, ClientOptions};
///
/// let mut handshake =
///     ClientHandshake::new("example.com", "/chat", &ClientOptions::default()).unwrap();
/// let request = handshake.request().to_vec(); // write this to the server
/// assert!(request.starts_with(b"GET /chat HTTP/1.1\r\n"));
///
/// // The server's answer, in any chunking:
/// let response = accept_response(handshake.key(), None, None, &[]).unwrap();
/// let (head, rest) = response.split_at(10);
/// assert!(!handshake.receive_data(head).unwrap()); // more bytes needed
/// assert!(handshake.receive_data(rest).unwrap()); // upgraded
/// assert_eq!(handshake.protocol(), None);
/// assert!(handshake.take_leftover().is_empty()); // the first frames, if any came along
/// ```
#[derive(Debug, Clone)]
pub struct ClientHandshake {
    request: Vec<u8>,
    key: String,
    offered: Vec<String>,
    deflate_offer: Option<DeflateConfig>,
    deflate: Option<DeflateParams>,
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
    /// Builds the upgrade request, with a `Sec-WebSocket-Key` from the operating system's
    /// random source.
    ///
    /// `host` is the `Host` header value (the caller adds a non-default port); `resource` is
    /// path and query ("/" if empty). Errors: a resource with spaces or control
    /// characters, a subprotocol that is not a token, an invalid or reserved extra header,
    /// an invalid [`DeflateConfig`].
    pub fn new(
        host: &str,
        resource: &str,
        options: &ClientOptions,
    ) -> Result<ClientHandshake, HandshakeError> {
        Self::with_nonce(host, resource, options, crate::random::os_nonce())
    }

    /// Like [`ClientHandshake::new`], with a key drawn from a generator seeded with `seed`:
    /// the same request every time, for tests.
    pub fn with_seed(
        host: &str,
        resource: &str,
        options: &ClientOptions,
        seed: u64,
    ) -> Result<ClientHandshake, HandshakeError> {
        Self::with_nonce(host, resource, options, crate::random::seeded_nonce(seed))
    }

    fn with_nonce(
        host: &str,
        resource: &str,
        options: &ClientOptions,
        nonce: [u8; 16],
    ) -> Result<ClientHandshake, HandshakeError> {
        let ClientOptions {
            protocols,
            headers,
            deflate,
            limits,
        } = options;
        if let Some(config) = deflate {
            config
                .validate()
                .map_err(|e| HandshakeError::InvalidExtensionConfig(e.to_string()))?;
        }
        let offer = deflate.as_ref().map(client_offer);
        let extensions = offer.as_deref();
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
            deflate_offer: deflate.clone(),
            deflate: None,
            limits: *limits,
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

        let answer = joined(headers, "Sec-WebSocket-Extensions");
        self.deflate = match (&self.deflate_offer, &answer) {
            (Some(config), answer) => client_accept(config, answer.as_deref())
                .map_err(|e| HandshakeError::InvalidExtension(e.to_string()))?,
            (None, Some(answer)) => {
                return Err(HandshakeError::UnofferedExtension(answer.clone()));
            }
            (None, None) => None,
        };
        self.extensions = answer;
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

    /// Every `Sec-WebSocket-Extensions` value of the response joined with ", ", as the
    /// server wrote it; None if there was none (set once the handshake succeeded, which
    /// means the answer agreed with the offer).
    pub fn extensions(&self) -> Option<&str> {
        self.extensions.as_deref()
    }

    /// The permessage-deflate parameters agreed on, for the connection's
    /// [`Config::deflate`](crate::engine::Config::deflate); None without compression (set
    /// once the handshake succeeded).
    pub fn deflate(&self) -> Option<DeflateParams> {
        self.deflate
    }

    /// Takes the bytes received after the response head (the first WebSocket frames, or a
    /// body after a refusal).
    pub fn take_leftover(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.leftover)
    }
}
