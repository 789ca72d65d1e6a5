//! `Connection::receive_data` in `Delivery::Pieces` (messages handed over in pieces, never
//! assembled: issue 13's streaming) on hostile bytes, with and without permessage-deflate.
//!
//! Checked on every call: no piece is over `MAX_PIECE`; a message's pieces are all of one
//! kind, and a new message starts only after the last piece (`fin`) of the one before; a
//! message never totals more than the pieces' limit; no whole message comes while pieces
//! are on; nothing follows a Close or a Failure. And against `wschannel_fuzz::model` (the
//! independent reading of the stream that the `engine` target uses): the pieces of each
//! finished message, joined, are the message the model read (its payload when it was not
//! compressed), the control events are the model's, and the engine fails exactly where the
//! model says the stream breaks the rules, with one of its codes.
//!
//! Input: 6 configuration bytes, a chunk plan (see `Input::plan`), then the byte stream.
//!   0: bit 0 client (else server), 1 permessage-deflate, 2 server_no_context_takeover,
//!      3 client_no_context_takeover, 4 pieces only from chunk `byte 2 >> 4` (whole
//!      messages before: a message under way switches to pieces), 5 compact_if_idle
//!      between chunks
//!   1: window bits: server 8 + (b & 7), client 8 + (b >> 4 & 7)
//!   2: bits 0-1 the pieces' max_message_size: none, 1 MiB, byte 3, bytes 3-4 (big-endian);
//!      bits 2-3 max_frame_size: none, none, byte 5, byte 5 * 256
//!   3-4: message limit value; 5: frame limit value, masking-key seed and deflate level
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschannel::deflate::DeflateParams;
use wschannel::engine::{Config, Connection, Delivery, Event, MAX_PIECE};
use wschannel::Role;
use wschannel_fuzz::model::{Expected, Model, Setup};
use wschannel_fuzz::{Chunks, Input};

/// The message whose pieces are coming: its kind and what came of it so far.
struct Open {
    text: bool,
    data: Vec<u8>,
}

struct Harness<'a> {
    conn: Connection,
    model: Model,
    setup: Setup,
    stream: &'a [u8],
    fed: usize,
    pieces: bool,
    open: Option<Open>,
    /// The engine's events as whole ones (pieces joined), Failure excluded.
    events: Vec<Expected>,
    stopped: bool,
}

impl Harness<'_> {
    fn feed(&mut self, chunk: &[u8]) {
        let before = self.fed;
        let mut got = Vec::new();
        self.conn.receive_data(chunk, &mut got);
        self.fed += chunk.len();
        if self.stopped {
            assert!(got.is_empty(), "events after a Close or Failure: {got:?}");
            return;
        }
        let mut failure = None;
        for (i, event) in got.into_iter().enumerate() {
            assert!(failure.is_none(), "an event after a Failure: {event:?}");
            match event {
                Event::TextPiece { text, fin } => self.piece(true, text.into_bytes(), fin, i),
                Event::BinaryPiece { data, fin } => self.piece(false, data, fin, i),
                Event::Text(text) => self.whole(true, text.into_bytes()),
                Event::Binary(data) => self.whole(false, data),
                Event::Ping(p) => self.events.push(Expected::Ping(p)),
                Event::Pong(p) => self.events.push(Expected::Pong(p)),
                Event::Close { code, reason } => {
                    self.events.push(Expected::Close { code, reason });
                    self.stopped = true;
                }
                Event::Failure { code, .. } => {
                    assert!(matches!(code, 1002 | 1007 | 1009), "failure code {code}");
                    failure = Some(code);
                }
            }
        }
        // The replies (pongs, the close echo, the failure's close) are the engine target's
        // business: dropped here.
        while self.conn.next_reply().is_some() {}

        self.model.advance(&self.stream[..self.fed]);
        let expected = &self.model.events;
        assert!(
            self.events.len() <= expected.len(),
            "engine delivered {:?}, the model expects only {expected:?}",
            self.events
        );
        for (event, want) in self.events.iter().zip(expected) {
            assert!(
                same(event, want),
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
            }
        }
    }

    fn piece(&mut self, text: bool, data: Vec<u8>, fin: bool, index: usize) {
        assert!(
            self.pieces,
            "a piece (event {index}) before pieces were asked for"
        );
        assert!(data.len() <= MAX_PIECE, "a piece of {} bytes", data.len());
        let open = self.open.get_or_insert(Open {
            text,
            data: Vec::new(),
        });
        assert_eq!(open.text, text, "a message's pieces changed kind");
        open.data.extend_from_slice(&data);
        if let Some(max) = self.setup.max_message_size {
            assert!(
                open.data.len() <= max,
                "a message of {} bytes so far, limit {max}",
                open.data.len()
            );
        }
        if text {
            // Whole characters in each piece (the type says so), so the joined text is too.
            assert!(std::str::from_utf8(&open.data).is_ok());
        }
        if fin {
            let open = self.open.take().expect("open");
            self.events.push(Expected::Message {
                text: open.text,
                payload: Some(open.data),
            });
        }
    }

    fn whole(&mut self, text: bool, data: Vec<u8>) {
        assert!(!self.pieces, "a whole message while pieces are on");
        assert!(self.open.is_none());
        if let Some(max) = self.setup.max_message_size {
            assert!(
                data.len() <= max,
                "a message of {} bytes, limit {max}",
                data.len()
            );
        }
        self.events.push(Expected::Message {
            text,
            payload: Some(data),
        });
    }
}

/// An event of the engine's (pieces joined) is the model's: a compressed message's content
/// is unknown to the model, its kind is not.
fn same(event: &Expected, want: &Expected) -> bool {
    match (event, want) {
        (
            Expected::Message { text, payload },
            Expected::Message {
                text: t,
                payload: p,
            },
        ) => text == t && p.as_ref().is_none_or(|p| Some(p) == payload.as_ref()),
        _ => event == want,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (flags, bits, limits) = (input.byte(), input.byte(), input.byte());
    let message_value = input.u16();
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
        0 => None,
        1 => Some(MAX_PIECE),
        2 => Some(usize::from(message_value >> 8)),
        _ => Some(usize::from(message_value)),
    };
    let max_frame_size = match limits >> 2 & 3 {
        0 | 1 => None,
        2 => Some(usize::from(seed)),
        _ => Some(usize::from(seed) * 256),
    };
    // The same limit whole and in pieces, so that a switch midway keeps the model's.
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
    let switch_at = if flags & 0x10 != 0 {
        usize::from(limits >> 4)
    } else {
        0
    };
    let mut h = Harness {
        conn: Connection::with_seed(role, config, u64::from(seed)),
        model: Model::new(setup),
        setup,
        stream,
        fed: 0,
        pieces: false,
        open: None,
        events: Vec::new(),
        stopped: false,
    };
    let pieces = Delivery::Pieces { max_message_size };
    if switch_at == 0 {
        h.conn.set_delivery(pieces);
        h.pieces = true;
    }
    for (i, chunk) in Chunks::new(stream, plan).enumerate() {
        if !h.pieces && i == switch_at {
            h.conn.set_delivery(pieces);
            h.pieces = true;
        }
        if flags & 0x20 != 0 {
            h.conn.compact_if_idle();
        }
        h.feed(chunk);
    }
    assert_eq!(h.fed, stream.len());
    let code = h.conn.close_code();
    h.conn.receive_eof();
    assert_eq!(h.conn.state(), wschannel::engine::State::Closed);
    assert_eq!(h.conn.close_code(), code.or(Some(1006)));
});
