//! Negotiation: the offer, the answer and the agreed parameters (RFC 7692 §5, §7.1).

use std::fmt;

use super::syntax::{parse_element, trim_ows, Elements, ExtParam};
use super::{EXTENSION_NAME, MAX_LEVEL, MAX_WINDOW_BITS, MIN_WINDOW_BITS};

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
    /// Client: ask the server to reset its compressor after every message; an answer without
    /// `server_no_context_takeover` then fails [`client_accept`]. Server: reset this end's
    /// compressor after every message, and say so in the answer.
    pub server_no_context_takeover: bool,
    /// Client: reset this end's compressor after every message, and say so in the offer.
    /// Server: require the client to do so, in the answer.
    pub client_no_context_takeover: bool,
    /// Window bits (a window of 2^bits bytes) for the server's compressor. Client: the most
    /// the server may use; an answer with more, or without the parameter, fails
    /// [`client_accept`]. Server: the most this end uses, lowered to the client's request if
    /// that is smaller.
    pub server_max_window_bits: Option<u8>,
    /// Window bits (a window of 2^bits bytes) for the client's compressor. Client: the most
    /// this end uses, sent as the hint in its offer. Server: the most a client that
    /// advertises `client_max_window_bits` may use, lowered to the client's hint if that is
    /// smaller; clients that do not advertise it keep 15.
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
    /// The server resets its compressor after every message, so the client's decompressor
    /// starts every message afresh.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message, so the server's decompressor
    /// starts every message afresh.
    pub client_no_context_takeover: bool,
    /// Window bits of the server's compressor, 8..=15: its messages refer at most 2^bits
    /// bytes back. 15 (32 KiB) when the answer did not limit it.
    pub server_max_window_bits: u8,
    /// Window bits of the client's compressor, 8..=15, likewise.
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
///
/// [`DeflateConfig::validate`] (which [`client_accept`] runs first) gives
/// [`NegotiationError::InvalidConfig`]; reading an answer in [`client_accept`] or
/// [`parse_params`] gives the others. [`server_negotiate`] never fails: it skips offers it
/// cannot accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// A [`DeflateConfig`] field is out of range.
    #[error("invalid permessage-deflate configuration: {field} = {value} (expected {expected})")]
    InvalidConfig {
        /// The field's name, e.g. `"server_max_window_bits"` or `"level"`.
        field: &'static str,
        /// Its value.
        value: u32,
        /// The allowed range, e.g. `"8 to 15"`.
        expected: &'static str,
    },
    /// An element of the header value does not follow the extension grammar (RFC 6455 §9.1):
    /// no name, a parameter without `;`, a bad quoted-string, a quoted value that is not a
    /// token once unescaped.
    #[error("malformed Sec-WebSocket-Extensions element {element:?}: {reason}")]
    Malformed {
        /// The element, as received between commas (surrounding whitespace trimmed).
        element: String,
        /// What the parser expected or found.
        reason: &'static str,
    },
    /// The answer names an extension other than permessage-deflate, the only one offered.
    #[error("unexpected extension {0:?}: only permessage-deflate was offered")]
    UnexpectedExtension(String),
    /// The answer holds permessage-deflate more than once.
    #[error("permessage-deflate appears more than once in the response")]
    DuplicateExtension,
    /// [`parse_params`] was given a value with no extension at all (the whole value).
    #[error("no permessage-deflate extension in {0:?}")]
    NotNegotiated(String),
    /// A parameter that RFC 7692 §7.1 does not define (its name as received).
    #[error("unknown permessage-deflate parameter {0:?}")]
    UnknownParameter(String),
    /// The same parameter twice in one element (its name).
    #[error("duplicate permessage-deflate parameter {0}")]
    DuplicateParameter(&'static str),
    /// A value on `server_no_context_takeover` or `client_no_context_takeover`, which take
    /// none.
    #[error("permessage-deflate parameter {param} takes no value, got {value:?}")]
    UnexpectedValue {
        /// The parameter's name.
        param: &'static str,
        /// The value it was given, unquoted.
        value: String,
    },
    /// A window-bits parameter without a value where one is required: `server_max_window_bits`
    /// anywhere, `client_max_window_bits` in an answer (its name).
    #[error("permessage-deflate parameter {0} requires a value")]
    MissingValue(&'static str),
    /// A window-bits value that is not a decimal 8..=15 without leading zeros (RFC 7692
    /// §7.1.2).
    #[error(
        "invalid value {value:?} for permessage-deflate parameter {param} \
         (expected 8 to 15 without leading zeros)"
    )]
    InvalidWindowBits {
        /// The parameter's name.
        param: &'static str,
        /// The value it was given, unquoted.
        value: String,
    },
    /// The server will compress with a larger window than the client's
    /// [`DeflateConfig::server_max_window_bits`] allows.
    #[error("the server answered server_max_window_bits={got}, more than the {asked} asked for")]
    ServerWindowTooLarge {
        /// The client's limit, in window bits.
        asked: u8,
        /// The server's answer, in window bits.
        got: u8,
    },
    /// The client asked for `server_max_window_bits` (this value) and the answer does not
    /// carry it (RFC 7692 §7.1.2.1).
    #[error("the server did not answer server_max_window_bits although {0} was asked for")]
    ServerWindowMissing(u8),
    /// The client asked for `server_no_context_takeover` and the answer does not carry it
    /// (RFC 7692 §7.1.1.1).
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

pub(super) fn clamp_bits(bits: u8) -> u8 {
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
pub(super) enum Param {
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

    pub(super) fn name(self) -> &'static str {
        match self {
            Param::ServerNoContextTakeover => "server_no_context_takeover",
            Param::ClientNoContextTakeover => "client_no_context_takeover",
            Param::ServerMaxWindowBits => "server_max_window_bits",
            Param::ClientMaxWindowBits => "client_max_window_bits",
        }
    }

    pub(super) fn from_name(name: &str) -> Option<Param> {
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
