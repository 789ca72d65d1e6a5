//! `Connection::receive_data` (and `read_payload_in_place`) on hostile
//! bytes, checked against the reference reading of `wschannel_fuzz::model`.
//!
//! Input: 7 configuration bytes, a chunk plan (see `Input::plan`), then the byte stream.
//!   0: bit 0 client (else server), 1 permessage-deflate, 2 server_no_context_takeover,
//!      3 client_no_context_takeover, 4 read large payloads in place, 5 send a close frame
//!      before chunk `byte 2 >> 4`, 6 send each chunk as a message, 7 compact_if_idle
//!      between chunks
//!   1: window bits: server 8 + (b & 7), client 8 + (b >> 4 & 7)
//!   2: bits 0-1 max_message_size: 1 MiB, none, byte 3, bytes 3-4 (big-endian);
//!      bits 2-3 max_frame_size: none, none, byte 5, byte 5 * 256
//!   3-4: message limit value; 5: frame limit value; 6: masking-key seed, deflate level
#![no_main]

use wschannel::deflate::DeflateParams;
use wschannel::engine::{Config, Connection, Event};
use wschannel::Role;
use libfuzzer_sys::fuzz_target;
use wschannel_fuzz::model::{parse_frame, Expected, Model, Setup};
use wschannel_fuzz::{Chunks, Input};

struct Harness<'a> {
    conn: Connection,
    model: Model,
    setup: Setup,
    stream: &'a [u8],
    fed: usize,
    /// Events the engine delivered, Failure excluded.
    events: Vec<Event>,
    /// A Failure or Close was delivered: nothing may follow.
    stopped: bool,
    /// A close frame was queued (ours, the echo or the failure's): no more replies.
    close_queued: bool,
}

impl Harness<'_> {
    /// Checks what the engine did with the stream's bytes `before..self.fed`.
    fn after(&mut self, before: usize, got: Vec<Event>) {
        if self.stopped {
            assert!(got.is_empty(), "events after a Close or Failure: {got:?}");
            return;
        }
        let mut failure = None;
        for (i, event) in got.iter().enumerate() {
            self.check_reply(event);
            match event {
                Event::Failure { code, .. } => {
                    assert!(i + 1 == got.len(), "events after a Failure: {got:?}");
                    assert!(matches!(code, 1002 | 1007 | 1009), "failure code {code}");
                    failure = Some(*code);
                }
                Event::Text(t) => self.check_size(t.len()),
                Event::Binary(b) => self.check_size(b.len()),
                _ => {}
            }
        }
        assert_eq!(self.conn.replies_waiting(), 0);
        assert!(self.conn.data_to_send().is_empty());
        let closed = got.iter().any(|e| matches!(e, Event::Close { .. }));
        self.events.extend(
            got.into_iter()
                .filter(|e| !matches!(e, Event::Failure { .. })),
        );

        self.model.advance(&self.stream[..self.fed]);
        let expected = &self.model.events;
        assert!(
            self.events.len() <= expected.len(),
            "engine delivered {:?}, the model expects only {expected:?}",
            self.events
        );
        for (event, want) in self.events.iter().zip(expected) {
            assert!(
                matches(event, want),
                "engine delivered {event:?}, model: {want:?}"
            );
        }
        match failure {
            Some(code) => {
                self.stopped = true;
                let justified = self
                    .model
                    .violation
                    .as_ref()
                    .is_some_and(|v| v.codes.contains(&code))
                    || (matches!(code, 1007 | 1009)
                        && self.model.compressed_within(before..self.fed));
                assert!(
                    justified,
                    "engine failed with {code} on bytes {before}..{}; model: {:?}",
                    self.fed, self.model.violation
                );
                assert_eq!(self.conn.close_code(), Some(code));
                assert_eq!(self.conn.state(), wschannel::engine::State::Closed);
            }
            None => {
                if let Some(v) = &self.model.violation {
                    panic!("engine accepted bytes 0..{} but must fail: {v:?}", self.fed);
                }
                assert_eq!(
                    self.events.len(),
                    expected.len(),
                    "events missing: {expected:?}"
                );
                self.stopped = closed;
            }
        }
    }

    fn check_size(&self, len: usize) {
        if let Some(max) = self.setup.max_message_size {
            assert!(
                len <= max,
                "delivered a message of {len} bytes, limit {max}"
            );
        }
    }

    /// Takes the reply owed for `event` and checks it.
    fn check_reply(&mut self, event: &Event) {
        let (opcode, payload) = match event {
            Event::Ping(p) => (0xa, p.clone()),
            Event::Close { code: 1005, .. } => (0x8, Vec::new()),
            Event::Close { code, reason } | Event::Failure { code, reason } => {
                let mut p = code.to_be_bytes().to_vec();
                p.extend_from_slice(reason.as_bytes());
                (0x8, p)
            }
            _ => return,
        };
        let reply = self.conn.next_reply().expect("a reply for each control event");
        if self.close_queued {
            assert!(reply.is_empty(), "reply after our close frame: {reply:?}");
            return;
        }
        let (h, body, used) = parse_frame(&reply).expect("a whole frame");
        assert_eq!(used, reply.len());
        assert!(h.fin && !h.rsv1 && !h.rsv2 && !h.rsv3);
        assert_eq!(h.opcode, opcode);
        assert_eq!(h.key.is_some(), self.setup.role == Role::Client);
        assert!(body.len() <= 125, "control frame of {} bytes", body.len());
        assert_eq!(body, payload);
        self.close_queued |= opcode == 0x8;
    }

    fn feed(&mut self, chunk: &[u8]) {
        let before = self.fed;
        let mut got = Vec::new();
        self.conn.receive_data(chunk, &mut got);
        self.fed += chunk.len();
        self.after(before, got);
    }

    /// Reads what it can of `chunk` into the engine's own buffer; returns the rest.
    fn in_place<'c>(&mut self, chunk: &'c [u8]) -> &'c [u8] {
        let frame = self.model.frame_remaining();
        let before = self.fed;
        let mut got = Vec::new();
        let mut source = chunk;
        let Some(asked) = self
            .conn
            .read_payload_in_place(chunk.len(), &mut source, &mut got)
        else {
            assert_eq!(source.len(), chunk.len(), "the source was not read");
            return chunk;
        };
        let (remaining, plain) = frame.expect("a frame in progress");
        assert!(plain, "room for a control or compressed frame");
        assert!(asked <= chunk.len() && asked as u64 <= remaining);
        let n = chunk.len() - source.len();
        assert_eq!(n, asked, "a slice fills the room it is given");
        self.fed += n;
        self.after(before, got);
        source
    }

    fn send(&mut self, chunk: &[u8]) {
        let was_sent = self.conn.close_sent();
        let text = std::str::from_utf8(chunk).ok();
        let frame = match text {
            Some(t) => self.conn.send_text(t),
            None => self.conn.send_binary(chunk),
        };
        let Ok(frame) = frame else {
            assert!(was_sent, "send refused before any close frame");
            return;
        };
        assert!(!was_sent, "sent a message after the close frame");
        let (h, body, used) = parse_frame(&frame).expect("a whole frame");
        assert_eq!(used, frame.len());
        assert_eq!(h.opcode, if text.is_some() { 1 } else { 2 });
        assert_eq!(h.rsv1, self.setup.deflate);
        assert_eq!(h.key.is_some(), self.setup.role == Role::Client);
        if !self.setup.deflate {
            assert_eq!(body, chunk);
        }
    }
}

fn matches(event: &Event, want: &Expected) -> bool {
    match (event, want) {
        (
            Event::Text(t),
            Expected::Message {
                text: true,
                payload,
            },
        ) => payload.as_ref().is_none_or(|p| p == t.as_bytes()),
        (
            Event::Binary(b),
            Expected::Message {
                text: false,
                payload,
            },
        ) => payload.as_ref().is_none_or(|p| p == b),
        (Event::Ping(a), Expected::Ping(b)) | (Event::Pong(a), Expected::Pong(b)) => a == b,
        (Event::Close { code, reason }, Expected::Close { code: c, reason: r }) => {
            code == c && reason == r
        }
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (flags, bits, limits) = (input.byte(), input.byte(), input.byte());
    let message_value = input.u16();
    let frame_value = usize::from(input.byte());
    let seed = input.byte();
    let plan = input.plan();
    let stream = input.rest();

    let role = if flags & 1 != 0 {
        Role::Client
    } else {
        Role::Server
    };
    let deflate = (flags & 2 != 0).then_some(DeflateParams {
        server_no_context_takeover: flags & 4 != 0,
        client_no_context_takeover: flags & 8 != 0,
        server_max_window_bits: 8 + (bits & 7),
        client_max_window_bits: 8 + (bits >> 4 & 7),
    });
    let max_message_size = match limits & 3 {
        0 => Some(1 << 20),
        1 => None,
        2 => Some(usize::from(message_value >> 8)),
        _ => Some(usize::from(message_value)),
    };
    let max_frame_size = match limits >> 2 & 3 {
        0 | 1 => None,
        2 => Some(frame_value),
        _ => Some(frame_value * 256),
    };
    let config = Config {
        max_message_size,
        max_frame_size,
        deflate,
        deflate_level: u32::from(seed % 10),
    };
    let setup = Setup {
        role,
        deflate: deflate.is_some(),
        max_message_size,
        max_frame_size,
    };
    let mut h = Harness {
        conn: Connection::with_seed(role, config, u64::from(seed)),
        model: Model::new(setup),
        setup,
        stream,
        fed: 0,
        events: Vec::new(),
        stopped: false,
        close_queued: false,
    };
    let close_before = usize::from(limits >> 4);
    for (i, chunk) in Chunks::new(stream, plan).enumerate() {
        if flags & 0x20 != 0 && i == close_before {
            let sent = h.conn.close_sent();
            match h.conn.send_close(Some(1000), "bye") {
                Ok(frame) => {
                    assert!(!sent && !h.close_queued);
                    assert_eq!(parse_frame(&frame).expect("close frame").1, b"\x03\xe8bye");
                    h.close_queued = true;
                }
                Err(_) => assert!(h.close_queued),
            }
        }
        if flags & 0x40 != 0 {
            h.send(chunk);
        }
        if flags & 0x80 != 0 {
            h.conn.compact_if_idle();
        }
        let rest = if flags & 0x10 != 0 {
            h.in_place(chunk)
        } else {
            chunk
        };
        h.feed(rest);
    }
    assert_eq!(h.fed, stream.len());
    let code = h.conn.close_code();
    h.conn.receive_eof();
    assert_eq!(h.conn.state(), wschannel::engine::State::Closed);
    assert_eq!(h.conn.close_code(), code.or(Some(1006)));
});
