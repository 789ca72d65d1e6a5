//! Tests of permessage-deflate: the RFC 7692 vectors, round trips in both roles and every
//! window size, size limits and corrupt input, and the negotiation on both sides.

use super::negotiation::Param;
use super::*;
use crate::frame::Role;

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
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
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
                    client_configs.push(config(server_nct, client_nct, server_bits, client_bits));
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
            assert!(client_params.client_max_window_bits <= server_params.client_max_window_bits);
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
    let offer = r#"permessage-deflate; server_max_window_bits="10"; client_max_window_bits="1\2""#;
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
    let response = "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
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

#[test]
fn a_server_lends_its_state_after_each_message_and_takes_it_back_unchanged() {
    let (mut server, mut client) = endpoints(params(false, false, 12, 12));
    let message = text_bytes(3000, 21);
    round_trip(&mut server, &mut client, &message, 700);
    round_trip(&mut client, &mut server, &message, 700);
    assert!(!server.owns_state(), "lent back after the message");
    assert!(server.holds_state(), "this thread keeps it as it was");
    assert!(client.owns_state(), "a client keeps its own");
    // Taken back as it was: the same message again refers back into the last one.
    let fresh = compressed(
        &mut PerMessageDeflate::new(Role::Client, params(false, false, 12, 12), 6),
        &message,
    );
    let again = round_trip(&mut server, &mut client, &message, 700);
    assert!(
        again.len() * 5 < fresh.len(),
        "{} bytes, {} without",
        again.len(),
        fresh.len()
    );
    round_trip(&mut client, &mut server, &message, usize::MAX);
    assert!(server.compact_if_idle() || server.compact_if_idle());
    assert!(!server.holds_state(), "compaction frees what it lent too");
}

#[test]
fn more_busy_servers_than_spares_in_one_thread_keep_context_takeover() {
    let count = super::compression::SPARES_KEPT * 2 + 1;
    let mut pairs: Vec<_> = (0..count)
        .map(|_| endpoints(params(false, false, 12, 12)))
        .collect();
    let message = |index: usize, round: u64| text_bytes(2000, index as u64 * 10 + round % 2);
    for round in 0..4 {
        // Each takes a state another lent (reset and given its history) or its own.
        for (index, (server, client)) in pairs.iter_mut().enumerate() {
            round_trip(server, client, &message(index, round), 500);
            round_trip(client, server, &message(index, round), 500);
        }
    }
    for (index, (server, client)) in pairs.iter_mut().enumerate() {
        // Repeating each connection's last message refers back into it, both ways.
        // (A message alone compresses to about half its size.)
        let wire = round_trip(server, client, &message(index, 3), 500);
        assert!(wire.len() < 2000 / 5, "{index}: {} bytes", wire.len());
        let wire = round_trip(client, server, &message(index, 3), 500);
        assert!(wire.len() < 2000 / 5, "{index}: {} bytes", wire.len());
    }
}

#[test]
fn a_server_that_went_on_in_another_thread_does_not_take_back_its_stale_state() {
    let (mut server, mut client) = endpoints(params(false, false, 12, 12));
    round_trip(&mut server, &mut client, &text_bytes(3000, 31), 1000);
    round_trip(&mut client, &mut server, &text_bytes(3000, 31), 1000);
    let second = text_bytes(3000, 32);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            round_trip(&mut server, &mut client, &second, 1000);
            round_trip(&mut client, &mut server, &second, 1000);
        });
    });
    // This thread still keeps the states lent after the first message: no longer the
    // connection's context, so they are reset and given the history, not taken as they are.
    assert!(!server.holds_state());
    let wire = round_trip(&mut server, &mut client, &second, 1000);
    assert!(wire.len() < 3000 / 5, "{} bytes", wire.len());
    let wire = round_trip(&mut client, &mut server, &second, 1000);
    assert!(wire.len() < 3000 / 5, "{} bytes", wire.len());
}
