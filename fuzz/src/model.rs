//! A reference reading of an incoming byte stream (RFC 6455 §5, §7; RFC 7692 §6), written
//! apart from the engine and kept simple rather than fast: its own header parser, lengths
//! and sums in `u128` (so nothing wraps), whole-prefix UTF-8 checks.
//!
//! Fed the same bytes as the engine, it says which events the engine must have delivered
//! and the first point where the engine must have failed, with the close codes that fit.
//! It cannot inflate: of a compressed message it knows the type, not the content, and the
//! engine may fail one (1007, 1009) for reasons it cannot see.

use std::ops::Range;

use wschannel::Role;

/// A frame header, parsed here without the engine's code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawHeader {
    pub fin: bool,
    pub rsv1: bool,
    pub rsv2: bool,
    pub rsv3: bool,
    pub opcode: u8,
    pub key: Option<[u8; 4]>,
    pub len: u64,
    /// Bytes the header took.
    pub size: usize,
}

/// Parses a header at the start of `buf`; `None` while it is incomplete.
pub fn parse_header(buf: &[u8]) -> Option<RawHeader> {
    let (&b0, rest) = buf.split_first()?;
    let (&b1, mut rest) = rest.split_first()?;
    let mut size = 2;
    let len = match b1 & 0x7f {
        126 => {
            let bytes = rest.get(..2)?;
            rest = &rest[2..];
            size += 2;
            bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b))
        }
        127 => {
            let bytes = rest.get(..8)?;
            rest = &rest[8..];
            size += 8;
            bytes.iter().fold(0u64, |acc, &b| acc << 8 | u64::from(b))
        }
        n => u64::from(n),
    };
    let key = if b1 & 0x80 != 0 {
        let k = rest.get(..4)?;
        size += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    Some(RawHeader {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        rsv2: b0 & 0x20 != 0,
        rsv3: b0 & 0x10 != 0,
        opcode: b0 & 0x0f,
        key,
        len,
        size,
    })
}

/// XORs `data` with `key`, the first byte being at `offset` in the payload.
pub fn unmask(data: &mut [u8], key: [u8; 4], offset: u64) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[((offset + i as u64) % 4) as usize];
    }
}

/// Splits one complete frame off the front of `buf`: header and unmasked payload.
pub fn parse_frame(buf: &[u8]) -> Option<(RawHeader, Vec<u8>, usize)> {
    let h = parse_header(buf)?;
    let end = h.size.checked_add(usize::try_from(h.len).ok()?)?;
    let mut payload = buf.get(h.size..end)?.to_vec();
    if let Some(key) = h.key {
        unmask(&mut payload, key, 0);
    }
    Some((h, payload, end))
}

/// RFC 6455 §7.4.1 and the IANA registry: codes a close frame may carry.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// What the engine must deliver, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// A data message; `payload` is `None` when it was compressed (content unknown here).
    Message {
        text: bool,
        payload: Option<Vec<u8>>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close {
        code: u16,
        reason: String,
    },
}

/// The first violation in the stream: the engine must have failed once it has read
/// `at` bytes, with one of `codes`.
#[derive(Clone, Debug)]
pub struct Violation {
    pub at: usize,
    pub codes: Vec<u16>,
    pub what: String,
}

/// The limits and extensions the engine was configured with.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    pub role: Role,
    pub deflate: bool,
    pub max_message_size: Option<usize>,
    pub max_frame_size: Option<usize>,
}

struct Frame {
    opcode: u8,
    fin: bool,
    key: Option<[u8; 4]>,
    len: u64,
    got: u64,
    control: Vec<u8>,
}

struct Message {
    text: bool,
    compressed: bool,
    /// Payload bytes announced by its frames so far, as sent.
    wire: u128,
    data: Vec<u8>,
}

pub struct Model {
    setup: Setup,
    pos: usize,
    frame: Option<Frame>,
    message: Option<Message>,
    pub events: Vec<Expected>,
    pub violation: Option<Violation>,
    /// A valid close frame was read: the engine reads nothing after it.
    pub closed: bool,
    /// Stream ranges that belong to compressed messages (header to last payload byte).
    compressed: Vec<Range<usize>>,
}

impl Model {
    pub fn new(setup: Setup) -> Self {
        Model {
            setup,
            pos: 0,
            frame: None,
            message: None,
            events: Vec::new(),
            violation: None,
            closed: false,
            compressed: Vec::new(),
        }
    }

    /// Whether any byte of `range` (of the stream) belongs to a compressed message, or a
    /// compressed message is still open at its end: where the engine may fail with 1007 or
    /// 1009 for a reason only inflating shows.
    pub fn compressed_within(&self, range: Range<usize>) -> bool {
        let open = self.message.as_ref().is_some_and(|m| m.compressed);
        open || self
            .compressed
            .iter()
            .any(|r| r.start < range.end && range.start < r.end)
    }

    /// The payload bytes still to come of the frame being read, and whether it is an
    /// uncompressed data frame; `None` between frames.
    pub fn frame_remaining(&self) -> Option<(u64, bool)> {
        let frame = self.frame.as_ref()?;
        let plain_data =
            frame.opcode & 0x8 == 0 && self.message.as_ref().is_some_and(|m| !m.compressed);
        Some((frame.len - frame.got, plain_data))
    }

    /// Reads on through `stream`, the bytes fed to the engine so far (each call passes a
    /// longer prefix of the same stream). Stops at a violation or after a close frame.
    pub fn advance(&mut self, stream: &[u8]) {
        while self.violation.is_none() && !self.closed {
            let Some(frame) = self.frame.as_mut() else {
                let Some(header) = parse_header(&stream[self.pos..]) else {
                    return;
                };
                self.pos += header.size;
                self.start_frame(header);
                continue;
            };
            let remaining = frame.len - frame.got;
            let available = (stream.len() - self.pos) as u64;
            if remaining > 0 && available == 0 {
                return;
            }
            let n = remaining.min(available) as usize;
            let mut chunk = stream[self.pos..self.pos + n].to_vec();
            if let Some(key) = frame.key {
                unmask(&mut chunk, key, frame.got);
            }
            frame.got += n as u64;
            self.pos += n;
            let done = frame.got == frame.len;
            if frame.opcode & 0x8 != 0 {
                frame.control.extend_from_slice(&chunk);
            } else {
                let message = self
                    .message
                    .as_mut()
                    .expect("a data frame belongs to a message");
                if message.compressed {
                    let last = self.compressed.last_mut().expect("range opened");
                    last.end = self.pos;
                } else {
                    message.data.extend_from_slice(&chunk);
                    if message.text && utf8_broken(&message.data, false) {
                        self.fail(&[1007], "invalid UTF-8 in a text message");
                        return;
                    }
                }
            }
            if done {
                self.finish_frame();
            }
        }
    }

    fn fail(&mut self, codes: &[u16], what: impl Into<String>) {
        self.violation = Some(Violation {
            at: self.pos,
            codes: codes.to_vec(),
            what: what.into(),
        });
    }

    fn start_frame(&mut self, h: RawHeader) {
        let mut codes = Vec::new();
        let mut why = Vec::new();
        let mut flag = |code: u16, what: &str| {
            if !codes.contains(&code) {
                codes.push(code);
            }
            why.push(what.to_owned());
        };
        let known = matches!(h.opcode, 0x0 | 0x1 | 0x2 | 0x8 | 0x9 | 0xa);
        if !known {
            flag(1002, "reserved opcode");
        }
        if h.len >> 63 != 0 {
            flag(1002, "64-bit length with its top bit set");
        }
        if h.rsv2 || h.rsv3 {
            flag(1002, "RSV2/RSV3");
        }
        if h.key.is_some() != (self.setup.role == Role::Server) {
            flag(1002, "masking does not match the role");
        }
        let control = h.opcode & 0x8 != 0;
        let mut total = 0u128;
        let mut compressed = false;
        if known && control {
            if h.rsv1 {
                flag(1002, "RSV1 on a control frame");
            }
            if !h.fin {
                flag(1002, "fragmented control frame");
            }
            if h.len > 125 {
                flag(1002, "control frame over 125 bytes");
            }
        } else if known {
            let continuation = h.opcode == 0;
            match (&self.message, continuation) {
                (None, true) => flag(1002, "continuation without a message"),
                (Some(_), false) => flag(1002, "new message inside a fragmented one"),
                _ => {}
            }
            if h.rsv1 && continuation {
                flag(1002, "RSV1 on a continuation");
            }
            if h.rsv1 && !self.setup.deflate {
                flag(1002, "RSV1 without permessage-deflate");
            }
            if let Some(max) = self.setup.max_frame_size {
                if u128::from(h.len) > max as u128 {
                    flag(1009, "frame over max_frame_size");
                }
            }
            let (so_far, comp) = match (&self.message, continuation) {
                (Some(m), true) => (m.wire, m.compressed),
                _ => (0, h.rsv1),
            };
            compressed = comp;
            total = so_far + u128::from(h.len);
            if let Some(max) = self.setup.max_message_size {
                // Uncompressed: the announced payload is the message. Compressed: deflate
                // grows data by at most 1/8 (plus flush blocks), the engine's bound.
                let max = max as u128;
                let limit = if compressed {
                    max + max / 8 + 4096
                } else {
                    max
                };
                if total > limit {
                    flag(1009, "message over max_message_size");
                }
            }
        }
        if !codes.is_empty() {
            self.violation = Some(Violation {
                at: self.pos,
                codes,
                what: why.join(", "),
            });
            return;
        }
        if !control {
            if h.opcode != 0 {
                self.message = Some(Message {
                    text: h.opcode == 1,
                    compressed,
                    wire: 0,
                    data: Vec::new(),
                });
                if compressed {
                    let start = self.pos - h.size;
                    self.compressed.push(start..self.pos);
                }
            }
            let message = self.message.as_mut().expect("checked above");
            message.wire = total;
            if message.compressed {
                self.compressed.last_mut().expect("range opened").end = self.pos;
            }
        }
        self.frame = Some(Frame {
            opcode: h.opcode,
            fin: h.fin,
            key: h.key,
            len: h.len,
            got: 0,
            control: Vec::new(),
        });
        if h.len == 0 {
            self.finish_frame();
        }
    }

    fn finish_frame(&mut self) {
        let frame = self.frame.take().expect("a frame in progress");
        match frame.opcode {
            0x9 => self.events.push(Expected::Ping(frame.control)),
            0xa => self.events.push(Expected::Pong(frame.control)),
            0x8 => self.finish_close(frame.control),
            _ if frame.fin => {
                let message = self.message.take().expect("a message in progress");
                if message.compressed {
                    self.events.push(Expected::Message {
                        text: message.text,
                        payload: None,
                    });
                } else if message.text && utf8_broken(&message.data, true) {
                    self.fail(&[1007], "text message is not UTF-8");
                } else {
                    self.events.push(Expected::Message {
                        text: message.text,
                        payload: Some(message.data),
                    });
                }
            }
            _ => {}
        }
    }

    fn finish_close(&mut self, payload: Vec<u8>) {
        let (code, reason) = match payload.len() {
            0 => (1005, String::new()),
            1 => return self.fail(&[1002], "one-byte close payload"),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !close_code_allowed(code) {
                    return self.fail(&[1002], format!("close code {code}"));
                }
                match std::str::from_utf8(&payload[2..]) {
                    Ok(reason) => (code, reason.to_owned()),
                    Err(_) => return self.fail(&[1007], "close reason is not UTF-8"),
                }
            }
        };
        self.events.push(Expected::Close { code, reason });
        self.closed = true;
    }
}

/// Whether `data` is certainly not the start of UTF-8 text (`complete`: not UTF-8 text).
pub fn utf8_broken(data: &[u8], complete: bool) -> bool {
    match std::str::from_utf8(data) {
        Ok(_) => false,
        Err(e) => complete || e.error_len().is_some(),
    }
}
