//! The syntax of a `Sec-WebSocket-Extensions` value (RFC 6455 §9.1, RFC 7230 §3.2.6 / §7):
//! elements, parameters, quoted-strings.

use std::borrow::Cow;

use super::NegotiationError;
use crate::handshake::is_tchar;

/// One extension element: `name *( OWS ";" OWS param [ OWS "=" OWS value ] )`.
pub(super) struct Extension<'a> {
    pub(super) name: &'a str,
    pub(super) params: Vec<ExtParam<'a>>,
}

pub(super) struct ExtParam<'a> {
    pub(super) name: &'a str,
    /// Unquoted; borrowed unless the quoted-string had escapes.
    pub(super) value: Option<Cow<'a, str>>,
}

fn is_ows(byte: u8) -> bool {
    byte == b' ' || byte == b'\t'
}

pub(super) fn trim_ows(s: &str) -> &str {
    s.trim_matches(|c| c == ' ' || c == '\t')
}

/// The comma-separated elements of a header value; commas inside quoted-strings don't split.
/// An unterminated quoted-string runs to the end of the value (and fails to parse there).
pub(super) struct Elements<'a> {
    rest: Option<&'a str>,
}

impl<'a> Elements<'a> {
    pub(super) fn new(value: &'a str) -> Self {
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

pub(super) fn parse_element(element: &str) -> Result<Extension<'_>, NegotiationError> {
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
