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
mod tests {
    use super::*;

    const HELLO: &[u8] = b"Hello";
    /// RFC 7692 §7.2.3.1.
    const HELLO_COMPRESSED: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
    /// RFC 7692 §7.2.3.2: the second "Hello" with context takeover.
    const HELLO_AGAIN: [u8; 5] = [0xf2, 0x00, 0x11, 0x00, 0x00];
    const MIB: usize = 1 << 20;

    // ----- helpers ------------------------------------------------------------------------

    /// Deterministic xorshift64* bytes.
    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            out.extend_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Compressible text: random words from a small vocabulary, so matches occur at all
    /// distances.
    fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
        const WORDS: [&str; 16] = [
            "websocket ",
            "frame ",
            "deflate ",
            "window ",
            "context ",
            "takeover ",
            "server ",
            "client ",
            "message ",
            "payload ",
            "{\"id\": ",
            "42, ",
            "\"ok\": true} ",
            "\n",
            "compression ",
            "extension ",
        ];
        let picks = random_bytes(len, seed);
        let mut out = Vec::with_capacity(len + 16);
        for pick in picks {
            if out.len() >= len {
                break;
            }
            out.extend_from_slice(WORDS[usize::from(pick) % WORDS.len()].as_bytes());
        }
        out.truncate(len);
        out
    }

    /// A random block repeated: a normal compressor matches it at distance `period`.
    fn periodic_bytes(len: usize, period: usize) -> Vec<u8> {
        random_bytes(period, 7)
            .into_iter()
            .cycle()
            .take(len)
            .collect()
    }

    fn params(
        server_no_context_takeover: bool,
        client_no_context_takeover: bool,
        server_max_window_bits: u8,
        client_max_window_bits: u8,
    ) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover,
            client_no_context_takeover,
            server_max_window_bits,
            client_max_window_bits,
        }
    }

    fn endpoints(params: DeflateParams) -> (PerMessageDeflate, PerMessageDeflate) {
        (
            PerMessageDeflate::new(Role::Server, params, 6),
            PerMessageDeflate::new(Role::Client, params, 6),
        )
    }

    fn compressed(sender: &mut PerMessageDeflate, message: &[u8]) -> Vec<u8> {
        let mut wire = Vec::new();
        sender.compress(message, &mut wire);
        wire
    }

    /// Feeds `wire` in fragments of `fragment` bytes and returns the message.
    fn inflate_fragments(
        receiver: &mut PerMessageDeflate,
        wire: &[u8],
        fragment: usize,
    ) -> Result<Vec<u8>, DecompressError> {
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = wire.chunks(fragment).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            receiver.decompress(chunk, i + 1 == chunks.len(), None, &mut out)?;
        }
        Ok(out)
    }

    /// Compresses `message` on `sender`, inflates it on `receiver` in fragments, checks equality.
    fn round_trip(
        sender: &mut PerMessageDeflate,
        receiver: &mut PerMessageDeflate,
        message: &[u8],
        fragment: usize,
    ) -> Vec<u8> {
        let wire = compressed(sender, message);
        let inflated = inflate_fragments(receiver, &wire, fragment).expect("inflates");
        assert!(
            inflated == message,
            "round trip of {} bytes differs",
            message.len()
        );
        wire
    }

    /// Reads a raw DEFLATE stream LSB first (RFC 1951 §3.1.1).
    struct BitReader<'a> {
        data: &'a [u8],
        pos: usize,
        buf: u32,
        count: u32,
    }

    impl BitReader<'_> {
        fn bits(&mut self, n: u32) -> Result<u32, String> {
            while self.count < n {
                let byte = *self.data.get(self.pos).ok_or("unexpected end of data")?;
                self.buf |= u32::from(byte) << self.count;
                self.count += 8;
                self.pos += 1;
            }
            let value = self.buf & ((1 << n) - 1);
            self.buf >>= n;
            self.count -= n;
            Ok(value)
        }

        fn align(&mut self) {
            self.buf = 0;
            self.count = 0;
        }

        fn at_end(&self) -> bool {
            self.pos == self.data.len() && self.count == 0
        }
    }

    /// A canonical Huffman code: how many codes of each length, symbols in code order.
    struct Huffman {
        counts: [u16; 16],
        symbols: Vec<u16>,
    }

    impl Huffman {
        fn new(lengths: &[u8]) -> Huffman {
            let mut counts = [0u16; 16];
            for &len in lengths {
                counts[usize::from(len)] += 1;
            }
            counts[0] = 0;
            let mut offsets = [0usize; 16];
            for len in 1..15 {
                offsets[len + 1] = offsets[len] + usize::from(counts[len]);
            }
            let mut symbols = vec![0u16; lengths.len()];
            for (symbol, &len) in lengths.iter().enumerate() {
                if len != 0 {
                    symbols[offsets[usize::from(len)]] = symbol as u16;
                    offsets[usize::from(len)] += 1;
                }
            }
            Huffman { counts, symbols }
        }

        fn decode(&self, reader: &mut BitReader<'_>) -> Result<u16, String> {
            let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
            for len in 1..16 {
                code |= reader.bits(1)? as i32;
                let count = i32::from(self.counts[len]);
                if code - first < count {
                    return Ok(self.symbols[(index + code - first) as usize]);
                }
                index += count;
                first = (first + count) << 1;
                code <<= 1;
            }
            Err("invalid Huffman code".into())
        }
    }

    const LENGTH_BASE: [u16; 29] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
        131, 163, 195, 227, 258,
    ];
    const LENGTH_EXTRA: [u8; 29] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
    ];
    const DIST_BASE: [u16; 30] = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
        2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
    ];
    const DIST_EXTRA: [u8; 30] = [
        0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
        13, 13,
    ];

    /// An independent reference inflater (RFC 1951), used to check what the compressor emits.
    /// Decodes one message (`payload` + `00 00 ff ff`), appending to `history`, which holds
    /// everything decoded before (the sliding window with context takeover). Returns the
    /// longest back-reference distance used.
    fn reference_inflate(history: &mut Vec<u8>, payload: &[u8]) -> Result<usize, String> {
        let data = [payload, &TAIL].concat();
        let mut reader = BitReader {
            data: &data,
            pos: 0,
            buf: 0,
            count: 0,
        };
        let mut max_distance = 0;
        while !reader.at_end() {
            let last = reader.bits(1)? == 1;
            let (literals, distances) = match reader.bits(2)? {
                0 => {
                    reader.align();
                    let len = reader.bits(16)?;
                    if reader.bits(16)? != !len & 0xffff {
                        return Err("stored block length check failed".into());
                    }
                    for _ in 0..len {
                        history.push(reader.bits(8)? as u8);
                    }
                    if last {
                        break;
                    }
                    continue;
                }
                1 => {
                    let mut lengths = [8u8; 288];
                    lengths[144..256].fill(9);
                    lengths[256..280].fill(7);
                    (Huffman::new(&lengths), Huffman::new(&[5; 30]))
                }
                2 => {
                    let literal_count = reader.bits(5)? as usize + 257;
                    let distance_count = reader.bits(5)? as usize + 1;
                    let code_count = reader.bits(4)? as usize + 4;
                    const ORDER: [usize; 19] = [
                        16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
                    ];
                    let mut code_lengths = [0u8; 19];
                    for &i in &ORDER[..code_count] {
                        code_lengths[i] = reader.bits(3)? as u8;
                    }
                    let code = Huffman::new(&code_lengths);
                    let mut lengths = Vec::with_capacity(literal_count + distance_count);
                    while lengths.len() < literal_count + distance_count {
                        let symbol = code.decode(&mut reader)?;
                        let (value, repeat) = match symbol {
                            0..=15 => (symbol as u8, 1),
                            16 => {
                                let previous = *lengths.last().ok_or("repeat with no length")?;
                                (previous, 3 + reader.bits(2)?)
                            }
                            17 => (0, 3 + reader.bits(3)?),
                            _ => (0, 11 + reader.bits(7)?),
                        };
                        lengths.extend(std::iter::repeat_n(value, repeat as usize));
                    }
                    if lengths.len() != literal_count + distance_count {
                        return Err("code lengths overrun".into());
                    }
                    (
                        Huffman::new(&lengths[..literal_count]),
                        Huffman::new(&lengths[literal_count..]),
                    )
                }
                _ => return Err("reserved block type".into()),
            };
            loop {
                let symbol = usize::from(literals.decode(&mut reader)?);
                if symbol < 256 {
                    history.push(symbol as u8);
                    continue;
                }
                if symbol == 256 {
                    break;
                }
                let index = symbol - 257;
                let extra = u32::from(*LENGTH_EXTRA.get(index).ok_or("bad length symbol")?);
                let length = usize::from(LENGTH_BASE[index]) + reader.bits(extra)? as usize;
                let index = usize::from(distances.decode(&mut reader)?);
                let extra = u32::from(*DIST_EXTRA.get(index).ok_or("bad distance symbol")?);
                let distance = usize::from(DIST_BASE[index]) + reader.bits(extra)? as usize;
                if distance > history.len() {
                    return Err(format!(
                        "distance {distance} before the start of the stream"
                    ));
                }
                max_distance = max_distance.max(distance);
                for _ in 0..length {
                    history.push(history[history.len() - distance]);
                }
            }
            if last {
                break;
            }
        }
        Ok(max_distance)
    }

    /// Compresses `messages` in order on `sender` and decodes them with the reference inflater;
    /// returns the longest distance used.
    fn longest_distance(sender: &mut PerMessageDeflate, messages: &[Vec<u8>]) -> usize {
        let mut history = Vec::new();
        let mut longest = 0;
        for message in messages {
            let start = history.len();
            let wire = compressed(sender, message);
            let distance = reference_inflate(&mut history, &wire).expect("valid DEFLATE");
            assert!(
                history[start..] == message[..],
                "reference inflater disagrees"
            );
            longest = longest.max(distance);
        }
        longest
    }

    // ----- RFC 7692 §7.2.3 vectors --------------------------------------------------------

    #[test]
    fn hello_without_context_takeover_compresses_to_the_rfc_vector() {
        let (mut server, mut client) = endpoints(params(true, true, 15, 15));
        for _ in 0..3 {
            assert_eq!(compressed(&mut server, HELLO), HELLO_COMPRESSED);
            assert_eq!(compressed(&mut client, HELLO), HELLO_COMPRESSED);
        }
    }

    #[test]
    fn rfc_hello_vector_decompresses() {
        let (mut server, mut client) = endpoints(params(true, true, 15, 15));
        for receiver in [&mut server, &mut client] {
            for _ in 0..3 {
                let out = inflate_fragments(receiver, &HELLO_COMPRESSED, 7).unwrap();
                assert_eq!(out, HELLO);
            }
        }
    }

    #[test]
    fn second_hello_with_context_takeover_matches_the_rfc_vector() {
        let (mut server, _) = endpoints(DeflateParams::default());
        assert_eq!(compressed(&mut server, HELLO), HELLO_COMPRESSED);
        assert_eq!(compressed(&mut server, HELLO), HELLO_AGAIN);
    }

    #[test]
    fn rfc_context_takeover_vectors_decompress_in_order() {
        let (_, mut client) = endpoints(DeflateParams::default());
        assert_eq!(
            inflate_fragments(&mut client, &HELLO_COMPRESSED, 7).unwrap(),
            HELLO
        );
        assert_eq!(
            inflate_fragments(&mut client, &HELLO_AGAIN, 5).unwrap(),
            HELLO
        );
        assert_eq!(
            inflate_fragments(&mut client, &HELLO_AGAIN, 1).unwrap(),
            HELLO
        );
    }

    #[test]
    fn rfc_stored_block_vector_decompresses_and_level_zero_produces_it() {
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        let (_, mut client) = endpoints(DeflateParams::default());
        assert_eq!(inflate_fragments(&mut client, &stored, 3).unwrap(), HELLO);
        let mut server = PerMessageDeflate::new(Role::Server, DeflateParams::default(), 0);
        assert_eq!(compressed(&mut server, HELLO), stored);
    }

    #[test]
    fn rfc_bfinal_vector_decompresses_and_the_stream_goes_on() {
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        let (_, mut client) = endpoints(DeflateParams::default());
        for fragment in [8, 1, 3] {
            assert_eq!(
                inflate_fragments(&mut client, &bfinal, fragment).unwrap(),
                HELLO
            );
            assert_eq!(
                inflate_fragments(&mut client, &HELLO_COMPRESSED, fragment).unwrap(),
                HELLO
            );
        }
        // Without the extra header byte after the BFINAL block, too.
        let (_, mut client) = endpoints(DeflateParams::default());
        assert_eq!(
            inflate_fragments(&mut client, &bfinal[..7], 7).unwrap(),
            HELLO
        );
        assert_eq!(
            inflate_fragments(&mut client, &HELLO_COMPRESSED, 7).unwrap(),
            HELLO
        );
    }

    #[test]
    fn rfc_two_block_vector_decompresses() {
        let two_blocks = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        let (_, mut client) = endpoints(DeflateParams::default());
        assert_eq!(
            inflate_fragments(&mut client, &two_blocks, 13).unwrap(),
            HELLO
        );
        assert_eq!(
            inflate_fragments(&mut client, &two_blocks, 2).unwrap(),
            HELLO
        );
    }

    // ----- round trips ----------------------------------------------------------------------

    #[test]
    fn empty_message_compresses_to_one_zero_byte_and_round_trips() {
        for takeover in [false, true] {
            let (mut server, mut client) = endpoints(params(!takeover, !takeover, 15, 15));
            assert_eq!(round_trip(&mut server, &mut client, b"", 1), [0x00]);
            round_trip(&mut server, &mut client, HELLO, 1);
            assert_eq!(round_trip(&mut server, &mut client, b"", 1), [0x00]);
            round_trip(&mut server, &mut client, HELLO, 3);
            round_trip(&mut client, &mut server, b"", 1);
        }
    }

    #[test]
    fn messages_round_trip_with_every_window_size_both_ways() {
        let messages: Vec<Vec<u8>> = vec![
            b"x".to_vec(),
            text_bytes(3000, 1),
            random_bytes(2000, 2),
            periodic_bytes(5000, 300),
            vec![b'a'; 70_000],
            text_bytes(100_000, 3),
            Vec::new(),
        ];
        for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
            for takeover in [false, true] {
                let agreed = params(!takeover, !takeover, bits, bits);
                let (mut server, mut client) = endpoints(agreed);
                for (i, message) in messages.iter().enumerate() {
                    let fragment = [1, 7, 1000, 65_537][i % 4];
                    round_trip(&mut server, &mut client, message, fragment);
                    round_trip(&mut client, &mut server, message, usize::MAX);
                }
            }
        }
    }

    #[test]
    fn one_mebibyte_messages_round_trip_with_every_window_size() {
        let random = random_bytes(MIB, 11);
        // A 200-byte period: within reach of every window, 8 bits included.
        let repetitive = periodic_bytes(MIB, 200);
        for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
            for takeover in [false, true] {
                let (mut server, mut client) = endpoints(params(!takeover, !takeover, bits, bits));
                let fragment = if takeover { 4093 } else { 65_536 };
                let wire = round_trip(&mut server, &mut client, &random, fragment);
                assert!(
                    wire.len() < MIB + MIB / 64,
                    "{bits} bits: random grew to {}",
                    wire.len()
                );
                let wire = round_trip(&mut client, &mut server, &repetitive, 777);
                assert!(wire.len() < MIB / 2, "{bits} bits: {} bytes", wire.len());
            }
        }
        let (mut server, mut client) = endpoints(DeflateParams::default());
        let wire = round_trip(&mut server, &mut client, &vec![0; MIB], 1);
        assert!(wire.len() < 2000);
    }

    #[test]
    fn message_split_into_single_bytes_round_trips() {
        let message = text_bytes(20_000, 5);
        for bits in [8, 10, 15] {
            let (mut server, mut client) = endpoints(params(false, false, bits, bits));
            for _ in 0..3 {
                round_trip(&mut server, &mut client, &message, 1);
                round_trip(&mut client, &mut server, &message, 1);
            }
        }
    }

    #[test]
    fn final_fragment_may_be_empty() {
        let (mut server, mut client) = endpoints(DeflateParams::default());
        let message = text_bytes(5000, 9);
        let wire = compressed(&mut server, &message);
        let mut out = Vec::new();
        client.decompress(&wire, false, None, &mut out).unwrap();
        client.decompress(&[], true, None, &mut out).unwrap();
        assert_eq!(out, message);
        round_trip(&mut server, &mut client, &message, 333);
    }

    #[test]
    fn empty_compressed_payload_is_an_empty_message() {
        let (_, mut client) = endpoints(DeflateParams::default());
        assert_eq!(
            inflate_fragments(&mut client, &HELLO_COMPRESSED, 7).unwrap(),
            HELLO
        );
        let mut out = Vec::new();
        client.decompress(&[], true, None, &mut out).unwrap();
        assert!(out.is_empty());
        // The stream is undisturbed: the next message still refers to the first.
        assert_eq!(
            inflate_fragments(&mut client, &HELLO_AGAIN, 5).unwrap(),
            HELLO
        );
    }

    #[test]
    fn decompress_appends_to_existing_output() {
        let (mut server, mut client) = endpoints(DeflateParams::default());
        let wire = compressed(&mut server, HELLO);
        let mut out = b"prefix:".to_vec();
        client.decompress(&wire, true, None, &mut out).unwrap();
        assert_eq!(out, b"prefix:Hello");
        let mut wire = b"header".to_vec();
        server.compress(HELLO, &mut wire);
        assert_eq!(&wire[..6], b"header");
        assert_eq!(&wire[6..], HELLO_AGAIN);
    }

    #[test]
    fn context_takeover_makes_repeated_messages_smaller() {
        let message = text_bytes(2000, 4);
        let (mut server, mut client) = endpoints(DeflateParams::default());
        let first = round_trip(&mut server, &mut client, &message, 100);
        let second = round_trip(&mut server, &mut client, &message, 100);
        assert!(
            second.len() * 10 < first.len(),
            "{} vs {}",
            second.len(),
            first.len()
        );
    }

    #[test]
    fn no_context_takeover_resets_the_compressor_after_each_message() {
        let message = text_bytes(2000, 4);
        let (mut server, mut client) = endpoints(params(true, true, 15, 15));
        let first = round_trip(&mut server, &mut client, &message, 100);
        let second = round_trip(&mut server, &mut client, &message, 100);
        assert_eq!(first, second);
    }

    #[test]
    fn role_picks_which_parameters_apply_to_each_direction() {
        // The server may not take over context, the client may.
        let agreed = params(true, false, 15, 15);
        let (mut server, mut client) = endpoints(agreed);
        let message = text_bytes(2000, 8);
        let server_first = round_trip(&mut server, &mut client, &message, 64);
        let server_second = round_trip(&mut server, &mut client, &message, 64);
        assert_eq!(server_first, server_second);
        let client_first = round_trip(&mut client, &mut server, &message, 64);
        let client_second = round_trip(&mut client, &mut server, &message, 64);
        assert!(client_second.len() < client_first.len() / 10);
        assert_eq!(server.params(), agreed);
        assert_eq!(client.role(), Role::Client);
    }

    #[test]
    fn decompressor_resets_when_the_peer_has_no_context_takeover() {
        // The client was told the server keeps no context, so a message that refers to the
        // previous one is invalid for it.
        let (_, mut client) = endpoints(params(true, false, 15, 15));
        assert_eq!(
            inflate_fragments(&mut client, &HELLO_COMPRESSED, 7).unwrap(),
            HELLO
        );
        let err = inflate_fragments(&mut client, &HELLO_AGAIN, 5).unwrap_err();
        assert_eq!(err, DecompressError::Corrupt);
    }

    // ----- window of 8 bits --------------------------------------------------------------------

    #[test]
    fn reference_inflater_decodes_the_rfc_vectors() {
        let mut history = Vec::new();
        assert_eq!(reference_inflate(&mut history, &HELLO_COMPRESSED), Ok(0));
        assert_eq!(reference_inflate(&mut history, &HELLO_AGAIN), Ok(5));
        assert_eq!(history, b"HelloHello");
    }

    #[test]
    fn compressor_keeps_every_distance_within_the_negotiated_window() {
        let messages = vec![
            text_bytes(50_000, 21),
            periodic_bytes(20_000, 257),
            periodic_bytes(20_000, 300),
            periodic_bytes(40_000, 1500),
            periodic_bytes(70_000, 20_000),
            vec![b'z'; 5000],
            HELLO.to_vec(),
            HELLO.to_vec(),
        ];
        for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
            for takeover in [false, true] {
                let agreed = params(!takeover, !takeover, bits, bits);
                let (mut server, mut client) = endpoints(agreed);
                for sender in [&mut server, &mut client] {
                    let longest = longest_distance(sender, &messages);
                    assert!(longest <= 1 << bits, "{bits} bits: distance {longest}");
                    assert!(longest > 0);
                }
            }
        }
    }

    #[test]
    fn window_8_output_never_refers_past_256_bytes() {
        // Data a wider window would match at distances 257..=300.
        let messages = vec![
            periodic_bytes(20_000, 257),
            periodic_bytes(20_000, 300),
            text_bytes(20_000, 12),
            HELLO.to_vec(),
            HELLO.to_vec(),
        ];
        for takeover in [false, true] {
            let (mut server, mut client) = endpoints(params(!takeover, !takeover, 8, 8));
            assert!(longest_distance(&mut server, &messages) <= 256);
            assert!(longest_distance(&mut client, &messages) <= 256);
        }
    }

    #[test]
    fn distance_check_sees_distances_past_256_bytes() {
        // A 10-bit compressor matches the 300-byte period, which a 256-byte window cannot hold.
        let mut wide = PerMessageDeflate::new(Role::Server, params(false, false, 10, 10), 6);
        assert!(longest_distance(&mut wide, &[periodic_bytes(20_000, 300)]) > 256);
    }

    #[test]
    fn window_8_still_compresses() {
        let mut server = PerMessageDeflate::new(Role::Server, params(false, false, 8, 15), 6);
        let zeros = vec![0u8; 100_000];
        assert!(compressed(&mut server, &zeros).len() < 1000);
        let text = text_bytes(100_000, 13);
        assert!(compressed(&mut server, &text).len() < text.len() * 3 / 4);
    }

    // ----- limits and corrupt data ----------------------------------------------------------

    #[test]
    fn decompression_bomb_fails_with_too_big_without_inflating_it() {
        let zeros = vec![0u8; 10_000_000];
        let (mut server, mut client) = endpoints(DeflateParams::default());
        let wire = compressed(&mut server, &zeros);
        assert!(wire.len() < 20_000);
        drop(zeros);
        for fragment in [wire.len(), 1000] {
            let mut out = Vec::new();
            let mut result = Ok(());
            let chunks: Vec<&[u8]> = wire.chunks(fragment).collect();
            for (i, chunk) in chunks.iter().enumerate() {
                result = client.decompress(chunk, i + 1 == chunks.len(), Some(MIB), &mut out);
                if result.is_err() {
                    break;
                }
            }
            assert_eq!(result, Err(DecompressError::TooBig));
            assert!(out.len() <= MIB + 1);
            assert!(out.capacity() <= 2 * MIB, "capacity {}", out.capacity());
        }
    }

    #[test]
    fn message_of_exactly_max_size_is_accepted() {
        let message = text_bytes(50_000, 14);
        let (mut server, mut client) = endpoints(params(true, true, 15, 15));
        let wire = compressed(&mut server, &message);
        let mut out = Vec::new();
        client
            .decompress(&wire, true, Some(50_000), &mut out)
            .unwrap();
        assert_eq!(out, message);
        let mut out = Vec::new();
        let err = client
            .decompress(&wire, true, Some(49_999), &mut out)
            .unwrap_err();
        assert_eq!(err, DecompressError::TooBig);
        assert!(out.len() <= 50_000);
    }

    #[test]
    fn max_size_counts_what_out_already_holds() {
        let (mut server, mut client) = endpoints(params(true, true, 15, 15));
        let wire = compressed(&mut server, HELLO);
        let mut out = vec![0; 10];
        assert_eq!(
            client.decompress(&wire, true, Some(14), &mut out),
            Err(DecompressError::TooBig)
        );
        let mut out = vec![0; 10];
        client.decompress(&wire, true, Some(15), &mut out).unwrap();
        assert_eq!(&out[10..], HELLO);
    }

    #[test]
    fn corrupt_data_fails_with_corrupt() {
        let (_, mut client) = endpoints(DeflateParams::default());
        // BTYPE = 11 is reserved.
        assert_eq!(
            inflate_fragments(&mut client, &[0x06, 0x00], 2),
            Err(DecompressError::Corrupt)
        );
        // A stored block whose NLEN is not the complement of LEN.
        let bad_stored = [0x00, 0x05, 0x00, 0x00, 0x00, b'H', b'e', b'l', b'l', b'o'];
        assert_eq!(
            inflate_fragments(&mut client, &bad_stored, 3),
            Err(DecompressError::Corrupt)
        );
        // A back-reference before the start of the stream.
        assert_eq!(
            inflate_fragments(&mut client, &HELLO_AGAIN, 5),
            Err(DecompressError::Corrupt)
        );
        // The decompressor was reset: valid data inflates again.
        assert_eq!(
            inflate_fragments(&mut client, &HELLO_COMPRESSED, 7).unwrap(),
            HELLO
        );
    }

    #[test]
    fn random_garbage_never_panics() {
        let (_, mut client) = endpoints(DeflateParams::default());
        for seed in 0..200 {
            let garbage = random_bytes(1 + (seed as usize * 37) % 500, seed);
            let mut out = Vec::new();
            let _ = client.decompress(&garbage, true, Some(MIB), &mut out);
            assert!(out.len() <= MIB + 1);
            client = endpoints(DeflateParams::default()).1;
        }
    }

    #[test]
    fn per_message_deflate_can_move_between_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<PerMessageDeflate>();
    }

    // ----- negotiation: configuration and offer ------------------------------------------

    fn config(
        server_no_context_takeover: bool,
        client_no_context_takeover: bool,
        server_max_window_bits: Option<u8>,
        client_max_window_bits: Option<u8>,
    ) -> DeflateConfig {
        DeflateConfig {
            server_no_context_takeover,
            client_no_context_takeover,
            server_max_window_bits,
            client_max_window_bits,
            level: 6,
        }
    }

    fn negotiate(cfg: &DeflateConfig, request: &str) -> (DeflateParams, String) {
        server_negotiate(cfg, Some(request)).expect("an offer is accepted")
    }

    fn accept(cfg: &DeflateConfig, response: &str) -> Result<DeflateParams, NegotiationError> {
        client_accept(cfg, Some(response)).map(|params| params.expect("compression agreed"))
    }

    #[test]
    fn config_defaults_to_level_6_without_parameters() {
        let cfg = DeflateConfig::default();
        assert_eq!(cfg.level, 6);
        assert!(!cfg.server_no_context_takeover && !cfg.client_no_context_takeover);
        assert_eq!(
            (cfg.server_max_window_bits, cfg.client_max_window_bits),
            (None, None)
        );
        assert_eq!(cfg.validate(), Ok(()));
    }

    #[test]
    fn config_validation_rejects_bad_window_bits_and_level() {
        for bits in [8, 15] {
            assert_eq!(
                config(false, false, Some(bits), Some(bits)).validate(),
                Ok(())
            );
        }
        let err = config(false, false, Some(7), None).validate().unwrap_err();
        assert_eq!(
            err,
            NegotiationError::InvalidConfig {
                field: "server_max_window_bits",
                value: 7,
                expected: "8 to 15"
            }
        );
        assert!(
            err.to_string().contains("server_max_window_bits = 7"),
            "{err}"
        );
        let err = config(false, false, None, Some(16)).validate().unwrap_err();
        assert!(
            err.to_string().contains("client_max_window_bits = 16"),
            "{err}"
        );
        let cfg = DeflateConfig {
            level: 10,
            ..DeflateConfig::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("level = 10"));
    }

    #[test]
    fn client_offer_always_advertises_client_max_window_bits() {
        let offer = client_offer(&DeflateConfig::default());
        assert_eq!(offer, "permessage-deflate; client_max_window_bits");
    }

    #[test]
    fn client_offer_includes_every_configured_parameter() {
        let offer = client_offer(&config(true, false, None, Some(10)));
        assert_eq!(
            offer,
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=10"
        );
        let offer = client_offer(&config(true, true, Some(9), Some(12)));
        assert_eq!(
            offer,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9; client_max_window_bits=12"
        );
    }

    #[test]
    fn every_client_offer_is_accepted_by_the_server_and_its_answer_by_the_client() {
        let mut client_configs = Vec::new();
        for server_nct in [false, true] {
            for client_nct in [false, true] {
                for server_bits in [None, Some(8), Some(11), Some(15)] {
                    for client_bits in [None, Some(8), Some(11), Some(15)] {
                        client_configs.push(config(
                            server_nct,
                            client_nct,
                            server_bits,
                            client_bits,
                        ));
                    }
                }
            }
        }
        for client_cfg in client_configs {
            for server_cfg in [
                DeflateConfig::default(),
                config(true, true, Some(10), Some(9)),
                config(false, false, Some(12), None),
            ] {
                let offer = client_offer(&client_cfg);
                let (server_params, response) = negotiate(&server_cfg, &offer);
                assert_eq!(parse_params(&response), Ok(server_params), "{response}");
                let client_params = accept(&client_cfg, &response).expect(&response);
                // The client may be stricter with itself than the answer, never looser.
                assert_eq!(
                    client_params.server_max_window_bits,
                    server_params.server_max_window_bits
                );
                assert_eq!(
                    client_params.server_no_context_takeover,
                    server_params.server_no_context_takeover
                );
                assert!(
                    client_params.client_max_window_bits <= server_params.client_max_window_bits
                );
                assert!(
                    client_params.client_no_context_takeover
                        >= server_params.client_no_context_takeover
                );
                // And the two ends understand each other.
                let mut server = PerMessageDeflate::new(Role::Server, server_params, 6);
                let mut client = PerMessageDeflate::new(Role::Client, client_params, 6);
                for _ in 0..2 {
                    round_trip(&mut server, &mut client, HELLO, 3);
                    round_trip(&mut client, &mut server, HELLO, 3);
                }
            }
        }
    }

    // ----- negotiation: server side ------------------------------------------------------

    #[test]
    fn server_accepts_a_plain_offer_with_defaults() {
        let (agreed, response) = negotiate(&DeflateConfig::default(), "permessage-deflate");
        assert_eq!(agreed, DeflateParams::default());
        assert_eq!(response, "permessage-deflate");
    }

    #[test]
    fn server_accepts_server_no_context_takeover() {
        let offer = "permessage-deflate; server_no_context_takeover";
        let (agreed, response) = negotiate(&DeflateConfig::default(), offer);
        assert!(agreed.server_no_context_takeover && !agreed.client_no_context_takeover);
        assert_eq!(response, "permessage-deflate; server_no_context_takeover");
    }

    #[test]
    fn server_accepts_client_no_context_takeover() {
        let offer = "permessage-deflate; client_no_context_takeover";
        let (agreed, response) = negotiate(&DeflateConfig::default(), offer);
        assert!(agreed.client_no_context_takeover && !agreed.server_no_context_takeover);
        assert_eq!(response, "permessage-deflate; client_no_context_takeover");
    }

    #[test]
    fn server_applies_its_own_no_context_takeover_config() {
        let cfg = config(true, true, None, None);
        let (agreed, response) = negotiate(&cfg, "permessage-deflate");
        assert!(agreed.server_no_context_takeover && agreed.client_no_context_takeover);
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn server_honours_server_max_window_bits() {
        for bits in 8..=15u8 {
            let offer = format!("permessage-deflate; server_max_window_bits={bits}");
            let (agreed, response) = negotiate(&DeflateConfig::default(), &offer);
            assert_eq!(agreed.server_max_window_bits, bits);
            assert_eq!(response, offer);
        }
    }

    #[test]
    fn server_caps_server_max_window_bits_with_its_config() {
        let cfg = config(false, false, Some(10), None);
        let cases = [
            ("permessage-deflate; server_max_window_bits=12", 10),
            ("permessage-deflate; server_max_window_bits=9", 9),
            ("permessage-deflate", 10),
        ];
        for (offer, bits) in cases {
            let (agreed, response) = negotiate(&cfg, offer);
            assert_eq!(agreed.server_max_window_bits, bits);
            assert_eq!(
                response,
                format!("permessage-deflate; server_max_window_bits={bits}")
            );
        }
    }

    #[test]
    fn server_limits_the_client_window_only_when_the_client_advertised_it() {
        let cfg = config(false, false, None, Some(10));
        let cases = [
            ("permessage-deflate; client_max_window_bits", Some(10)),
            ("permessage-deflate; client_max_window_bits=12", Some(10)),
            ("permessage-deflate; client_max_window_bits=9", Some(9)),
            ("permessage-deflate", None),
        ];
        for (offer, bits) in cases {
            let (agreed, response) = negotiate(&cfg, offer);
            assert_eq!(agreed.client_max_window_bits, bits.unwrap_or(15), "{offer}");
            match bits {
                Some(bits) => {
                    assert_eq!(
                        response,
                        format!("permessage-deflate; client_max_window_bits={bits}")
                    )
                }
                None => assert_eq!(response, "permessage-deflate"),
            }
        }
    }

    #[test]
    fn server_echoes_the_client_window_hint() {
        let offer = "permessage-deflate; client_max_window_bits=11";
        let (agreed, response) = negotiate(&DeflateConfig::default(), offer);
        assert_eq!(agreed.client_max_window_bits, 11);
        assert_eq!(response, offer);
        let offer = "permessage-deflate; client_max_window_bits";
        let (agreed, response) = negotiate(&DeflateConfig::default(), offer);
        assert_eq!(agreed.client_max_window_bits, 15);
        assert_eq!(response, "permessage-deflate");
    }

    #[test]
    fn server_accepts_every_parameter_at_once() {
        let offer = "permessage-deflate; client_no_context_takeover; server_no_context_takeover; \
                     client_max_window_bits=12; server_max_window_bits=9";
        let (agreed, response) = negotiate(&DeflateConfig::default(), offer);
        assert_eq!(agreed, params(true, true, 9, 12));
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=9; client_max_window_bits=12"
        );
    }

    #[test]
    fn server_reads_quoted_values() {
        let cfg = DeflateConfig::default();
        let offer =
            r#"permessage-deflate; server_max_window_bits="10"; client_max_window_bits="1\2""#;
        let (agreed, _) = negotiate(&cfg, offer);
        assert_eq!(agreed, params(false, false, 10, 12));
    }

    #[test]
    fn server_tolerates_whitespace_and_case() {
        let offer = "  PerMessage-Deflate ;\tServer_Max_Window_Bits = 11 ;client_max_window_bits  ";
        let (agreed, response) = negotiate(&DeflateConfig::default(), offer);
        assert_eq!(agreed.server_max_window_bits, 11);
        assert_eq!(response, "permessage-deflate; server_max_window_bits=11");
    }

    #[test]
    fn server_picks_the_first_acceptable_offer() {
        let request = "x-webkit-deflate-frame, \
                       permessage-deflate; server_max_window_bits=10; client_max_window_bits, \
                       permessage-deflate; client_max_window_bits";
        let (agreed, response) = negotiate(&DeflateConfig::default(), request);
        assert_eq!(agreed.server_max_window_bits, 10);
        assert_eq!(response, "permessage-deflate; server_max_window_bits=10");
    }

    #[test]
    fn server_skips_offers_with_invalid_parameters() {
        let request = "permessage-deflate; server_max_window_bits=16, \
                       permessage-deflate; server_max_window_bits, \
                       permessage-deflate; server_max_window_bits=08, \
                       permessage-deflate; client_max_window_bits=7, \
                       permessage-deflate; server_no_context_takeover=1, \
                       permessage-deflate; server_no_context_takeover; server_no_context_takeover, \
                       permessage-deflate; mystery_parameter, \
                       permessage-deflate; server_max_window_bits=\"\", \
                       permessage-deflate; client_no_context_takeover";
        let (agreed, response) = negotiate(&DeflateConfig::default(), request);
        assert_eq!(agreed, params(false, true, 15, 15));
        assert_eq!(response, "permessage-deflate; client_no_context_takeover");
    }

    #[test]
    fn server_skips_malformed_offers() {
        let request = "permessage-deflate;, permessage-deflate server_no_context_takeover, \
                       ;permessage-deflate, permessage-deflate; =9, \
                       permessage-deflate; server_max_window_bits=\"9, permessage-deflate";
        // The unterminated quote swallows the rest of the header: nothing is acceptable.
        assert_eq!(
            server_negotiate(&DeflateConfig::default(), Some(request)),
            None
        );
        let request = "permessage-deflate;, permessage-deflate; x=\"a,b\", \
                       permessage-deflate; server_max_window_bits=\"9\"";
        let (agreed, _) = negotiate(&DeflateConfig::default(), request);
        assert_eq!(agreed.server_max_window_bits, 9);
    }

    #[test]
    fn server_ignores_commas_and_semicolons_inside_quoted_strings() {
        let request = r#"foo; bar="a,b;c\"d", permessage-deflate; server_no_context_takeover"#;
        let (agreed, _) = negotiate(&DeflateConfig::default(), request);
        assert!(agreed.server_no_context_takeover);
    }

    #[test]
    fn server_declines_without_an_acceptable_offer() {
        let cfg = DeflateConfig::default();
        assert_eq!(server_negotiate(&cfg, None), None);
        assert_eq!(server_negotiate(&cfg, Some("")), None);
        assert_eq!(server_negotiate(&cfg, Some(" , ,")), None);
        assert_eq!(server_negotiate(&cfg, Some("x-webkit-deflate-frame")), None);
        assert_eq!(
            server_negotiate(&cfg, Some("permessage-deflate; bogus")),
            None
        );
        assert_eq!(server_negotiate(&cfg, Some("permessage-deflate-x")), None);
    }

    #[test]
    fn server_declines_with_an_invalid_config() {
        let cfg = config(false, false, Some(16), None);
        assert_eq!(server_negotiate(&cfg, Some("permessage-deflate")), None);
    }

    #[test]
    fn server_answer_parses_back_to_the_same_params() {
        let offers = [
            "permessage-deflate",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_max_window_bits=15; client_max_window_bits=8",
            "permessage-deflate; client_max_window_bits",
        ];
        for cfg in [
            DeflateConfig::default(),
            config(true, false, Some(9), Some(11)),
        ] {
            for offer in offers {
                let (agreed, response) = negotiate(&cfg, offer);
                assert_eq!(parse_params(&response), Ok(agreed), "{response}");
            }
        }
    }

    // ----- negotiation: client side ------------------------------------------------------

    #[test]
    fn client_without_an_answer_gets_no_compression() {
        let cfg = DeflateConfig::default();
        assert_eq!(client_accept(&cfg, None), Ok(None));
        assert_eq!(client_accept(&cfg, Some("")), Ok(None));
        assert_eq!(client_accept(&cfg, Some(" ,  ")), Ok(None));
    }

    #[test]
    fn client_accepts_a_plain_answer_with_defaults() {
        let cfg = DeflateConfig::default();
        assert_eq!(
            accept(&cfg, "permessage-deflate"),
            Ok(DeflateParams::default())
        );
    }

    #[test]
    fn client_accepts_every_parameter() {
        let cfg = DeflateConfig::default();
        let cases = [
            (
                "permessage-deflate; server_no_context_takeover",
                params(true, false, 15, 15),
            ),
            (
                "permessage-deflate; client_no_context_takeover",
                params(false, true, 15, 15),
            ),
            (
                "permessage-deflate; server_max_window_bits=8",
                params(false, false, 8, 15),
            ),
            (
                "permessage-deflate; client_max_window_bits=9",
                params(false, false, 15, 9),
            ),
            (
                "permessage-deflate; client_max_window_bits=10; server_max_window_bits=12; \
                 client_no_context_takeover; server_no_context_takeover",
                params(true, true, 12, 10),
            ),
        ];
        for (response, expected) in cases {
            assert_eq!(accept(&cfg, response), Ok(expected), "{response}");
        }
    }

    #[test]
    fn client_accepts_quoted_values() {
        let response =
            r#"permessage-deflate; server_max_window_bits="10"; client_max_window_bits="1\1""#;
        assert_eq!(
            accept(&DeflateConfig::default(), response),
            Ok(params(false, false, 10, 11))
        );
    }

    #[test]
    fn client_accepts_a_smaller_server_window_than_asked() {
        let cfg = config(false, false, Some(12), None);
        let response = "permessage-deflate; server_max_window_bits=9";
        assert_eq!(accept(&cfg, response).unwrap().server_max_window_bits, 9);
        let response = "permessage-deflate; server_max_window_bits=12";
        assert_eq!(accept(&cfg, response).unwrap().server_max_window_bits, 12);
    }

    #[test]
    fn client_accepts_parameters_it_did_not_ask_for_but_may_receive() {
        // §7.1.1.1, §7.1.1.2, §7.1.2.1: the server may add these on its own.
        let cfg = DeflateConfig::default();
        let response =
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                        server_max_window_bits=10";
        assert_eq!(accept(&cfg, response), Ok(params(true, true, 10, 15)));
    }

    #[test]
    fn client_keeps_to_its_own_limits_when_the_server_does_not_echo_them() {
        let cfg = config(false, true, None, Some(10));
        assert_eq!(
            accept(&cfg, "permessage-deflate"),
            Ok(params(false, true, 15, 10))
        );
        let response = "permessage-deflate; client_max_window_bits=12";
        assert_eq!(accept(&cfg, response), Ok(params(false, true, 15, 10)));
        let response = "permessage-deflate; client_max_window_bits=9";
        assert_eq!(accept(&cfg, response), Ok(params(false, true, 15, 9)));
    }

    #[test]
    fn client_rejects_a_larger_server_window_than_asked() {
        let cfg = config(false, false, Some(10), None);
        let err = accept(&cfg, "permessage-deflate; server_max_window_bits=11").unwrap_err();
        assert_eq!(
            err,
            NegotiationError::ServerWindowTooLarge { asked: 10, got: 11 }
        );
        assert!(
            err.to_string().contains("server_max_window_bits=11"),
            "{err}"
        );
    }

    #[test]
    fn client_rejects_an_answer_without_the_server_window_it_asked_for() {
        let cfg = config(false, false, Some(10), None);
        let err = accept(&cfg, "permessage-deflate").unwrap_err();
        assert_eq!(err, NegotiationError::ServerWindowMissing(10));
    }

    #[test]
    fn client_rejects_an_answer_without_server_no_context_takeover_it_asked_for() {
        let cfg = config(true, false, None, None);
        let err = accept(&cfg, "permessage-deflate; client_no_context_takeover").unwrap_err();
        assert_eq!(err, NegotiationError::ServerNoContextTakeoverMissing);
        assert!(err.to_string().contains("server_no_context_takeover"));
    }

    #[test]
    fn client_rejects_an_extension_it_did_not_offer() {
        let cfg = DeflateConfig::default();
        let err = accept(&cfg, "x-webkit-deflate-frame").unwrap_err();
        assert_eq!(
            err,
            NegotiationError::UnexpectedExtension("x-webkit-deflate-frame".into())
        );
        let err = accept(&cfg, "permessage-deflate, foo; bar").unwrap_err();
        assert_eq!(err, NegotiationError::UnexpectedExtension("foo".into()));
    }

    #[test]
    fn client_rejects_permessage_deflate_twice() {
        let cfg = DeflateConfig::default();
        let err = accept(&cfg, "permessage-deflate, permessage-deflate").unwrap_err();
        assert_eq!(err, NegotiationError::DuplicateExtension);
    }

    #[test]
    fn client_rejects_unknown_parameters() {
        let err = accept(&DeflateConfig::default(), "permessage-deflate; level=9").unwrap_err();
        assert_eq!(err, NegotiationError::UnknownParameter("level".into()));
        assert!(err.to_string().contains("\"level\""), "{err}");
    }

    #[test]
    fn client_rejects_duplicate_parameters() {
        let cfg = DeflateConfig::default();
        let cases = [
            (
                "server_no_context_takeover",
                "server_no_context_takeover; server_no_context_takeover",
            ),
            (
                "client_no_context_takeover",
                "client_no_context_takeover; client_no_context_takeover",
            ),
            (
                "server_max_window_bits",
                "server_max_window_bits=9; server_max_window_bits=9",
            ),
            (
                "client_max_window_bits",
                "client_max_window_bits=9; client_max_window_bits=10",
            ),
        ];
        for (param, params) in cases {
            let err = accept(&cfg, &format!("permessage-deflate; {params}")).unwrap_err();
            assert_eq!(err, NegotiationError::DuplicateParameter(param));
        }
    }

    #[test]
    fn client_rejects_values_on_no_context_takeover() {
        let err = accept(
            &DeflateConfig::default(),
            "permessage-deflate; client_no_context_takeover=1",
        );
        assert_eq!(
            err,
            Err(NegotiationError::UnexpectedValue {
                param: "client_no_context_takeover",
                value: "1".into()
            })
        );
    }

    #[test]
    fn client_rejects_window_parameters_without_a_value() {
        let cfg = DeflateConfig::default();
        for param in ["server_max_window_bits", "client_max_window_bits"] {
            let err = accept(&cfg, &format!("permessage-deflate; {param}")).unwrap_err();
            assert_eq!(
                err,
                NegotiationError::MissingValue(Param::from_name(param).unwrap().name())
            );
            assert!(err.to_string().contains(param));
        }
    }

    #[test]
    fn client_rejects_bad_window_values() {
        let cfg = DeflateConfig::default();
        for value in [
            "7", "16", "0", "08", "010", "+9", "9.0", "abc", "1", "\"\"", "\"7\"",
        ] {
            for param in ["server_max_window_bits", "client_max_window_bits"] {
                let response = format!("permessage-deflate; {param}={value}");
                let err = accept(&cfg, &response).unwrap_err();
                match &err {
                    NegotiationError::InvalidWindowBits {
                        param: named,
                        value: got,
                    } => {
                        assert_eq!((*named, got.as_str()), (param, value.trim_matches('"')));
                    }
                    // An empty quoted-string is not a token.
                    NegotiationError::Malformed { .. } => assert_eq!(value, "\"\""),
                    _ => panic!("{response}: {err:?}"),
                }
                assert!(err.to_string().contains(param), "{err}");
            }
        }
    }

    #[test]
    fn client_rejects_malformed_answers() {
        let cfg = DeflateConfig::default();
        for response in [
            "permessage-deflate;",
            "permessage-deflate; ;server_no_context_takeover",
            "permessage-deflate server_no_context_takeover",
            "permessage-deflate; =9",
            "permessage-deflate; server_max_window_bits=",
            "permessage-deflate; server_max_window_bits=\"9",
            "permessage-deflate; server_max_window_bits=\"9\"x",
            "permessage-deflate; server_max_window_bits=\"9 \"",
            "\"permessage-deflate\"",
            "permessage-deflate; server_max_window_bits=9 10",
        ] {
            let err = accept(&cfg, response).unwrap_err();
            assert!(
                matches!(err, NegotiationError::Malformed { .. }),
                "{response}: {err:?}"
            );
        }
    }

    #[test]
    fn client_rejects_an_invalid_config() {
        let cfg = config(false, false, None, Some(20));
        let err = client_accept(&cfg, Some("permessage-deflate")).unwrap_err();
        assert!(matches!(err, NegotiationError::InvalidConfig { .. }));
    }

    #[test]
    fn parse_params_reads_a_negotiated_answer() {
        let response = "permessage-deflate; server_no_context_takeover; client_max_window_bits=9";
        assert_eq!(parse_params(response), Ok(params(true, false, 15, 9)));
        assert_eq!(
            parse_params("permessage-deflate"),
            Ok(DeflateParams::default())
        );
    }

    #[test]
    fn params_display_parses_back_to_the_same_params() {
        assert_eq!(DeflateParams::default().to_string(), "permessage-deflate");
        for server_nct in [false, true] {
            for client_nct in [false, true] {
                for server_bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
                    for client_bits in [8, 12, 15] {
                        let agreed = params(server_nct, client_nct, server_bits, client_bits);
                        assert_eq!(parse_params(&agreed.to_string()), Ok(agreed));
                    }
                }
            }
        }
        let agreed = params(true, false, 10, 15);
        assert_eq!(
            agreed.to_string(),
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10"
        );
    }

    #[test]
    fn parse_params_rejects_anything_else() {
        assert!(matches!(
            parse_params(""),
            Err(NegotiationError::NotNegotiated(_))
        ));
        assert!(matches!(
            parse_params("foo"),
            Err(NegotiationError::UnexpectedExtension(_))
        ));
        assert!(matches!(
            parse_params("permessage-deflate; client_max_window_bits"),
            Err(NegotiationError::MissingValue("client_max_window_bits"))
        ));
        assert!(matches!(
            parse_params("permessage-deflate; server_max_window_bits=99"),
            Err(NegotiationError::InvalidWindowBits { .. })
        ));
    }

    #[test]
    fn compaction_keeps_context_takeover_working_both_ways() {
        for bits in [8, 9, 12, 15] {
            let (mut server, mut client) = endpoints(params(false, false, bits, bits));
            // Independent peers that never compact: each checks the other side's compaction.
            let (mut plain_server, mut plain_client) = endpoints(params(false, false, bits, bits));
            let message = text_bytes(3000, u64::from(bits));
            round_trip(&mut server, &mut plain_client, &message, 512);
            round_trip(&mut plain_server, &mut client, &message, 512);
            assert!(!server.compact_if_idle(), "a message just went: not idle");
            assert!(
                server.compact_if_idle(),
                "nothing since the last call: idle"
            );
            assert!(!server.holds_state());
            assert!(!client.compact_if_idle());
            assert!(client.compact_if_idle());
            assert!(!client.holds_state());
            // The same message again refers back into the history kept across compaction.
            let tail = &message[message.len() - 200..];
            let again = round_trip(&mut server, &mut plain_client, tail, 512);
            assert!(again.len() < 40, "{bits} bits: {} bytes", again.len());
            round_trip(&mut plain_server, &mut client, tail, 7);
            for seed in 0..5 {
                let next = text_bytes(700, seed);
                round_trip(&mut server, &mut plain_client, &next, 100);
                round_trip(&mut plain_server, &mut client, &next, 100);
            }
        }
    }

    #[test]
    fn compaction_keeps_the_decompressor_of_a_message_in_progress() {
        let (mut server, mut client) = endpoints(params(false, false, 15, 15));
        let message = text_bytes(5000, 3);
        let wire = compressed(&mut server, &message);
        let (first, rest) = wire.split_at(wire.len() / 2);
        let mut out = Vec::new();
        client
            .decompress(first, false, None, &mut out)
            .expect("inflates");
        client.compact();
        assert!(client.holds_state(), "the message's decompressor stays");
        client
            .decompress(rest, true, None, &mut out)
            .expect("inflates");
        assert!(out == message);
    }

    #[test]
    fn history_is_kept_only_with_context_takeover_and_within_the_window() {
        let (mut server, mut client) = endpoints(params(true, false, 12, 9));
        let message = text_bytes(10_000, 5);
        round_trip(&mut server, &mut client, &message, 1000);
        round_trip(&mut client, &mut server, &message, 1000);
        assert!(
            server.sent_history.is_empty(),
            "no context takeover: nothing to keep"
        );
        assert_eq!(client.received_history.len(), 0);
        assert_eq!(
            client.sent_history.len(),
            512,
            "9 bits: served by a 512-byte window"
        );
        assert_eq!(server.received_history.len(), 512);
        assert!(server.received_history == message[message.len() - 512..]);
    }
}
