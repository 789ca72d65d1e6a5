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

mod compression;
mod negotiation;
mod syntax;

pub use compression::{DecompressError, PerMessageDeflate};
pub use negotiation::{
    client_accept, client_offer, parse_params, server_negotiate, DeflateConfig, DeflateParams,
    NegotiationError,
};

const EXTENSION_NAME: &str = "permessage-deflate";

const MIN_WINDOW_BITS: u8 = 8;
const MAX_WINDOW_BITS: u8 = 15;
const MAX_LEVEL: u32 = 9;

/// What a sync flush ends with and what RFC 7692 §7.2.1 strips from every message (LEN = 0 and
/// NLEN = 0xffff of an empty stored block); the receiver appends it back (§7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The smallest step by which the decompressor grows its output.
const MIN_INFLATE_STEP: usize = 1024;

#[cfg(test)]
mod tests;
