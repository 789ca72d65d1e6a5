//! Helpers shared by the fuzz targets: reading a configuration from the front of an input,
//! cutting the rest into chunks at input-chosen points, a masking-key source with known
//! output, and [`model`], an independent reference for what the engine must accept.

pub mod model;

use wschannel::deflate::{parse_params, DeflateConfig, DeflateParams};
use wschannel::handshake::Limits;
use wschannel::Role;

/// Reads configuration bytes from the front of a fuzz input; past its end every read is 0,
/// so any input, even an empty one, decodes to some configuration.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// A chunk plan: a count byte (low 4 bits), then that many length bytes.
    pub fn plan(&mut self) -> &'a [u8] {
        let count = usize::from(self.byte() & 0x0f);
        self.take(count)
    }

    /// Handshake limits from two bytes: a head of 64 B to 16 KiB, 1 to 64 header lines.
    pub fn limits(&mut self) -> Limits {
        Limits {
            max_header_size: 64 * (usize::from(self.byte()) + 1),
            max_headers: 1 + usize::from(self.byte() % 64),
        }
    }

    pub fn rest(self) -> &'a [u8] {
        self.data
    }
}

/// Cuts `data` into pieces whose lengths cycle through `plan` (a length of 0 makes an empty
/// piece). With an empty plan, or once a whole cycle has made no progress, the rest comes
/// as one piece. Always ends with every byte handed out.
pub struct Chunks<'a> {
    data: &'a [u8],
    plan: &'a [u8],
    next: usize,
    idle: usize,
}

impl<'a> Chunks<'a> {
    pub fn new(data: &'a [u8], plan: &'a [u8]) -> Self {
        Chunks {
            data,
            plan,
            next: 0,
            idle: 0,
        }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.data.is_empty() && self.idle > 0 {
            return None;
        }
        let len = if self.plan.is_empty() || self.idle > self.plan.len() {
            self.data.len()
        } else {
            let len = usize::from(self.plan[self.next % self.plan.len()]);
            self.next += 1;
            len.min(self.data.len())
        };
        if len == 0 {
            self.idle += 1;
        } else {
            self.idle = 0;
        }
        let (piece, rest) = self.data.split_at(len);
        self.data = rest;
        if self.data.is_empty() {
            // One more call may still hand out an empty piece, then the iterator ends.
            self.idle = self.idle.max(1);
        }
        Some(piece)
    }
}

/// Whether an HTTP header list (name, value) has, across all lines of `name`, a
/// comma-separated item equal to `token` (ASCII case-insensitive). Written here, apart from
/// the handshake module, to check what it accepted.
pub fn header_has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// The values of every line of header `name`.
pub fn header_values<'h>(headers: &'h [(String, String)], name: &'h str) -> Vec<&'h str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Standard base64 decoding (RFC 4648 §4, padding required), written here to check the
/// handshake's key validation independently.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (i, quad) in bytes.chunks(4).enumerate() {
        let last = i + 1 == bytes.len() / 4;
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut word = 0u32;
        for &c in &quad[..4 - pad] {
            word = (word << 6) | value(c)?;
        }
        word <<= 6 * pad as u32;
        let decoded = word.to_be_bytes();
        // Non-canonical trailing bits (e.g. "AB==") are refused, as the base64 crate does.
        if (pad == 1 && decoded[3] != 0) || (pad == 2 && (decoded[2] != 0 || decoded[3] != 0)) {
            return None;
        }
        out.extend_from_slice(&decoded[1..4 - pad]);
    }
    Some(out)
}

/// A permessage-deflate configuration from two input bytes: `flags` bits 0-1 no context
/// takeover (server, client), bits 2-3 whether a window limit is set (server, client);
/// `bits` the limits, 8 + (b & 7) and 8 + (b >> 4 & 7).
pub fn deflate_config(flags: u8, bits: u8) -> DeflateConfig {
    DeflateConfig {
        server_no_context_takeover: flags & 1 != 0,
        client_no_context_takeover: flags & 2 != 0,
        server_max_window_bits: (flags & 4 != 0).then_some(8 + (bits & 7)),
        client_max_window_bits: (flags & 8 != 0).then_some(8 + (bits >> 4 & 7)),
        level: 6,
    }
}

/// Agreed params are in range, keep the limits this end configured, and print as a header
/// value that reads back to themselves.
pub fn check_params(cfg: &DeflateConfig, params: DeflateParams, side: Role) {
    let bits = [params.server_max_window_bits, params.client_max_window_bits];
    assert!(bits.iter().all(|b| (8..=15).contains(b)), "{params:?}");
    assert!(params.server_no_context_takeover >= cfg.server_no_context_takeover);
    assert!(params.client_no_context_takeover >= cfg.client_no_context_takeover);
    if let Some(max) = cfg.server_max_window_bits {
        assert!(
            params.server_max_window_bits <= max,
            "{params:?} for {cfg:?}"
        );
    }
    if side == Role::Client {
        // A server imposes its client limit only on clients that advertise the parameter;
        // a client keeps to its own either way.
        if let Some(max) = cfg.client_max_window_bits {
            assert!(
                params.client_max_window_bits <= max,
                "{params:?} for {cfg:?}"
            );
        }
    }
    assert_eq!(parse_params(&params.to_string()), Ok(params));
}
