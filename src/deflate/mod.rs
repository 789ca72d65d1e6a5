//! permessage-deflate (RFC 7692): extension negotiation and per-message compression.
//!
//! Negotiation works on `Sec-WebSocket-Extensions` values: [`client_offer`] writes the client's
//! offer, [`server_negotiate`] picks an offer and writes the server's answer, [`client_accept`]
//! checks that answer, and [`parse_params`] reads an agreed answer back into [`DeflateParams`].
//!
//! [`PerMessageDeflate`] then compresses outgoing messages and decompresses incoming ones for one
//! connection, with `flate2` over its `zlib-rs` backend.
//!
//! Window bits. The decompressor always has a 32 KiB window: it inflates whatever window the peer
//! was allowed, and resets without reallocating. The compressor uses the negotiated window, except
//! that zlib refuses raw deflate with 8 bits: there it uses 9 bits, which is exact, not an
//! approximation. zlib (and zlib-rs, which ports it) never emits a match farther back than
//! `MAX_DIST = window size - MIN_LOOKAHEAD`, which for a 512-byte window is 512 - 262 = 250
//! bytes, so a 9-bit stream only ever refers to the last 250 bytes and a 256-byte window decodes
//! it (zlib likewise substitutes 9 for 8 when it writes zlib-wrapped streams). Unlike stored
//! blocks or run-length-only matching, this keeps real LZ77 compression. A test decodes the output
//! of every window size with an independent inflater and checks each distance against the window.

use std::borrow::Cow;
use std::fmt;
use std::mem::MaybeUninit;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::frame::Role;
use crate::handshake::is_tchar;

const EXTENSION_NAME: &str = "permessage-deflate";

const MIN_WINDOW_BITS: u8 = 8;
const MAX_WINDOW_BITS: u8 = 15;
const MAX_LEVEL: u32 = 9;

/// What a sync flush ends with and what RFC 7692 §7.2.1 strips from every message (LEN = 0 and
/// NLEN = 0xffff of an empty stored block); the receiver appends it back (§7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The smallest step by which the decompressor grows its output.
const MIN_INFLATE_STEP: usize = 1024;

// ---------------------------------------------------------------------------------------------
// Negotiation
// ---------------------------------------------------------------------------------------------

/// What this endpoint offers (client) or accepts (server). Window bits 8..=15; None = no limit
/// requested.
///
/// Client: `server_*` are requests to the server, `client_*` are this end's own limits (a
/// `client_max_window_bits` value is a hint the server may echo; this end keeps to it either way).
/// Server: `server_*` limit this end's compressor and are always announced;
/// `client_no_context_takeover` is imposed on the client; `client_max_window_bits` is imposed
/// only on clients that advertise the parameter (RFC 7692 §7.1.2.2).
#[derive(Clone, Debug)]
pub struct DeflateConfig {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: Option<u8>,
    /// zlib compression level, 0 (store only) to 9 (best); default 6.
    pub level: u32,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
            client_max_window_bits: None,
            level: 6,
        }
    }
}

impl DeflateConfig {
    /// Checks the window bits (8..=15) and the level (0..=9).
    pub fn validate(&self) -> Result<(), NegotiationError> {
        let windows = [
            (Param::ServerMaxWindowBits, self.server_max_window_bits),
            (Param::ClientMaxWindowBits, self.client_max_window_bits),
        ];
        for (param, bits) in windows {
            if let Some(bits) = bits {
                if !(MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&bits) {
                    return Err(NegotiationError::InvalidConfig {
                        field: param.name(),
                        value: bits.into(),
                        expected: "8 to 15",
                    });
                }
            }
        }
        if self.level > MAX_LEVEL {
            return Err(NegotiationError::InvalidConfig {
                field: "level",
                value: self.level,
                expected: "0 to 9",
            });
        }
        Ok(())
    }
}

/// The agreed parameters of one connection (effective values: window bits default 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateParams {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: u8,
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    /// `permessage-deflate` with no parameters: context takeover both ways, 32 KiB windows.
    fn default() -> Self {
        DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
        }
    }
}

/// The params as a response-form header value, e.g. `permessage-deflate; server_max_window_bits=10`
/// (windows of 15 are left out), which [`parse_params`] reads back to the same params. Useful to
/// carry [`client_accept`]'s result, which may be stricter than the server's answer.
impl fmt::Display for DeflateParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXTENSION_NAME)?;
        if self.server_no_context_takeover {
            write!(f, "; {}", Param::ServerNoContextTakeover.name())?;
        }
        if self.client_no_context_takeover {
            write!(f, "; {}", Param::ClientNoContextTakeover.name())?;
        }
        if self.server_max_window_bits != MAX_WINDOW_BITS {
            let name = Param::ServerMaxWindowBits.name();
            write!(f, "; {name}={}", self.server_max_window_bits)?;
        }
        if self.client_max_window_bits != MAX_WINDOW_BITS {
            let name = Param::ClientMaxWindowBits.name();
            write!(f, "; {name}={}", self.client_max_window_bits)?;
        }
        Ok(())
    }
}

/// Why an extension header or a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    #[error("invalid permessage-deflate configuration: {field} = {value} (expected {expected})")]
    InvalidConfig {
        field: &'static str,
        value: u32,
        expected: &'static str,
    },
    #[error("malformed Sec-WebSocket-Extensions element {element:?}: {reason}")]
    Malformed {
        element: String,
        reason: &'static str,
    },
    #[error("unexpected extension {0:?}: only permessage-deflate was offered")]
    UnexpectedExtension(String),
    #[error("permessage-deflate appears more than once in the response")]
    DuplicateExtension,
    #[error("no permessage-deflate extension in {0:?}")]
    NotNegotiated(String),
    #[error("unknown permessage-deflate parameter {0:?}")]
    UnknownParameter(String),
    #[error("duplicate permessage-deflate parameter {0}")]
    DuplicateParameter(&'static str),
    #[error("permessage-deflate parameter {param} takes no value, got {value:?}")]
    UnexpectedValue { param: &'static str, value: String },
    #[error("permessage-deflate parameter {0} requires a value")]
    MissingValue(&'static str),
    #[error(
        "invalid value {value:?} for permessage-deflate parameter {param} \
         (expected 8 to 15 without leading zeros)"
    )]
    InvalidWindowBits { param: &'static str, value: String },
    #[error("the server answered server_max_window_bits={got}, more than the {asked} asked for")]
    ServerWindowTooLarge { asked: u8, got: u8 },
    #[error("the server did not answer server_max_window_bits although {0} was asked for")]
    ServerWindowMissing(u8),
    #[error("the server did not answer server_no_context_takeover although it was asked for")]
    ServerNoContextTakeoverMissing,
}

/// Client: the Sec-WebSocket-Extensions offer, e.g. `permessage-deflate; client_max_window_bits`.
///
/// `client_max_window_bits` is always advertised (with the configured limit as its value, if
/// any) so that the server may limit this end; the other parameters appear when the config asks
/// for them. Call [`DeflateConfig::validate`] first: out-of-range window bits are clamped here
/// and refused by [`client_accept`].
pub fn client_offer(cfg: &DeflateConfig) -> String {
    let mut offer = String::with_capacity(128);
    offer.push_str(EXTENSION_NAME);
    if cfg.server_no_context_takeover {
        push_param(&mut offer, Param::ServerNoContextTakeover, None);
    }
    if cfg.client_no_context_takeover {
        push_param(&mut offer, Param::ClientNoContextTakeover, None);
    }
    if let Some(bits) = cfg.server_max_window_bits {
        push_param(
            &mut offer,
            Param::ServerMaxWindowBits,
            Some(clamp_bits(bits)),
        );
    }
    let client_bits = cfg.client_max_window_bits.map(clamp_bits);
    push_param(&mut offer, Param::ClientMaxWindowBits, client_bits);
    offer
}

/// Client: validates the server's Sec-WebSocket-Extensions answer to [`client_offer`] (all
/// values joined by ", ", or None). `Ok(None)` means no compression; an error means the client
/// must fail the connection.
///
/// The result folds in this end's own limits: `client_no_context_takeover` and
/// `client_max_window_bits` from `cfg` apply even when the server did not echo them, so it can be
/// stricter than [`parse_params`] of the same answer (and always compatible with it).
pub fn client_accept(
    cfg: &DeflateConfig,
    response: Option<&str>,
) -> Result<Option<DeflateParams>, NegotiationError> {
    cfg.validate()?;
    let Some(response) = response else {
        return Ok(None);
    };
    let Some(answer) = read_response(response)? else {
        return Ok(None);
    };
    if cfg.server_no_context_takeover && !answer.server_no_context_takeover {
        return Err(NegotiationError::ServerNoContextTakeoverMissing);
    }
    if let Some(asked) = cfg.server_max_window_bits {
        match answer.server_max_window_bits {
            None => return Err(NegotiationError::ServerWindowMissing(asked)),
            Some(got) if got > asked => {
                return Err(NegotiationError::ServerWindowTooLarge { asked, got })
            }
            Some(_) => {}
        }
    }
    // client_max_window_bits in the answer: always allowed (the offer always advertises it), any
    // value 8..=15 (read_response checked it). This end still keeps to its own hint.
    let server_bits = answer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS);
    let client_bits = answer
        .client_max_window_bits
        .flatten()
        .unwrap_or(MAX_WINDOW_BITS);
    Ok(Some(DeflateParams {
        server_no_context_takeover: answer.server_no_context_takeover,
        client_no_context_takeover: answer.client_no_context_takeover
            || cfg.client_no_context_takeover,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits
            .min(cfg.client_max_window_bits.unwrap_or(MAX_WINDOW_BITS)),
    }))
}

/// Server: picks the first acceptable permessage-deflate offer among the client's and returns
/// the agreed params with the response header value, or None to decline.
///
/// The header may hold several offers and other extensions, comma-separated; parameter values
/// may be quoted-strings (RFC 6455 §9.1). A malformed offer, or one with unknown, duplicate or
/// invalid parameters, is skipped. Every well-formed offer is acceptable: all window sizes 8..=15
/// are supported. The answer honours the offer and applies `cfg`:
/// - `server_no_context_takeover`: if offered or configured;
/// - `client_no_context_takeover`: if offered (echoed) or configured;
/// - `server_max_window_bits`: the smaller of the offered and the configured value, announced
///   whenever either exists (§7.1.2.1 allows announcing it unasked);
/// - `client_max_window_bits`: only if the client advertised it (§7.1.2.2), the smaller of its
///   value and the configured one, omitted when neither gives a value.
///
/// An invalid `cfg` (see [`DeflateConfig::validate`]) declines every offer.
pub fn server_negotiate(
    cfg: &DeflateConfig,
    request: Option<&str>,
) -> Option<(DeflateParams, String)> {
    cfg.validate().ok()?;
    for element in Elements::new(request?) {
        let element = trim_ows(element);
        if element.is_empty() {
            continue;
        }
        let Ok(extension) = parse_element(element) else {
            continue;
        };
        if !extension.name.eq_ignore_ascii_case(EXTENSION_NAME) {
            continue;
        }
        let Ok(offer) = read_params(&extension.params, Context::Offer) else {
            continue;
        };
        return Some(answer_offer(cfg, &offer));
    }
    None
}

/// Parses a negotiated response value (from [`server_negotiate`] or one that [`client_accept`]
/// accepted) back into params.
pub fn parse_params(response: &str) -> Result<DeflateParams, NegotiationError> {
    let Some(answer) = read_response(response)? else {
        return Err(NegotiationError::NotNegotiated(response.to_owned()));
    };
    Ok(DeflateParams {
        server_no_context_takeover: answer.server_no_context_takeover,
        client_no_context_takeover: answer.client_no_context_takeover,
        server_max_window_bits: answer.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS),
        client_max_window_bits: answer
            .client_max_window_bits
            .flatten()
            .unwrap_or(MAX_WINDOW_BITS),
    })
}

fn clamp_bits(bits: u8) -> u8 {
    bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
}

fn push_param(header: &mut String, param: Param, value: Option<u8>) {
    header.push_str("; ");
    header.push_str(param.name());
    if let Some(value) = value {
        header.push('=');
        header.push_str(&value.to_string());
    }
}

fn answer_offer(cfg: &DeflateConfig, offer: &Requested) -> (DeflateParams, String) {
    let server_nct = offer.server_no_context_takeover || cfg.server_no_context_takeover;
    let client_nct = offer.client_no_context_takeover || cfg.client_no_context_takeover;
    let server_bits = min_present(offer.server_max_window_bits, cfg.server_max_window_bits);
    let client_bits = offer
        .client_max_window_bits
        .and_then(|hint| min_present(hint, cfg.client_max_window_bits));

    let mut response = String::with_capacity(128);
    response.push_str(EXTENSION_NAME);
    if server_nct {
        push_param(&mut response, Param::ServerNoContextTakeover, None);
    }
    if client_nct {
        push_param(&mut response, Param::ClientNoContextTakeover, None);
    }
    if let Some(bits) = server_bits {
        push_param(&mut response, Param::ServerMaxWindowBits, Some(bits));
    }
    if let Some(bits) = client_bits {
        push_param(&mut response, Param::ClientMaxWindowBits, Some(bits));
    }
    let params = DeflateParams {
        server_no_context_takeover: server_nct,
        client_no_context_takeover: client_nct,
        server_max_window_bits: server_bits.unwrap_or(MAX_WINDOW_BITS),
        client_max_window_bits: client_bits.unwrap_or(MAX_WINDOW_BITS),
    };
    (params, response)
}

/// The smaller of two optional limits; None if both are absent.
fn min_present(a: Option<u8>, b: Option<u8>) -> Option<u8> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads a response: at most one extension, which must be permessage-deflate with valid
/// response parameters. Ok(None) if the value holds no extension at all.
fn read_response(response: &str) -> Result<Option<Requested>, NegotiationError> {
    let mut found = None;
    for element in Elements::new(response) {
        let element = trim_ows(element);
        if element.is_empty() {
            continue;
        }
        let extension = parse_element(element)?;
        if !extension.name.eq_ignore_ascii_case(EXTENSION_NAME) {
            return Err(NegotiationError::UnexpectedExtension(
                extension.name.to_owned(),
            ));
        }
        if found.is_some() {
            return Err(NegotiationError::DuplicateExtension);
        }
        found = Some(read_params(&extension.params, Context::Response)?);
    }
    Ok(found)
}

/// The four parameters of RFC 7692 §7.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Param {
    ServerNoContextTakeover,
    ClientNoContextTakeover,
    ServerMaxWindowBits,
    ClientMaxWindowBits,
}

impl Param {
    const ALL: [Param; 4] = [
        Param::ServerNoContextTakeover,
        Param::ClientNoContextTakeover,
        Param::ServerMaxWindowBits,
        Param::ClientMaxWindowBits,
    ];

    fn name(self) -> &'static str {
        match self {
            Param::ServerNoContextTakeover => "server_no_context_takeover",
            Param::ClientNoContextTakeover => "client_no_context_takeover",
            Param::ServerMaxWindowBits => "server_max_window_bits",
            Param::ClientMaxWindowBits => "client_max_window_bits",
        }
    }

    fn from_name(name: &str) -> Option<Param> {
        Param::ALL
            .into_iter()
            .find(|param| param.name().eq_ignore_ascii_case(name))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    /// A client's offer: `client_max_window_bits` may come without a value.
    Offer,
    /// A server's answer: every window parameter has a value.
    Response,
}

/// The permessage-deflate parameters as written in one offer or answer.
#[derive(Default)]
struct Requested {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// None: absent; Some(None): present without a value (offers only).
    client_max_window_bits: Option<Option<u8>>,
}

fn read_params(params: &[ExtParam<'_>], context: Context) -> Result<Requested, NegotiationError> {
    let mut requested = Requested::default();
    let mut seen = [false; Param::ALL.len()];
    for raw in params {
        let Some(param) = Param::from_name(raw.name) else {
            return Err(NegotiationError::UnknownParameter(raw.name.to_owned()));
        };
        if std::mem::replace(&mut seen[param as usize], true) {
            return Err(NegotiationError::DuplicateParameter(param.name()));
        }
        let value = raw.value.as_deref();
        match param {
            Param::ServerNoContextTakeover | Param::ClientNoContextTakeover => {
                if let Some(value) = value {
                    return Err(NegotiationError::UnexpectedValue {
                        param: param.name(),
                        value: value.to_owned(),
                    });
                }
                if param == Param::ServerNoContextTakeover {
                    requested.server_no_context_takeover = true;
                } else {
                    requested.client_no_context_takeover = true;
                }
            }
            Param::ServerMaxWindowBits => {
                let value = value.ok_or(NegotiationError::MissingValue(param.name()))?;
                requested.server_max_window_bits = Some(window_bits(param, value)?);
            }
            Param::ClientMaxWindowBits => {
                let bits = match value {
                    Some(value) => Some(window_bits(param, value)?),
                    None if context == Context::Offer => None,
                    None => return Err(NegotiationError::MissingValue(param.name())),
                };
                requested.client_max_window_bits = Some(bits);
            }
        }
    }
    Ok(requested)
}

/// RFC 7692 §7.1.2: a decimal integer 8..=15 without leading zeros.
fn window_bits(param: Param, value: &str) -> Result<u8, NegotiationError> {
    match value.as_bytes() {
        [digit @ b'8'..=b'9'] => Ok(digit - b'0'),
        [b'1', digit @ b'0'..=b'5'] => Ok(10 + (digit - b'0')),
        _ => Err(NegotiationError::InvalidWindowBits {
            param: param.name(),
            value: value.to_owned(),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Header syntax (RFC 6455 §9.1, RFC 7230 §3.2.6 / §7)
// ---------------------------------------------------------------------------------------------

/// One extension element: `name *( OWS ";" OWS param [ OWS "=" OWS value ] )`.
struct Extension<'a> {
    name: &'a str,
    params: Vec<ExtParam<'a>>,
}

struct ExtParam<'a> {
    name: &'a str,
    /// Unquoted; borrowed unless the quoted-string had escapes.
    value: Option<Cow<'a, str>>,
}

fn is_ows(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// The comma-separated elements of a header value; commas inside quoted-strings don't split.
/// An unterminated quoted-string runs to the end of the value (and fails to parse there).
struct Elements<'a> {
    rest: Option<&'a str>,
}

impl<'a> Elements<'a> {
    fn new(value: &'a str) -> Self {
        Elements { rest: Some(value) }
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        let bytes = rest.as_bytes();
        let mut quoted = false;
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if quoted => i += 1,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    self.rest = Some(&rest[i + 1..]);
                    return Some(&rest[..i]);
                }
                _ => {}
            }
            i += 1;
        }
        self.rest = None;
        Some(rest)
    }
}

fn parse_element(element: &str) -> Result<Extension<'_>, NegotiationError> {
    let malformed = |reason| NegotiationError::Malformed {
        element: element.to_owned(),
        reason,
    };
    let mut cursor = Cursor {
        text: element,
        pos: 0,
    };
    cursor.skip_ows();
    let name = cursor
        .token()
        .ok_or_else(|| malformed("expected an extension name"))?;
    let mut params = Vec::new();
    loop {
        cursor.skip_ows();
        match cursor.peek() {
            None => break,
            Some(b';') => cursor.pos += 1,
            Some(_) => return Err(malformed("expected ';' before a parameter")),
        }
        cursor.skip_ows();
        let name = cursor
            .token()
            .ok_or_else(|| malformed("expected a parameter name"))?;
        cursor.skip_ows();
        let value = if cursor.peek() == Some(b'=') {
            cursor.pos += 1;
            cursor.skip_ows();
            let value = if cursor.peek() == Some(b'"') {
                let value = cursor.quoted_string().map_err(malformed)?;
                // RFC 6455 §9.1: a quoted value must still be a token once unescaped.
                if value.is_empty() || !value.bytes().all(is_tchar) {
                    return Err(malformed("quoted parameter value is not a token"));
                }
                value
            } else {
                Cow::Borrowed(
                    cursor
                        .token()
                        .ok_or_else(|| malformed("expected a parameter value"))?,
                )
            };
            Some(value)
        } else {
            None
        };
        params.push(ExtParam { name, value });
    }
    Ok(Extension { name, params })
}

struct Cursor<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while self.peek().is_some_and(is_ows) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Option<&'a str> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.text[start..self.pos])
    }

    /// A quoted-string starting at the current `"`, returned without quotes and escapes.
    fn quoted_string(&mut self) -> Result<Cow<'a, str>, &'static str> {
        let text = self.text;
        self.pos += 1;
        let start = self.pos;
        let mut unescaped: Option<String> = None;
        loop {
            match self.peek() {
                None => return Err("unterminated quoted-string"),
                Some(b'"') => {
                    let raw = &text[start..self.pos];
                    self.pos += 1;
                    return Ok(unescaped.map_or(Cow::Borrowed(raw), Cow::Owned));
                }
                Some(b'\\') => {
                    let buf = unescaped.get_or_insert_with(|| text[start..self.pos].to_owned());
                    self.pos += 1;
                    match self.peek() {
                        Some(byte) if byte == b'\t' || (0x20..0x7f).contains(&byte) => {
                            buf.push(char::from(byte));
                            self.pos += 1;
                        }
                        _ => return Err("invalid escape in quoted-string"),
                    }
                }
                Some(byte) if byte == b'\t' || (0x20..0x7f).contains(&byte) => {
                    if let Some(buf) = unescaped.as_mut() {
                        buf.push(char::from(byte));
                    }
                    self.pos += 1;
                }
                Some(_) => return Err("invalid character in quoted-string"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Compression
// ---------------------------------------------------------------------------------------------

/// Why an incoming compressed message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// The decompressed message would exceed the size limit (close with 1009).
    #[error("decompressed message exceeds the size limit")]
    TooBig,
    /// The payload is not valid DEFLATE data, or refers to history it may not use (close with
    /// 1007).
    #[error("invalid compressed data")]
    Corrupt,
}

/// Per connection compression state, role-aware: as a Server, the compressor uses
/// `server_max_window_bits` / `server_no_context_takeover` and the decompressor `client_*`; as a
/// Client the opposite.
///
/// The compressor and decompressor are created on first use (a connection that only receives
/// never pays for a compressor) and reused for every later message: no context takeover resets
/// them in place rather than reallocating.
pub struct PerMessageDeflate {
    role: Role,
    params: DeflateParams,
    level: u32,
    /// Window bits of our compressor (8..=15).
    compress_bits: u8,
    reset_compressor: bool,
    reset_decompressor: bool,
    compressor: Option<Compress>,
    decompressor: Option<Inflater>,
    /// The last bytes given to the compressor (at most its window), with context takeover:
    /// what a compressor rebuilt after [`PerMessageDeflate::compact`] starts from.
    sent_history: Vec<u8>,
    /// The last bytes the decompressor produced (at most the peer's window), likewise.
    received_history: Vec<u8>,
    /// Where the message being decompressed starts in the output, once it has begun.
    message_start: Option<usize>,
    /// A message went either way since the last [`PerMessageDeflate::compact_if_idle`].
    active: bool,
}

impl fmt::Debug for PerMessageDeflate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerMessageDeflate")
            .field("role", &self.role)
            .field("params", &self.params)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl PerMessageDeflate {
    /// `level` is the zlib level 0..=9 (larger values are treated as 9); window bits outside
    /// 8..=15 are clamped.
    pub fn new(role: Role, params: DeflateParams, level: u32) -> Self {
        let (own_bits, own_reset, peer_reset) = match role {
            Role::Server => (
                params.server_max_window_bits,
                params.server_no_context_takeover,
                params.client_no_context_takeover,
            ),
            Role::Client => (
                params.client_max_window_bits,
                params.client_no_context_takeover,
                params.server_no_context_takeover,
            ),
        };
        PerMessageDeflate {
            role,
            params,
            level: level.min(MAX_LEVEL),
            compress_bits: clamp_bits(own_bits),
            reset_compressor: own_reset,
            reset_decompressor: peer_reset,
            compressor: None,
            decompressor: None,
            sent_history: Vec::new(),
            received_history: Vec::new(),
            message_start: None,
            active: false,
        }
    }

    /// Frees the compressor and decompressor (about 300 KiB with 32 KiB windows), keeping
    /// only the history that context takeover needs (at most one window each way). The next
    /// message rebuilds them from it: a preset dictionary (RFC 1951 allows back-references
    /// into it) gives the new compressor the same history the peer's decompressor has, and
    /// the new decompressor the history the peer's compressor may refer to.
    /// A message whose decompression has begun keeps its decompressor.
    pub fn compact(&mut self) {
        self.compressor = None;
        if self.message_start.is_none() {
            self.decompressor = None;
        }
        let own_window = 1 << self.compress_bits.max(MIN_WINDOW_BITS + 1);
        let peer_window = 1 << self.peer_bits().max(MIN_WINDOW_BITS + 1);
        trim_to(&mut self.sent_history, own_window, own_window);
        trim_to(&mut self.received_history, peer_window, peer_window);
        self.sent_history.shrink_to_fit();
        self.received_history.shrink_to_fit();
    }

    /// [`PerMessageDeflate::compact`] if no message went either way since the last call.
    /// True if it compacted.
    pub fn compact_if_idle(&mut self) -> bool {
        if std::mem::take(&mut self.active) {
            return false;
        }
        let held = self.holds_state();
        self.compact();
        held && !self.holds_state()
    }

    /// Whether a compressor or decompressor is allocated.
    pub fn holds_state(&self) -> bool {
        self.compressor.is_some() || self.decompressor.is_some()
    }

    /// Window bits of the peer's compressor, which bound how far back its messages refer.
    fn peer_bits(&self) -> u8 {
        match self.role {
            Role::Server => self.params.client_max_window_bits,
            Role::Client => self.params.server_max_window_bits,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn params(&self) -> DeflateParams {
        self.params
    }

    /// Compresses one whole message (RFC 7692 §7.2.1): raw DEFLATE, sync flush, trailing
    /// `00 00 ff ff` stripped. Appends to `out`. The compressor is reset after the message when
    /// this side has no context takeover. An empty message compresses to `[0x00]`.
    pub fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        if message.is_empty() {
            // The header byte of an empty stored block: what `00 00 00 ff ff` leaves once the tail
            // is stripped. Between messages the compressor sits on a byte boundary with nothing
            // pending, so this is valid whatever its history, which it leaves unchanged.
            out.push(0x00);
            return;
        }
        self.active = true;
        let (bits, level) = (self.compress_bits, self.level);
        let history = &self.sent_history;
        let deflater = self.compressor.get_or_insert_with(|| {
            // zlib refuses 8 bits for raw deflate; 9 bits never reach past 250 bytes (module docs).
            let bits = bits.max(MIN_WINDOW_BITS + 1);
            let mut deflater = Compress::new_with_window_bits(Compression::new(level), false, bits);
            if !history.is_empty() {
                deflater
                    .set_dictionary(history)
                    .expect("a preset dictionary on a new raw deflate stream");
            }
            deflater
        });
        let start = out.len();
        out.reserve(compress_bound(message.len(), bits));
        let mut input = message;
        loop {
            if out.len() == out.capacity() {
                out.reserve((out.len() - start).max(64));
            }
            let room = out.capacity() - out.len();
            let before = out.len();
            let consumed_before = deflater.total_in();
            deflater
                .compress_vec(input, out, FlushCompress::Sync)
                .expect("deflate of an in-memory buffer cannot fail");
            input = &input[(deflater.total_in() - consumed_before) as usize..];
            // zlib's rule: the flush is complete once a call returns with output space left.
            if input.is_empty() && out.len() - before < room {
                break;
            }
        }
        debug_assert!(out[start..].ends_with(&TAIL));
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if self.reset_compressor {
            deflater.reset();
        } else {
            keep_tail(
                &mut self.sent_history,
                message,
                1 << bits.max(MIN_WINDOW_BITS + 1),
            );
        }
    }

    /// Decompresses one fragment of a compressed message as it arrives (the frames of one
    /// message come in order). `fin` marks the last fragment: then `00 00 ff ff` is fed too
    /// (§7.2.2) and the decompressor is reset if the peer has no context takeover.
    ///
    /// Appends to `out`; fails with [`DecompressError::TooBig`] as soon as `out.len()` would
    /// exceed `max_size` (output grows in bounded steps, so a bomb is never inflated past the
    /// limit), [`DecompressError::Corrupt`] for invalid data. After an error the decompressor is
    /// reset; the connection is expected to fail.
    pub fn decompress(
        &mut self,
        fragment: &[u8],
        fin: bool,
        max_size: Option<usize>,
        out: &mut Vec<u8>,
    ) -> Result<(), DecompressError> {
        self.active = true;
        let limit = max_size.unwrap_or(usize::MAX);
        let window = 1 << self.peer_bits().max(MIN_WINDOW_BITS + 1);
        let history = &self.received_history;
        let inflater = self.decompressor.get_or_insert_with(|| {
            let mut inflater = Inflater::new();
            if !history.is_empty() {
                inflater
                    .inner
                    .set_dictionary(history)
                    .expect("a preset dictionary on a new raw inflate stream");
            }
            inflater
        });
        let start = *self.message_start.get_or_insert(out.len());
        let mut result = inflater.inflate(fragment, limit, out);
        if fin && result.is_ok() {
            result = inflater.finish_message(limit, out);
            if self.reset_decompressor {
                inflater.reset();
            } else if result.is_ok() {
                keep_tail(&mut self.received_history, &out[start..], window);
            }
        }
        if fin || result.is_err() {
            self.message_start = None;
        }
        if result.is_err() {
            inflater.reset();
        }
        result
    }
}

/// Appends `data` to `history`, which keeps at least its last `window` bytes and at most
/// twice that (trimmed only when over, so small messages do not move the window each time).
fn keep_tail(history: &mut Vec<u8>, data: &[u8], window: usize) {
    if data.len() >= window {
        history.clear();
        history.extend_from_slice(&data[data.len() - window..]);
    } else {
        history.extend_from_slice(data);
        trim_to(history, 2 * window, window);
    }
}

/// Keeps only the last `keep` bytes of `history` if it holds more than `over`.
fn trim_to(history: &mut Vec<u8>, over: usize, keep: usize) {
    if history.len() > over {
        history.drain(..history.len() - keep);
    }
}

/// An upper estimate of the compressed size, so that one allocation usually suffices. With a
/// 32 KiB window zlib falls back to stored blocks (about 5 bytes per 16 KiB); with smaller
/// windows a block may be Huffman-coded at up to 9 bits per byte.
fn compress_bound(len: usize, bits: u8) -> usize {
    let overhead = if bits >= MAX_WINDOW_BITS {
        (len >> 12) + (len >> 14)
    } else {
        (len >> 3) + (len >> 6)
    };
    len.saturating_add(overhead).saturating_add(32)
}

/// Runs a (de)compression call on at most `limit` bytes of `out`'s spare capacity and keeps the
/// bytes it reports as written.
fn write_spare<R>(
    out: &mut Vec<u8>,
    limit: usize,
    call: impl FnOnce(&mut [MaybeUninit<u8>]) -> (usize, R),
) -> R {
    let spare = out.spare_capacity_mut();
    let len = spare.len().min(limit);
    let (written, result) = call(&mut spare[..len]);
    assert!(
        written <= len,
        "the codec reported more output than it was given room for"
    );
    // SAFETY: the codec initialised the first `written` bytes of the spare capacity it was given.
    unsafe { out.set_len(out.len() + written) };
    result
}

/// The decompressor: always a 32 KiB window, which inflates any window the peer may use and
/// resets without reallocating (flate2 rebuilds a non-default-window inflater on reset).
struct Inflater {
    inner: Decompress,
    /// Data was fed since the message began or the stream last ended (BFINAL), so the tail must
    /// complete it. Without such data the tail would be read as the start of a stored block that
    /// never ends: an empty payload, or one that ends with a BFINAL block, needs no tail.
    needs_tail: bool,
}

impl Inflater {
    fn new() -> Self {
        Inflater {
            inner: Decompress::new(false),
            needs_tail: false,
        }
    }

    fn reset(&mut self) {
        self.inner.reset(false);
        self.needs_tail = false;
    }

    /// Feeds the tail that ends every message (§7.2.2).
    fn finish_message(&mut self, limit: usize, out: &mut Vec<u8>) -> Result<(), DecompressError> {
        if !self.needs_tail {
            return Ok(());
        }
        self.inflate(&TAIL, limit, out)?;
        self.needs_tail = false;
        Ok(())
    }

    /// Inflates all of `input` into `out`, never letting `out` grow past `limit + 1` bytes.
    fn inflate(
        &mut self,
        mut input: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), DecompressError> {
        if out.len() > limit {
            return Err(DecompressError::TooBig);
        }
        // Nothing is ever left pending between calls: each call below runs until the inflater
        // stops short of filling its output.
        if input.is_empty() {
            return Ok(());
        }
        let mut want = input.len().saturating_mul(4).max(256);
        loop {
            // One byte past the limit tells "exactly at the limit" from "over it".
            let room = (limit - out.len()).saturating_add(1);
            let spare = out.capacity() - out.len();
            if spare < want.min(room) {
                // Grow geometrically, but never reserve past the limit.
                let additional = want.max(out.capacity()).max(MIN_INFLATE_STEP).min(room);
                out.reserve_exact(additional);
            }
            want = 1;
            let window = (out.capacity() - out.len()).min(room);
            let inner = &mut self.inner;
            let consumed_before = inner.total_in();
            let len_before = out.len();
            let result = write_spare(out, window, |buf| {
                let before = inner.total_out();
                let result = inner.decompress_uninit(input, buf, FlushDecompress::None);
                ((inner.total_out() - before) as usize, result)
            });
            let consumed = (inner.total_in() - consumed_before) as usize;
            let produced = out.len() - len_before;
            input = &input[consumed..];
            if out.len() > limit {
                return Err(DecompressError::TooBig);
            }
            if consumed > 0 {
                self.needs_tail = true;
            }
            match result {
                Err(_) => return Err(DecompressError::Corrupt),
                Ok(Status::StreamEnd) => {
                    // A BFINAL block (§7.2.3.4): whatever follows starts a new stream.
                    self.inner.reset(false);
                    self.needs_tail = false;
                    if input.is_empty() {
                        return Ok(());
                    }
                }
                Ok(Status::Ok | Status::BufError) => {
                    if produced < window {
                        // Output to spare: the inflater took all it could.
                        if input.is_empty() {
                            return Ok(());
                        }
                        if consumed == 0 && produced == 0 {
                            // Input left, room left, no progress: never happens with valid data.
                            return Err(DecompressError::Corrupt);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
