//! The permessage-deflate decompressor (`PerMessageDeflate::decompress`) with a size limit.
//!
//! Raw mode: arbitrary bytes as compressed fragments; no panic, the output never passes
//! the limit (one byte over it at most, on `TooBig`) and its buffer never grows past it.
//! Round-trip mode: messages compressed by a peer (the other role, same params) come back
//! exactly, across context takeover, small windows and `compact()` on either side, and a
//! message fails with `TooBig` exactly when it is longer than the limit.
//!
//! Input: 6 configuration bytes, a chunk plan (see `Input::plan`), then the data.
//!   0: bit 0 round trip, 1 receiver is the client, 2 server_no_context_takeover,
//!      3 client_no_context_takeover, 4 no limit; level (bits 5-7 + byte 5 >> 4) % 10
//!   1: window bits: server 8 + (b & 7), client 8 + (b >> 4 & 7)
//!   2-3: limit (big-endian)
//!   4: raw mode: bit i set = piece i (mod 8) ends a message;
//!      round trip: bit i set = compact the sender (even i) / receiver (odd i) before
//!      message i / 2 (mod 4)
//!   5: round trip: fragment size of the compressed message (low 4 bits squared; 0: whole)
#![no_main]

use wschannel::deflate::{DecompressError, DeflateParams, PerMessageDeflate};
use wschannel::Role;
use libfuzzer_sys::fuzz_target;
use wschannel_fuzz::{Chunks, Input};

fn decompress(
    d: &mut PerMessageDeflate,
    piece: &[u8],
    fin: bool,
    limit: Option<usize>,
    out: &mut Vec<u8>,
) -> Result<(), DecompressError> {
    let result = d.decompress(piece, fin, limit, out);
    if let Some(max) = limit {
        let most = if result.is_ok() { max } else { max + 1 };
        assert!(
            out.len() <= most,
            "{} bytes out, limit {max}: {result:?}",
            out.len()
        );
        assert!(
            out.capacity() <= max + 1,
            "{} bytes reserved, limit {max}",
            out.capacity()
        );
    }
    result
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (flags, bits) = (input.byte(), input.byte());
    let limit = (flags & 0x10 == 0).then_some(usize::from(input.u16()));
    let (marks, fragment) = (input.byte(), input.byte());
    let plan = input.plan();
    let stream = input.rest();

    let params = DeflateParams {
        server_no_context_takeover: flags & 4 != 0,
        client_no_context_takeover: flags & 8 != 0,
        server_max_window_bits: 8 + (bits & 7),
        client_max_window_bits: 8 + (bits >> 4 & 7),
    };
    let (role, peer) = if flags & 2 != 0 {
        (Role::Client, Role::Server)
    } else {
        (Role::Server, Role::Client)
    };
    let level = (u32::from(flags >> 5) + u32::from(fragment >> 4)) % 10;
    let fragment = usize::from(fragment & 0x0f) * usize::from(fragment & 0x0f);
    let mut receiver = PerMessageDeflate::new(role, params, level);

    if flags & 1 == 0 {
        let mut out = Vec::new();
        let mut fin = true;
        for (i, piece) in Chunks::new(stream, plan).enumerate() {
            fin = marks >> (i % 8) & 1 != 0;
            if decompress(&mut receiver, piece, fin, limit, &mut out).is_err() {
                return;
            }
            if fin {
                out = Vec::new();
            }
        }
        if !fin {
            let _ = decompress(&mut receiver, &[], true, limit, &mut out);
        }
        return;
    }

    let mut sender = PerMessageDeflate::new(peer, params, level);
    let mut compressed = Vec::new();
    for (i, message) in Chunks::new(stream, plan).enumerate() {
        if marks >> (2 * (i % 4)) & 1 != 0 {
            sender.compact();
        }
        if marks >> (2 * (i % 4) + 1) & 1 != 0 {
            receiver.compact();
        }
        compressed.clear();
        sender.compress(message, &mut compressed);
        let step = if fragment == 0 {
            compressed.len().max(1)
        } else {
            fragment
        };
        let pieces: Vec<&[u8]> = if compressed.is_empty() {
            vec![&[]]
        } else {
            compressed.chunks(step).collect()
        };
        let mut out = Vec::new();
        let mut result = Ok(());
        for (j, piece) in pieces.iter().enumerate() {
            result = decompress(&mut receiver, piece, j + 1 == pieces.len(), limit, &mut out);
            if result.is_err() {
                break;
            }
        }
        match limit {
            Some(max) if message.len() > max => {
                assert_eq!(
                    result,
                    Err(DecompressError::TooBig),
                    "{} > {max}",
                    message.len()
                );
                return;
            }
            _ => {
                assert_eq!(result, Ok(()), "message {i} of {} bytes", message.len());
                assert!(out == message, "message {i} came back different");
            }
        }
    }
});
