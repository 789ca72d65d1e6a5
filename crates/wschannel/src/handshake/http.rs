//! The bits of HTTP/1.1 both sides share: tokens, header checks and lookups, the body-framing
//! headers a head with no body must not carry, and the buffer a head accumulates in.

use super::HandshakeError;

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

pub(super) fn check_header_value(name: &str, value: &str) -> Result<(), HandshakeError> {
    if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0')) {
        Err(HandshakeError::InvalidHeaderValue(name.to_owned()))
    } else {
        Ok(())
    }
}

pub(super) fn check_header(name: &str, value: &str) -> Result<(), HandshakeError> {
    check_header_name(name)?;
    check_header_value(name, value)
}

pub(super) fn check_protocol(protocol: &str) -> Result<(), HandshakeError> {
    if is_token(protocol) {
        Ok(())
    } else {
        Err(HandshakeError::InvalidProtocol(protocol.to_owned()))
    }
}

pub(super) fn write_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Values of every line of header `name` (case-insensitive), in order.
pub(super) fn values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// All comma-separated, trimmed, non-empty items of header `name`, across repeated lines.
pub(super) fn list_items<'a>(headers: &'a [(String, String)], name: &'a str) -> Vec<&'a str> {
    values(headers, name)
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

/// Whether header `name` has an item equal (case-insensitive) to `token`.
pub(super) fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    list_items(headers, name)
        .iter()
        .any(|item| item.eq_ignore_ascii_case(token))
}

/// Trimmed, non-empty values of header `name` joined with ", ", or None if there are none.
pub(super) fn joined(headers: &[(String, String)], name: &str) -> Option<String> {
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

pub(super) fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
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
pub(super) fn raw_values<'h, 'b>(
    headers: &'h [httparse::Header<'b>],
    name: &'h str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// Whether a head has a line feed that does not follow a carriage return.
pub(super) fn has_bare_lf(head: &[u8]) -> bool {
    head.first() == Some(&b'\n') || head.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r')
}

/// Why a head that can have no body (an upgrade request, a 101 response) is refused: the
/// bytes after it are WebSocket frames, so any header that frames a body (RFC 9112 §6) would
/// make a reader that honours it see the frames as a body, or the body as frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyProblem {
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
    pub(super) fn find(headers: &[httparse::Header<'_>]) -> Option<BodyProblem> {
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
    pub(super) fn in_request(self) -> &'static str {
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
    pub(super) fn in_response(self) -> &'static str {
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
pub(super) struct HeadBuffer {
    buf: Vec<u8>,
}

impl HeadBuffer {
    /// Appends `data` and returns the slice worth parsing (at most the first `max` bytes), or
    /// None when the new data cannot have changed the outcome of a parse.
    ///
    /// A head only ends with a line feed, and a malformed line shows once its line has
    /// arrived, so parsing only when new data holds a line feed bounds the work by the
    /// number of lines rather than by the number of calls (one byte at a time stays linear).
    pub(super) fn push(&mut self, data: &[u8], max: usize) -> Option<&[u8]> {
        self.buf.extend_from_slice(data);
        if data.contains(&b'\n') {
            Some(&self.buf[..self.buf.len().min(max)])
        } else {
            None
        }
    }

    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn leftover(&self, head_len: usize) -> Vec<u8> {
        self.buf[head_len..].to_vec()
    }
}
