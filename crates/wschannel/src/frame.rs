//! RFC 6455 §5.2 framing: opcodes, frame headers and their length encodings.

use std::mem::MaybeUninit;

use crate::mask::copy_masked;

/// Which end of the connection this engine plays (RFC 6455 §5.1: clients mask, servers don't).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The end that opened the connection: it masks every frame it sends and refuses masked
    /// frames from the server.
    Client,
    /// The end that accepted the connection: it sends unmasked frames and requires every
    /// frame from the client to be masked.
    Server,
}

/// Frame opcodes (RFC 6455 §5.2, §11.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpCode {
    /// `0x0`: a later fragment of the message that a Text or Binary frame began.
    Continuation = 0x0,
    /// `0x1`: the first (or only) frame of a text message, whose payload is UTF-8 once the
    /// message is complete.
    Text = 0x1,
    /// `0x2`: the first (or only) frame of a binary message.
    Binary = 0x2,
    /// `0x8`: a Close frame; its payload is empty or a 2-byte status code then a UTF-8 reason.
    Close = 0x8,
    /// `0x9`: a Ping, which the peer answers with a Pong carrying the same payload.
    Ping = 0x9,
    /// `0xA`: a Pong, the answer to a Ping (or an unsolicited heartbeat).
    Pong = 0xA,
}

impl OpCode {
    /// The opcode for the low four bits of a frame's first byte; `None` if reserved.
    pub fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Control frames have the high bit of the opcode set (RFC 6455 §5.5).
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A parsed frame header (RFC 6455 §5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// FIN: this is the last frame of its message (always set on control frames).
    pub fin: bool,
    /// RSV1: set on the first frame of a compressed message when permessage-deflate is in
    /// use (RFC 7692 §6); the engine fails the connection (1002) when it appears elsewhere.
    pub rsv1: bool,
    /// RSV2: no extension here uses it; the engine fails the connection (1002) when it is set.
    pub rsv2: bool,
    /// RSV3: no extension here uses it; the engine fails the connection (1002) when it is set.
    pub rsv3: bool,
    /// The raw opcode bits; [`OpCode::from_bits`] tells whether they are reserved.
    pub opcode: u8,
    /// The 4-byte masking key, present exactly when the MASK bit is set (every frame a client
    /// sends, none that a server sends).
    pub mask: Option<[u8; 4]>,
    /// The payload length in bytes, as the header states it. [`Header::parse`] reads any
    /// 64-bit value; the engine refuses one above [`crate::engine::MAX_PAYLOAD_LEN`] (the most
    /// significant bit must be 0, RFC 6455 §5.2) before its own size limits.
    pub len: u64,
}

/// The most bytes a header can take: 2 + 8 (64-bit length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;

/// How many header bytes a frame needs, known from its first two bytes.
pub fn header_len(first_two: [u8; 2]) -> usize {
    let lengths = match first_two[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if first_two[1] & 0x80 != 0 { 4 } else { 0 };
    2 + lengths + mask
}

impl Header {
    /// Parses a header from the start of `buf`.
    ///
    /// Returns `None` ("not enough data yet") without consuming anything when `buf` is
    /// shorter than the header; otherwise the header and how many bytes it took.
    pub fn parse(buf: &[u8]) -> Option<(Header, usize)> {
        if buf.len() < 2 {
            return None;
        }
        let need = header_len([buf[0], buf[1]]);
        if buf.len() < need {
            return None;
        }
        let (len, mut at) = match buf[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
            127 => (
                u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes")),
                10,
            ),
            n => (u64::from(n), 2),
        };
        let mask = if buf[1] & 0x80 != 0 {
            let key = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
            at += 4;
            Some(key)
        } else {
            None
        };
        let header = Header {
            fin: buf[0] & 0x80 != 0,
            rsv1: buf[0] & 0x40 != 0,
            rsv2: buf[0] & 0x20 != 0,
            rsv3: buf[0] & 0x10 != 0,
            opcode: buf[0] & 0x0f,
            mask,
            len,
        };
        Some((header, at))
    }

    /// Encodes the header into `out`, returning how many bytes it took.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7)
            | (u8::from(self.rsv1) << 6)
            | (u8::from(self.rsv2) << 5)
            | (u8::from(self.rsv3) << 4)
            | (self.opcode & 0x0f);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut at = if self.len < 126 {
            out[1] = mask_bit | self.len as u8;
            2
        } else if let Ok(len) = u16::try_from(self.len) {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&len.to_be_bytes());
            4
        } else {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&self.len.to_be_bytes());
            10
        };
        if let Some(key) = self.mask {
            out[at..at + 4].copy_from_slice(&key);
            at += 4;
        }
        at
    }
}

/// One outgoing frame, ready to be written into a buffer of [`OutFrame::len`] bytes.
#[derive(Debug)]
pub struct OutFrame<'a> {
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    mask: Option<[u8; 4]>,
    payload: &'a [u8],
}

impl<'a> OutFrame<'a> {
    /// A final frame (FIN set) of `opcode` carrying `payload`, masked with `mask` if given.
    pub fn new(opcode: OpCode, rsv1: bool, payload: &'a [u8], mask: Option<[u8; 4]>) -> Self {
        Self::fragment(opcode, rsv1, true, payload, mask)
    }

    /// A frame of `opcode` with FIN set as `fin` says (a data message's fragment, RFC 6455
    /// §5.4), carrying `payload`, masked with `mask` if given.
    pub fn fragment(
        opcode: OpCode,
        rsv1: bool,
        fin: bool,
        payload: &'a [u8],
        mask: Option<[u8; 4]>,
    ) -> Self {
        let header = Header {
            fin,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode: opcode as u8,
            mask,
            len: payload.len() as u64,
        };
        let mut bytes = [0; MAX_HEADER_LEN];
        let header_len = header.encode(&mut bytes);
        OutFrame {
            header: bytes,
            header_len,
            mask,
            payload,
        }
    }

    /// The frame's size on the wire.
    pub fn len(&self) -> usize {
        self.header_len + self.payload.len()
    }

    /// Always false: a frame has at least a two-byte header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The header and the payload as they go on the wire, when the frame is not masked
    /// (a masked frame's payload must be copied to be masked: use [`OutFrame::write_to`]).
    pub fn unmasked_parts(&self) -> Option<(&[u8], &'a [u8])> {
        match self.mask {
            None => Some((&self.header[..self.header_len], self.payload)),
            Some(_) => None,
        }
    }

    /// Writes the frame into `out`, which must be exactly [`OutFrame::len`] bytes.
    pub fn write_to(&self, out: &mut [u8]) {
        // SAFETY: u8 and MaybeUninit<u8> have the same layout, and `write_uninit` only
        // writes initialised bytes.
        let out = unsafe {
            std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<MaybeUninit<u8>>(), out.len())
        };
        self.write_uninit(out);
    }

    /// Writes the frame into `out` (exactly [`OutFrame::len`] bytes), initialising all of it;
    /// a masked payload is copied and masked in one pass.
    fn write_uninit(&self, out: &mut [MaybeUninit<u8>]) {
        let (head, body) = out.split_at_mut(self.header_len);
        for (slot, byte) in head.iter_mut().zip(&self.header[..self.header_len]) {
            slot.write(*byte);
        }
        match self.mask {
            Some(key) => copy_masked(body, self.payload, key, 0),
            None => {
                // SAFETY: as above; copying initialised bytes in.
                let body = unsafe {
                    std::slice::from_raw_parts_mut(body.as_mut_ptr().cast::<u8>(), body.len())
                };
                body.copy_from_slice(self.payload);
            }
        }
    }

    /// The frame as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.append_to(&mut out);
        out
    }

    /// Appends the frame to `out`.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        let len = self.len();
        out.reserve(len);
        let start = out.len();
        self.write_uninit(&mut out.spare_capacity_mut()[..len]);
        // SAFETY: write_uninit initialised the `len` bytes after the old length.
        unsafe { out.set_len(start + len) };
    }
}

/// A text message as a server's uncompressed, unmasked frame: the same bytes suit every
/// connection whose [`Connection::accepts_shared_frames`](crate::Connection::accepts_shared_frames)
/// is true, so a broadcast encodes its message once. Count it on each connection it is
/// written to with [`Connection::count_shared_frame`](crate::Connection::count_shared_frame).
pub fn shared_text(text: &str) -> OutFrame<'_> {
    OutFrame::new(OpCode::Text, false, text.as_bytes(), None)
}

/// A binary message as a server's shared frame, like [`shared_text`].
pub fn shared_binary(data: &[u8]) -> OutFrame<'_> {
    OutFrame::new(OpCode::Binary, false, data, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> (Header, usize) {
        Header::parse(bytes).expect("complete header")
    }

    #[test]
    fn unmasked_text_hello_parses_and_serializes() {
        // RFC 6455 §5.7: a single-frame unmasked text message "Hello".
        let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, used) = parse_all(&wire);
        assert_eq!(used, 2);
        assert!(h.fin && !h.rsv1 && h.mask.is_none());
        assert_eq!((h.opcode, h.len), (0x1, 5));
        assert_eq!(
            OutFrame::new(OpCode::Text, false, b"Hello", None).to_vec(),
            wire
        );
    }

    #[test]
    fn masked_text_hello_parses_and_serializes() {
        let wire = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, used) = parse_all(&wire);
        assert_eq!(used, 6);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        let frame = OutFrame::new(
            OpCode::Text,
            false,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(frame.to_vec(), wire);
    }

    #[test]
    fn fragments_of_hello_parse_with_fin_and_continuation() {
        let (first, _) = parse_all(&[0x01, 0x03, 0x48, 0x65, 0x6c]);
        let (last, _) = parse_all(&[0x80, 0x02, 0x6c, 0x6f]);
        assert!(!first.fin && first.opcode == 0x1);
        assert!(last.fin && last.opcode == 0x0);
    }

    #[test]
    fn ping_with_hello_parses_and_serializes() {
        let wire = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(parse_all(&wire).0.opcode, 0x9);
        assert_eq!(
            OutFrame::new(OpCode::Ping, false, b"Hello", None).to_vec(),
            wire
        );
    }

    #[test]
    fn sixteen_bit_length_parses_and_serializes() {
        // RFC 6455 §5.7: 256 bytes binary in a single unmasked frame.
        let payload = vec![0u8; 256];
        let wire = OutFrame::new(OpCode::Binary, false, &payload, None).to_vec();
        assert_eq!(&wire[..4], &[0x82, 0x7e, 0x01, 0x00]);
        let (h, used) = parse_all(&wire);
        assert_eq!((h.len, used), (256, 4));
    }

    #[test]
    fn sixty_four_bit_length_parses_and_serializes() {
        // RFC 6455 §5.7: 64 KiB binary in a single unmasked frame.
        let payload = vec![0u8; 65536];
        let wire = OutFrame::new(OpCode::Binary, false, &payload, None).to_vec();
        assert_eq!(&wire[..10], &[0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
        let (h, used) = parse_all(&wire);
        assert_eq!((h.len, used), (65536, 10));
    }

    #[test]
    fn length_boundaries_use_the_shortest_encoding() {
        for (len, header) in [(125usize, 2usize), (126, 4), (65535, 4), (65536, 10)] {
            let payload = vec![1u8; len];
            let wire = OutFrame::new(OpCode::Binary, false, &payload, None).to_vec();
            assert_eq!(wire.len(), header + len, "length {len}");
            assert_eq!(parse_all(&wire).0.len, len as u64);
        }
    }

    #[test]
    fn reserved_bits_and_opcodes_are_reported() {
        let (h, _) = parse_all(&[0xf3, 0x00]);
        assert!(h.rsv1 && h.rsv2 && h.rsv3);
        assert_eq!(OpCode::from_bits(h.opcode), None);
        for bits in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(OpCode::from_bits(bits), None);
        }
    }

    #[test]
    fn compressed_frame_sets_rsv1() {
        let wire = OutFrame::new(OpCode::Text, true, &[0xf2, 0x48], None).to_vec();
        assert_eq!(wire[0], 0xc1);
    }

    #[test]
    fn short_input_is_not_enough_data_and_consumes_nothing() {
        let wire = [0x82, 0xfe, 0x01, 0x00, 1, 2, 3, 4];
        for cut in 0..wire.len() {
            assert_eq!(Header::parse(&wire[..cut]), None, "cut at {cut}");
        }
        assert_eq!(parse_all(&wire).1, 8);
    }
}
