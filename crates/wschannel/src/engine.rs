//! The connection state machine (RFC 6455 §5-7): bytes in, events out; commands in, bytes out.
//!
//! A [`Connection`] starts after the opening handshake. [`Connection::receive_data`] parses
//! frames from any chunking, answers pings and close frames on its own and hands complete
//! messages to a [`Receiver`]. The `send_*` methods return whole frames. Peer misbehaviour
//! never returns an error: it fails the connection (RFC 6455 §7.1.7) with the right close
//! code and a [`Event::Failure`].
//!
//! Replies (pongs, the close echo, a failure's close frame) wait in
//! [`Connection::data_to_send`], which hands out all of them, in order. A close frame counts
//! as sent only once it has left the engine, so a message that the application sends in
//! answer to a message that came before the peer's close still goes out, before the close
//! frame.

use std::collections::VecDeque;
use std::mem::MaybeUninit;

use crate::deflate::{DecompressError, DeflateParams, PerMessageDeflate};
pub use crate::frame::Role;
use crate::frame::{header_len, Header, OpCode, OutFrame, MAX_HEADER_LEN};
use crate::mask::{apply_mask, extend_masked};
use crate::random::Random;
use crate::utf8::{self, Utf8Validator};

/// The default limit on a message's size, after decompression: 1 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 1 << 20;

/// The largest payload length a frame may announce: the most significant bit of the 64-bit
/// length must be 0 (RFC 6455 §5.2).
pub const MAX_PAYLOAD_LEN: u64 = i64::MAX as u64;

/// Buffers above this capacity are given back after a message, so idle connections stay small.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Frames with at least this much payload still to come may be read straight into the
/// message buffer ([`Connection::read_payload_in_place`]).
pub const DIRECT_READ_MIN: usize = 64 * 1024;

/// The most bytes a piece of a message delivered in pieces holds ([`Delivery::Pieces`]): a
/// piece is what arrived of the message by the end of the engine call, or this much.
pub const MAX_PIECE: usize = 1 << 20;

/// The largest message buffer a thread keeps for its next large message (see [`SPARE`]).
const MAX_SPARE: usize = 4 << 20;

thread_local! {
    /// One large message buffer per thread, handed from a connection that finished a large
    /// message to the next one that starts one. Without it every large message would grow
    /// a new buffer, and the kernel would fault in (and zero) every page of it again: that
    /// halved the rate of 1 MiB messages. Per thread, not per connection, so idle
    /// connections keep at most [`KEEP_CAPACITY`].
    static SPARE: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Makes room for a message of `expected` bytes in the empty `message`, with the thread's
/// spare buffer if it has one.
fn reserve_message(message: &mut Vec<u8>, expected: usize) {
    if message.capacity() < expected {
        let spare = SPARE.take();
        if spare.capacity() > message.capacity() {
            *message = spare;
        }
        message.reserve(expected.min(MAX_SPARE));
    }
}

/// Empties `message`; a large buffer goes to the thread's spare slot (or is freed).
fn release_message(message: &mut Vec<u8>) {
    message.clear();
    if message.capacity() > KEEP_CAPACITY {
        let big = std::mem::take(message);
        if big.capacity() <= MAX_SPARE {
            SPARE.with(|spare| {
                let old = spare.take();
                spare.set(if old.capacity() >= big.capacity() {
                    old
                } else {
                    big
                });
            });
        }
    }
}

/// Where a connection is in its life (RFC 6455 §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Messages flow both ways.
    Open,
    /// One close frame has been sent or received, not both.
    Closing,
    /// The closing handshake is over, the connection failed, or the transport ended.
    Closed,
}

/// Something the peer sent or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete text message.
    Text(String),
    /// A complete binary message.
    Binary(Vec<u8>),
    /// A piece of a text message delivered in pieces ([`Delivery::Pieces`]): whole
    /// characters; `fin` on the last piece of the message (which may be empty).
    TextPiece {
        /// The piece's text.
        text: String,
        /// Whether this is the message's last piece.
        fin: bool,
    },
    /// A piece of a binary message delivered in pieces ([`Delivery::Pieces`]).
    BinaryPiece {
        /// The piece's bytes.
        data: Vec<u8>,
        /// Whether this is the message's last piece.
        fin: bool,
    },
    /// A ping (RFC 6455 §5.5.2); the pong is already queued.
    Ping(Vec<u8>),
    /// A pong (RFC 6455 §5.5.3).
    Pong(Vec<u8>),
    /// The peer's close frame (RFC 6455 §5.5.1); code 1005 when it carried none.
    Close {
        /// The peer's status code (RFC 6455 §7.4), already checked to be one an endpoint may
        /// send; 1005 for an empty close frame.
        code: u16,
        /// The UTF-8 reason that followed the code; empty when there was none.
        reason: String,
    },
    /// This side failed the connection because of the peer (RFC 6455 §7.1.7).
    Failure {
        /// The close code this side fails with: 1002 for a protocol error, 1007 for invalid
        /// UTF-8 or compressed data, 1009 for a message or frame over the size limits.
        code: u16,
        /// What the peer did wrong; also the reason in the close frame this side sends.
        reason: String,
    },
}

/// A source that writes bytes straight into memory the engine lends it, such as a socket's
/// `recv`: [`Connection::read_payload_in_place`] reads the payload of a large frame this way,
/// into the message being assembled, saving the copy out of a read buffer.
///
/// `&[u8]` is one (it copies its first bytes and moves past them, as [`std::io::Read`]
/// does).
///
/// # Safety
///
/// [`ReadInto::read_into`] must return a count no larger than `room.len()`, and only after
/// writing that many bytes at the start of `room`: the engine then treats them as
/// initialised.
pub unsafe trait ReadInto {
    /// Writes bytes at the start of `room` and returns how many (0 when there are none:
    /// nothing now, the end of the stream, an error the source keeps for its caller).
    fn read_into(&mut self, room: &mut [MaybeUninit<u8>]) -> usize;
}

// SAFETY: writes `n = min(room, self)` bytes to the start of `room` and returns `n`.
unsafe impl ReadInto for &[u8] {
    fn read_into(&mut self, room: &mut [MaybeUninit<u8>]) -> usize {
        let n = room.len().min(self.len());
        let (head, rest) = self.split_at(n);
        for (slot, byte) in room.iter_mut().zip(head) {
            slot.write(*byte);
        }
        *self = rest;
        n
    }
}

/// Takes what [`Connection::receive_data`] finds, straight from the engine's buffers.
pub trait Receiver {
    /// A complete, valid text message.
    fn text(&mut self, text: &str);
    /// A complete binary message.
    fn binary(&mut self, data: &[u8]);
    /// A ping, pong, close or failure.
    fn control(&mut self, event: Event);
    /// A piece of a message, when the connection delivers messages in pieces
    /// ([`Connection::set_delivery`]); `fin` on the message's last piece. By default it is
    /// passed to [`Receiver::control`] as an [`Event::TextPiece`] or [`Event::BinaryPiece`].
    fn piece(&mut self, piece: Chunk<'_>, fin: bool) {
        self.control(piece.to_event(fin));
    }
}

/// A piece of a data message: text (whole characters, so valid UTF-8) or bytes. What
/// [`Receiver::piece`] gets, and what [`Connection::encode_fragment`] sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// A piece of a text message.
    Text(&'a str),
    /// A piece of a binary message.
    Binary(&'a [u8]),
}

impl<'a> Chunk<'a> {
    /// The piece as an owned event.
    pub fn to_event(self, fin: bool) -> Event {
        match self {
            Chunk::Text(text) => Event::TextPiece {
                text: text.to_owned(),
                fin,
            },
            Chunk::Binary(data) => Event::BinaryPiece {
                data: data.to_vec(),
                fin,
            },
        }
    }

    fn bytes(self) -> &'a [u8] {
        match self {
            Chunk::Text(text) => text.as_bytes(),
            Chunk::Binary(data) => data,
        }
    }

    fn opcode(self) -> OpCode {
        match self {
            Chunk::Text(_) => OpCode::Text,
            Chunk::Binary(_) => OpCode::Binary,
        }
    }
}

/// How [`Connection::receive_data`] hands over data messages ([`Connection::set_delivery`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Whole messages ([`Receiver::text`], [`Receiver::binary`]), each at most
    /// [`Config::max_message_size`]: the default.
    Messages,
    /// Pieces as they arrive ([`Receiver::piece`]), never assembled: a piece is what came of
    /// the message by the end of the engine call (inflated, if compressed), at most
    /// [`MAX_PIECE`] bytes; text is split only between characters. A message may total
    /// `max_message_size` bytes (after decompression; `None`: no limit), which may be
    /// larger than [`Config::max_message_size`] since no message is held whole.
    Pieces {
        /// The largest message accepted, in total, after decompression.
        max_message_size: Option<usize>,
    },
}

impl Receiver for Vec<Event> {
    fn text(&mut self, text: &str) {
        self.push(Event::Text(text.to_owned()));
    }
    fn binary(&mut self, data: &[u8]) {
        self.push(Event::Binary(data.to_vec()));
    }
    fn control(&mut self, event: Event) {
        self.push(event);
    }
}

/// The limits and extensions of one connection.
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest message accepted, after decompression (RFC 6455 §10.4); `None`: no limit.
    pub max_message_size: Option<usize>,
    /// Largest frame payload accepted, as sent; `None`: no limit beyond the message's.
    pub max_frame_size: Option<usize>,
    /// permessage-deflate parameters, if negotiated (RFC 7692).
    pub deflate: Option<DeflateParams>,
    /// zlib compression level for outgoing messages.
    pub deflate_level: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_message_size: Some(DEFAULT_MAX_MESSAGE_SIZE),
            max_frame_size: None,
            deflate: None,
            deflate_level: 6,
        }
    }
}

/// Misuse of the sending side; the connection is unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// A close frame was sent already, so nothing else may follow (RFC 6455 §5.5.1).
    #[error("the close frame was already sent: nothing more can be sent on this connection")]
    Closed,
    /// The code is reserved or unassigned (RFC 6455 §7.4).
    #[error("close code {0} may not be sent; use 1000-1003, 1007-1014 or 3000-4999")]
    InvalidCode(u16),
    /// The reason does not fit in a control frame (RFC 6455 §5.5).
    #[error("close reason is {0} bytes of UTF-8; at most 123 fit in a close frame")]
    ReasonTooLong(usize),
    /// A reason can only follow a code (RFC 6455 §5.5.1).
    #[error("a close reason needs a close code")]
    ReasonWithoutCode,
    /// Control frames carry at most 125 bytes (RFC 6455 §5.5).
    #[error("control frame payload is {0} bytes; at most 125 are allowed")]
    ControlTooLong(usize),
    /// A message was started while a fragmented one is open (RFC 6455 §5.4: the fragments
    /// of one message may not be interleaved with another's).
    #[error(
        "a fragmented message is being sent: send its last fragment (fin) before another message"
    )]
    MessageInProgress,
    /// A continuation fragment with no fragmented message open.
    #[error("no fragmented message is open: start one with its first fragment")]
    NoMessageInProgress,
    /// A fragment whose kind is not the open message's (text continued with bytes, or
    /// binary with text).
    #[error("the fragmented message being sent is {0}: its fragments must all be {0}")]
    FragmentKind(&'static str),
}

/// Whether an endpoint may put `code` in a close frame (RFC 6455 §7.4.1, IANA registry).
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A violation by the peer: the close code and reason this side fails the connection with.
struct Violation {
    code: u16,
    reason: String,
}

fn violation(code: u16, reason: impl Into<String>) -> Violation {
    Violation {
        code,
        reason: reason.into(),
    }
}

type Step = Result<(), Violation>;

/// An answer the engine owes the peer for one control event.
struct Reply {
    bytes: Vec<u8>,
    /// The answer is a close frame: once it has left, nothing more may be sent.
    closes: bool,
}

/// What went through a connection so far (see [`Connection::counters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Complete messages (text or binary) handed to the [`Receiver`].
    pub messages_received: u64,
    /// Messages encoded for the peer (text and binary, and shared frames counted).
    pub messages_sent: u64,
    /// Every byte given to the connection: frames of any kind, as on the wire.
    pub bytes_received: u64,
    /// Every byte of every frame the connection produced (data, control, close; headers
    /// and masks included, after compression), and of shared frames counted for it.
    pub bytes_sent: u64,
}

/// The frame whose payload is being received.
struct InFrame {
    opcode: OpCode,
    fin: bool,
    mask: Option<[u8; 4]>,
    remaining: u64,
    offset: usize,
}

/// One WebSocket connection after its opening handshake.
pub struct Connection {
    role: Role,
    config: Config,
    head: [u8; MAX_HEADER_LEN],
    head_len: usize,
    frame: Option<InFrame>,
    message: Vec<u8>,
    message_opcode: Option<OpCode>,
    /// The payload bytes the current message's frames announced so far, as sent.
    message_wire_len: u64,
    compressed: bool,
    raw: Vec<u8>,
    utf8: Utf8Validator,
    control: Vec<u8>,
    replies: VecDeque<Reply>,
    scratch: Vec<u8>,
    deflate: Option<PerMessageDeflate>,
    close_queued: bool,
    close_sent: bool,
    close_received: bool,
    failed: bool,
    eof: bool,
    close_code: Option<u16>,
    close_reason: Option<String>,
    counters: Counters,
    rng: Random,
    /// How messages that start from now on are delivered, and their limit in total.
    delivery: Delivery,
    next_limit: Option<usize>,
    /// The limit on the total of the message being received in pieces.
    pieces_limit: Option<usize>,
    /// The message being received is delivered in pieces.
    pieces: bool,
    /// Bytes of the message being received already delivered as pieces.
    delivered: u64,
    /// The kind of the fragmented message being sent, if one is open.
    sending: Option<OpCode>,
}

impl Connection {
    /// A connection whose masking keys come from a generator seeded by the OS.
    pub fn new(role: Role, config: Config) -> Self {
        Self::with_random(role, config, Random::from_os())
    }

    /// A connection whose masking keys come from a generator seeded with `seed`: the same
    /// bytes every time, for tests (a client's masks must be unpredictable to the network,
    /// RFC 6455 §10.3, so not for real connections).
    pub fn with_seed(role: Role, config: Config, seed: u64) -> Self {
        Self::with_random(role, config, Random::seeded(seed))
    }

    fn with_random(role: Role, config: Config, rng: Random) -> Self {
        let limit = config.max_message_size;
        let deflate = config
            .deflate
            .map(|p| PerMessageDeflate::new(role, p, config.deflate_level));
        Connection {
            role,
            config,
            head: [0; MAX_HEADER_LEN],
            head_len: 0,
            frame: None,
            message: Vec::new(),
            message_opcode: None,
            message_wire_len: 0,
            compressed: false,
            raw: Vec::new(),
            utf8: Utf8Validator::default(),
            control: Vec::new(),
            replies: VecDeque::new(),
            scratch: Vec::new(),
            deflate,
            close_queued: false,
            close_sent: false,
            close_received: false,
            failed: false,
            eof: false,
            close_code: None,
            close_reason: None,
            counters: Counters::default(),
            rng,
            delivery: Delivery::Messages,
            next_limit: limit,
            pieces_limit: None,
            pieces: false,
            delivered: 0,
            sending: None,
        }
    }

    /// The role this connection was created with.
    pub fn role(&self) -> Role {
        self.role
    }

    /// How data messages are handed over: whole, or in pieces (see [`Delivery`]). Pieces
    /// apply at once: a message already being received goes on in pieces, what was
    /// assembled of it first (in pieces of at most [`MAX_PIECE`]); whole messages apply
    /// from the next message that starts.
    ///
    /// ```
    /// use wschannel::{Config, Connection, Delivery, Event, Role};
    ///
    /// let mut client = Connection::new(Role::Client, Config::default());
    /// client.set_delivery(Delivery::Pieces { max_message_size: None });
    /// let mut events = Vec::new();
    /// client.receive_data(b"\x01\x03abc", &mut events); // a first fragment
    /// client.receive_data(b"\x80\x02de", &mut events); // the last one
    /// assert_eq!(
    ///     events,
    ///     [
    ///         Event::TextPiece { text: "abc".into(), fin: false },
    ///         Event::TextPiece { text: "de".into(), fin: true },
    ///     ]
    /// );
    /// ```
    pub fn set_delivery(&mut self, delivery: Delivery) {
        self.delivery = delivery;
        self.next_limit = match delivery {
            Delivery::Messages => self.config.max_message_size,
            Delivery::Pieces { max_message_size } => max_message_size,
        };
        if let Delivery::Pieces { max_message_size } = delivery {
            if self.message_opcode.is_some() && !self.pieces && !self.stopped() {
                // A message under way goes on in pieces: what was assembled of it comes
                // first. Its inflated part joins the history (compaction rebuilds from it).
                if self.compressed {
                    if let Some(deflate) = self.deflate.as_mut() {
                        deflate.leave_whole_message(&self.message);
                    }
                }
                self.pieces = true;
                self.pieces_limit = max_message_size;
                self.delivered = 0;
            }
        }
    }

    /// The limit on a whole message ([`Config::max_message_size`]).
    pub fn max_message_size(&self) -> Option<usize> {
        self.config.max_message_size
    }

    /// How data messages are handed over ([`Connection::set_delivery`]).
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// Whether a fragmented message is being sent ([`Connection::encode_fragment`]): until
    /// its last fragment, no other message may be sent (control frames may).
    pub fn sending_fragments(&self) -> bool {
        self.sending.is_some()
    }

    /// Where the connection is: [`State::Closed`] once close frames went both ways, after
    /// a failure or after [`Connection::receive_eof`]; [`State::Closing`] once one close
    /// frame was sent or received; else [`State::Open`].
    pub fn state(&self) -> State {
        if self.failed || self.eof || (self.close_sent && self.close_received) {
            State::Closed
        } else if self.close_sent || self.close_received {
            State::Closing
        } else {
            State::Open
        }
    }

    /// Whether this side's close frame has left the engine: returned by
    /// [`Connection::send_close`], or taken from [`Connection::data_to_send`] as the echo of
    /// the peer's close or the frame of a failure. From then on nothing else may be sent.
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// Whether a close frame from the peer has arrived (reported as [`Event::Close`], or as
    /// an [`Event::Failure`] when its payload was invalid); nothing after it is read.
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// The code of the peer's close frame, of this side's failure, or 1006 after an EOF
    /// without either (RFC 6455 §7.1.5); `None` before any of these.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// The reason that goes with [`Connection::close_code`]: the peer's close reason, the
    /// description of this side's failure, or empty after an EOF; `None` before any of these.
    pub fn close_reason(&self) -> Option<&str> {
        self.close_reason.as_deref()
    }

    /// Messages and bytes each way so far: bytes as on the wire after the opening handshake
    /// (every byte given to [`Connection::receive_data`] or read in place; every frame this
    /// side encoded, replies included), messages as delivered and as encoded.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// A frame encoded elsewhere for many connections ([`crate::frame::shared_text`]) was
    /// written to this one: count it as one message of `len` bytes sent.
    pub fn count_shared_frame(&mut self, len: usize) {
        self.counters.messages_sent += 1;
        self.counters.bytes_sent += len as u64;
    }

    /// Whether this side should close the transport now: a server once the closing
    /// handshake is done (RFC 6455 §7.1.1), either side after a failure (once its close
    /// frame has left) or an EOF.
    pub fn close_expected(&self) -> bool {
        (self.failed && self.close_sent)
            || self.eof
            || (self.role == Role::Server && self.close_sent && self.close_received)
    }

    /// Takes every reply the engine owes the peer, in order, as one run of bytes to write:
    /// the pongs, the close echo or the failure's close frame (nothing for a ping after
    /// this side's close frame, nor for the echo of our own close). Call it after each
    /// [`Connection::receive_data`] and write what it returns; empty when nothing waits.
    ///
    /// Taking the close echo ends sending. A driver that lets the application answer the
    /// messages that came before the peer's close (RFC 6455 §5.5.1 allows it; Autobahn's
    /// strict mode checks it) takes the replies one at a time with
    /// [`Connection::next_reply`] instead, as it hands out each control event; a
    /// [`Session`](crate::session::Session) does that itself.
    pub fn data_to_send(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(reply) = self.next_reply() {
            if out.is_empty() {
                out = reply;
            } else {
                out.extend_from_slice(&reply);
            }
        }
        out
    }

    /// Takes the reply to the oldest [`Event::Ping`], [`Event::Close`] or [`Event::Failure`]
    /// not yet answered: a pong, the close echo, the failure's close frame, or nothing (a
    /// ping after this side's close frame, the echo of our own close). `None` when no reply
    /// waits. Call it once for each of these events, in order.
    pub fn next_reply(&mut self) -> Option<Vec<u8>> {
        let reply = self.replies.pop_front()?;
        self.close_sent |= reply.closes;
        self.counters.bytes_sent += reply.bytes.len() as u64;
        Some(reply.bytes)
    }

    /// How many replies wait in [`Connection::data_to_send`] (one per control event).
    pub fn replies_waiting(&self) -> usize {
        self.replies.len()
    }

    fn queue_reply(&mut self, opcode: Option<OpCode>, payload: &[u8]) {
        let closes = opcode == Some(OpCode::Close);
        let bytes = match opcode {
            Some(opcode) => {
                let mask = self.mask_key();
                OutFrame::new(opcode, false, payload, mask).to_vec()
            }
            None => Vec::new(),
        };
        self.close_queued |= closes;
        self.replies.push_back(Reply { bytes, closes });
    }

    /// The peer closed the transport (RFC 6455 §7.1.5: 1006 if no close frame came).
    pub fn receive_eof(&mut self) {
        self.eof = true;
        if self.close_code.is_none() {
            self.close_code = Some(1006);
            self.close_reason = Some(String::new());
        }
    }

    /// Parses `data`, which may hold any part of any number of frames.
    pub fn receive_data(&mut self, data: &[u8], rx: &mut impl Receiver) {
        self.counters.bytes_received += data.len() as u64;
        let mut result = self.process(data, rx);
        if result.is_ok() && self.pieces {
            result = self.flush_piece(false, rx);
        }
        if let Err(v) = result {
            self.fail(v, rx);
        }
    }

    /// Reads the next bytes of a large data frame's payload from `source` straight into the
    /// message being assembled (at most `max`, never past the frame), then takes them as
    /// [`Connection::receive_data`] would (unmask, validate, deliver): one copy less for
    /// large messages. Returns how many bytes `source` was asked for, or `None` without
    /// calling it unless an uncompressed data frame is in progress with at least
    /// [`DIRECT_READ_MIN`] bytes to come; read into a buffer and use `receive_data` then.
    ///
    /// ```
    /// use wschannel::{Config, Connection, Event, Role};
    ///
    /// let config = Config { max_message_size: None, ..Config::default() };
    /// let mut client = Connection::new(Role::Client, config);
    /// let big = vec![7u8; 100_000];
    /// let mut wire = vec![0x82, 127];
    /// wire.extend((big.len() as u64).to_be_bytes());
    /// wire.extend(&big);
    /// let mut events = Vec::new();
    /// client.receive_data(&wire[..10], &mut events); // the header
    /// let mut rest = &wire[10..]; // a socket, say
    /// while client.read_payload_in_place(65_536, &mut rest, &mut events).is_some() {}
    /// client.receive_data(rest, &mut events); // what was left for the usual path
    /// assert_eq!(events, [Event::Binary(big)]);
    /// ```
    pub fn read_payload_in_place(
        &mut self,
        max: usize,
        source: &mut impl ReadInto,
        rx: &mut impl Receiver,
    ) -> Option<usize> {
        let room = self.payload_target(max)?;
        let asked = room.len();
        let n = source.read_into(room);
        assert!(
            n <= asked,
            "ReadInto::read_into reported more bytes than it was given room for"
        );
        // SAFETY: ReadInto's contract: the first `n` bytes of the room were written, and
        // nothing has touched the connection since payload_target gave it.
        unsafe { self.payload_read_in_place(n, rx) };
        Some(asked)
    }

    /// Room to read the next bytes of a large data frame's payload into directly: the
    /// message buffer's spare capacity, up to `max` bytes and never past the frame.
    fn payload_target(&mut self, max: usize) -> Option<&mut [MaybeUninit<u8>]> {
        if self.stopped() || self.compressed {
            return None;
        }
        let frame = self.frame.as_ref()?;
        if frame.opcode.is_control() || frame.remaining < DIRECT_READ_MIN as u64 {
            return None;
        }
        let want = usize::try_from(frame.remaining)
            .unwrap_or(usize::MAX)
            .min(max);
        if self.message.is_empty() && !self.pieces {
            let expected = usize::try_from(frame.remaining).unwrap_or(MAX_SPARE);
            reserve_message(&mut self.message, expected);
        }
        self.message.reserve(want);
        Some(&mut self.message.spare_capacity_mut()[..want])
    }

    /// `n` bytes of payload were written to the start of `payload_target`'s room: take them
    /// (unmask, validate, finish the frame), as `receive_data` would.
    ///
    /// # Safety
    /// The first `n` bytes of the room that the last `payload_target` call returned must
    /// have been written since, and nothing else may have touched the connection.
    unsafe fn payload_read_in_place(&mut self, n: usize, rx: &mut impl Receiver) {
        self.counters.bytes_received += n as u64;
        let mut result = self.take_in_place(n, rx);
        if result.is_ok() && self.pieces {
            result = self.flush_piece(false, rx);
        }
        if let Err(v) = result {
            self.fail(v, rx);
        }
    }

    fn take_in_place(&mut self, n: usize, rx: &mut impl Receiver) -> Step {
        let frame = self
            .frame
            .as_mut()
            .expect("payload_target gave room: frame in progress");
        let n = n.min(usize::try_from(frame.remaining).unwrap_or(usize::MAX));
        let start = self.message.len();
        assert!(
            n <= self.message.capacity() - start,
            "more bytes than the room given"
        );
        // SAFETY: the caller wrote `n` bytes at the start of the spare capacity that
        // `payload_target` returned, which nothing has touched since.
        unsafe { self.message.set_len(start + n) };
        if let Some(key) = frame.mask {
            apply_mask(&mut self.message[start..], key, frame.offset);
        }
        frame.offset += n;
        frame.remaining -= n as u64;
        let done = frame.remaining == 0;
        if self.pieces {
            self.check_piece_text()?;
            if self.message.len() >= MAX_PIECE {
                self.flush_piece(false, rx)?;
            }
        } else if self.message_opcode == Some(OpCode::Text) {
            self.utf8
                .check(&self.message, false)
                .map_err(|_| invalid_utf8())?;
        }
        if done {
            self.finish_frame(rx)?;
        }
        Ok(())
    }

    fn stopped(&self) -> bool {
        self.close_received || self.failed || self.eof
    }

    fn process(&mut self, mut data: &[u8], rx: &mut impl Receiver) -> Step {
        loop {
            if self.stopped() {
                return Ok(());
            }
            if let Some(frame) = &self.frame {
                if data.is_empty() {
                    return Ok(());
                }
                if self.whole_message_in(frame, data) {
                    let (payload, rest) = data.split_at(frame.remaining as usize);
                    data = rest;
                    self.deliver_unfragmented(payload, rx)?;
                    continue;
                }
                let n = data
                    .len()
                    .min(usize::try_from(frame.remaining).unwrap_or(usize::MAX));
                let (chunk, rest) = data.split_at(n);
                data = rest;
                self.receive_payload(chunk, rx)?;
                if self.frame.as_ref().is_some_and(|f| f.remaining == 0) {
                    self.finish_frame(rx)?;
                }
                continue;
            }
            if data.is_empty() {
                return Ok(());
            }
            let header = if self.head_len == 0 {
                match Header::parse(data) {
                    Some((header, used)) => {
                        data = &data[used..];
                        header
                    }
                    None => {
                        self.head[..data.len()].copy_from_slice(data);
                        self.head_len = data.len();
                        return Ok(());
                    }
                }
            } else {
                let need = if self.head_len < 2 {
                    2
                } else {
                    header_len([self.head[0], self.head[1]])
                };
                let take = (need - self.head_len).min(data.len());
                self.head[self.head_len..self.head_len + take].copy_from_slice(&data[..take]);
                self.head_len += take;
                data = &data[take..];
                match Header::parse(&self.head[..self.head_len]) {
                    Some((header, _)) => {
                        self.head_len = 0;
                        header
                    }
                    None => continue,
                }
            };
            self.start_frame(header, rx)?;
        }
    }

    /// A whole unmasked, uncompressed, unfragmented message is in `data`: deliver it from
    /// there, without copying it into the message buffer.
    fn whole_message_in(&self, frame: &InFrame, data: &[u8]) -> bool {
        frame.fin
            && frame.mask.is_none()
            && frame.offset == 0
            && !self.compressed
            && !self.pieces
            && matches!(frame.opcode, OpCode::Text | OpCode::Binary)
            && data.len() as u64 >= frame.remaining
    }

    fn deliver_unfragmented(&mut self, payload: &[u8], rx: &mut impl Receiver) -> Step {
        let frame = self.frame.take().expect("frame in progress");
        self.message_opcode = None;
        if frame.opcode == OpCode::Text {
            let text = utf8::validate(payload).map_err(|_| invalid_utf8())?;
            self.counters.messages_received += 1;
            rx.text(text);
        } else {
            self.counters.messages_received += 1;
            rx.binary(payload);
        }
        Ok(())
    }

    fn start_frame(&mut self, header: Header, rx: &mut impl Receiver) -> Step {
        let opcode = OpCode::from_bits(header.opcode)
            .ok_or_else(|| violation(1002, format!("reserved opcode {:#x}", header.opcode)))?;
        if header.len > MAX_PAYLOAD_LEN {
            // RFC 6455 §5.2: the most significant bit of a 64-bit length must be 0.
            return Err(violation(
                1002,
                "frame length has its most significant bit set",
            ));
        }
        if header.rsv2 || header.rsv3 {
            return Err(violation(1002, "reserved bit RSV2 or RSV3 set"));
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(violation(1002, "client frame is not masked")),
            (Role::Client, true) => return Err(violation(1002, "server frame is masked")),
            _ => {}
        }
        if opcode.is_control() {
            self.check_control(&header)?;
            self.control.clear();
        } else {
            self.check_data(opcode, &header)?;
        }
        self.frame = Some(InFrame {
            opcode,
            fin: header.fin,
            mask: header.mask,
            remaining: header.len,
            offset: 0,
        });
        if header.len == 0 {
            self.finish_frame(rx)?;
        }
        Ok(())
    }

    fn check_control(&self, header: &Header) -> Step {
        if header.rsv1 {
            return Err(violation(1002, "RSV1 set on a control frame"));
        }
        if !header.fin {
            return Err(violation(1002, "fragmented control frame"));
        }
        if header.len > 125 {
            return Err(violation(1002, "control frame payload over 125 bytes"));
        }
        Ok(())
    }

    fn check_data(&mut self, opcode: OpCode, header: &Header) -> Step {
        let continuing = opcode == OpCode::Continuation;
        match (continuing, self.message_opcode.is_some()) {
            (true, false) => return Err(violation(1002, "continuation frame with no message")),
            (false, true) => return Err(violation(1002, "new message inside a fragmented one")),
            _ => {}
        }
        if header.rsv1 && continuing {
            return Err(violation(1002, "RSV1 set on a continuation frame"));
        }
        if header.rsv1 && self.deflate.is_none() {
            return Err(violation(
                1002,
                "RSV1 set but permessage-deflate was not negotiated",
            ));
        }
        if let Some(max) = self.config.max_frame_size {
            if header.len > max as u64 {
                return Err(too_big("frame", header.len, max));
            }
        }
        let (compressed, so_far, limit) = if continuing {
            let limit = if self.pieces {
                self.pieces_limit
            } else {
                self.config.max_message_size
            };
            (self.compressed, self.message_wire_len, limit)
        } else {
            (header.rsv1, 0, self.next_limit)
        };
        // Both terms are below 2^63 (start_frame, and this check for every earlier frame
        // of the message), so the sum cannot wrap; saturating all the same.
        let total = so_far.saturating_add(header.len);
        if let Some(max) = limit {
            let (limit, what) = if compressed {
                (compressed_limit(max), "compressed message")
            } else {
                (max as u64, "message")
            };
            if total > limit {
                return Err(too_big(what, total, limit));
            }
        }
        self.message_wire_len = total;
        if !continuing {
            self.message_opcode = Some(opcode);
            self.compressed = header.rsv1;
            self.message.clear();
            self.utf8.reset();
            if let Delivery::Pieces { .. } = self.delivery {
                self.pieces = true;
                self.pieces_limit = limit;
                self.delivered = 0;
            }
        }
        Ok(())
    }

    fn receive_payload(&mut self, chunk: &[u8], rx: &mut impl Receiver) -> Step {
        let frame = self.frame.as_mut().expect("frame in progress");
        let (mask, offset) = (frame.mask, frame.offset);
        frame.offset += chunk.len();
        frame.remaining -= chunk.len() as u64;
        if frame.opcode.is_control() {
            append(&mut self.control, chunk, mask, offset);
            return Ok(());
        }
        if self.pieces {
            return self.receive_piece_payload(chunk, mask, offset, rx);
        }
        if offset == 0 && self.message.is_empty() && !self.compressed {
            let expected = chunk.len() as u64 + frame.remaining;
            reserve_message(
                &mut self.message,
                usize::try_from(expected).unwrap_or(MAX_SPARE),
            );
        }
        if self.compressed {
            let input: &[u8] = match mask {
                Some(key) => {
                    self.raw.clear();
                    extend_masked(&mut self.raw, chunk, key, offset);
                    &self.raw
                }
                None => chunk,
            };
            let deflate = self.deflate.as_mut().expect("deflate negotiated");
            let max = self.config.max_message_size;
            deflate
                .decompress(input, false, max, &mut self.message)
                .map_err(inflate_error)?;
        } else {
            append(&mut self.message, chunk, mask, offset);
        }
        if self.message_opcode == Some(OpCode::Text) {
            self.utf8
                .check(&self.message, false)
                .map_err(|_| invalid_utf8())?;
        }
        Ok(())
    }

    fn finish_frame(&mut self, rx: &mut impl Receiver) -> Step {
        let frame = self.frame.take().expect("frame in progress");
        if self.pieces && frame.opcode.is_control() {
            // What came of a message in pieces before this frame goes first.
            self.flush_piece(false, rx)?;
        }
        match frame.opcode {
            OpCode::Ping => {
                let payload = std::mem::take(&mut self.control);
                let answer = (!self.close_queued).then_some(OpCode::Pong);
                self.queue_reply(answer, &payload);
                rx.control(Event::Ping(payload));
            }
            OpCode::Pong => rx.control(Event::Pong(std::mem::take(&mut self.control))),
            OpCode::Close => self.receive_close(rx)?,
            _ if frame.fin => self.finish_message(rx)?,
            _ => {}
        }
        Ok(())
    }

    fn finish_message(&mut self, rx: &mut impl Receiver) -> Step {
        if self.pieces {
            return self.finish_piece_message(rx);
        }
        if self.compressed {
            let deflate = self.deflate.as_mut().expect("deflate negotiated");
            let max = self.config.max_message_size;
            deflate
                .decompress(&[], true, max, &mut self.message)
                .map_err(inflate_error)?;
        }
        if self.message_opcode.take() == Some(OpCode::Text) {
            self.utf8
                .check(&self.message, true)
                .map_err(|_| invalid_utf8())?;
            let text = utf8::validate(&self.message).map_err(|_| invalid_utf8())?;
            self.counters.messages_received += 1;
            rx.text(text);
        } else {
            self.counters.messages_received += 1;
            rx.binary(&self.message);
        }
        release_message(&mut self.message);
        Ok(())
    }

    /// Payload of a data frame of a message delivered in pieces: into the piece (inflated
    /// if compressed), delivering each time it fills.
    fn receive_piece_payload(
        &mut self,
        chunk: &[u8],
        mask: Option<[u8; 4]>,
        offset: usize,
        rx: &mut impl Receiver,
    ) -> Step {
        if !self.compressed {
            let mut at = offset;
            for part in chunk.chunks(MAX_PIECE) {
                append(&mut self.message, part, mask, at);
                at += part.len();
                self.check_piece_text()?;
                if self.message.len() >= MAX_PIECE {
                    self.flush_piece(false, rx)?;
                }
            }
            return Ok(());
        }
        let mut raw = std::mem::take(&mut self.raw);
        let input: &[u8] = match mask {
            Some(key) => {
                raw.clear();
                extend_masked(&mut raw, chunk, key, offset);
                &raw
            }
            None => chunk,
        };
        let result = self.inflate_pieces(input, rx);
        self.raw = raw;
        result
    }

    /// Inflates `input` into pieces, delivering each full one.
    fn inflate_pieces(&mut self, mut input: &[u8], rx: &mut impl Receiver) -> Step {
        loop {
            let cap = self.piece_cap();
            let deflate = self.deflate.as_mut().expect("deflate negotiated");
            let (taken, more) = deflate
                .inflate_piece(input, cap, &mut self.message)
                .map_err(inflate_error)?;
            input = &input[taken..];
            self.check_piece_total()?;
            self.check_piece_text()?;
            if self.message.len() >= MAX_PIECE {
                self.flush_piece(false, rx)?;
            }
            if input.is_empty() && !more {
                return Ok(());
            }
        }
    }

    /// How far the piece may fill: [`MAX_PIECE`], or one byte past the message's limit (to
    /// tell "at" from "over").
    fn piece_cap(&self) -> usize {
        let limit = self.pieces_limit.map_or(u64::MAX, |max| max as u64);
        let left = limit.saturating_sub(self.delivered).saturating_add(1);
        let room = usize::try_from(left).unwrap_or(usize::MAX);
        self.message.len().saturating_add(room).min(MAX_PIECE)
    }

    /// A text message in pieces fails on invalid UTF-8 as soon as it arrives, as a whole
    /// one does, not when its piece is handed over (the end of the read, a control frame,
    /// [`MAX_PIECE`]): the rest of the read is not parsed first (a later frame's error would
    /// take the close code). What was handed over has left `message`, so `utf8` starts
    /// again after each piece (`flush_piece`).
    fn check_piece_text(&mut self) -> Step {
        if self.message_opcode == Some(OpCode::Text) {
            self.utf8
                .check(&self.message, false)
                .map_err(|_| invalid_utf8())?;
        }
        Ok(())
    }

    fn check_piece_total(&self) -> Step {
        if let Some(max) = self.pieces_limit {
            if self.delivered + self.message.len() as u64 > max as u64 {
                return Err(violation(
                    1009,
                    "decompressed message exceeds the size limit",
                ));
            }
        }
        Ok(())
    }

    /// The last frame of a message delivered in pieces has ended: what is left, as its last
    /// piece.
    fn finish_piece_message(&mut self, rx: &mut impl Receiver) -> Step {
        if self.compressed {
            loop {
                let cap = self.piece_cap();
                let deflate = self.deflate.as_mut().expect("deflate negotiated");
                let done = deflate
                    .finish_piece_message(cap, &mut self.message)
                    .map_err(inflate_error)?;
                self.check_piece_total()?;
                if done {
                    break;
                }
                self.flush_piece(false, rx)?;
            }
        }
        self.flush_piece(true, rx)?;
        self.counters.messages_received += 1;
        self.message_opcode = None;
        self.pieces = false;
        self.delivered = 0;
        if self.message.capacity() > KEEP_CAPACITY {
            self.message = Vec::new();
        }
        Ok(())
    }

    /// Delivers what the piece holds (text: up to the last whole character; the rest waits
    /// for the next piece), or, with `fin`, all of it as the message's last piece. Nothing
    /// unless a message delivered in pieces is being received.
    #[inline(never)]
    fn flush_piece(&mut self, fin: bool, rx: &mut impl Receiver) -> Step {
        if !self.pieces || self.stopped() {
            return Ok(());
        }
        let Some(opcode) = self.message_opcode else {
            return Ok(());
        };
        let text = opcode == OpCode::Text;
        // More than MAX_PIECE waits only when a message switched to pieces midway
        // (set_delivery): then it goes in pieces of at most MAX_PIECE.
        loop {
            let valid = if text {
                match simdutf8::compat::from_utf8(&self.message) {
                    Ok(_) => self.message.len(),
                    Err(e) if e.error_len().is_none() && !fin => e.valid_up_to(),
                    Err(_) => return Err(invalid_utf8()),
                }
            } else {
                self.message.len()
            };
            let mut end = valid;
            if end > MAX_PIECE {
                end = MAX_PIECE;
                // Within valid UTF-8: back off continuation bytes to a character's start.
                while text && self.message[end] & 0xc0 == 0x80 {
                    end -= 1;
                }
            }
            let last = fin && end == self.message.len();
            if end == 0 && !last {
                return Ok(());
            }
            let piece = &self.message[..end];
            if text {
                let text = utf8::validate(piece).map_err(|_| invalid_utf8())?;
                rx.piece(Chunk::Text(text), last);
            } else {
                rx.piece(Chunk::Binary(piece), last);
            }
            self.delivered += end as u64;
            self.message.drain(..end);
            self.utf8.reset(); // what it had checked has gone with the piece
            if last {
                return Ok(());
            }
        }
    }

    fn receive_close(&mut self, rx: &mut impl Receiver) -> Step {
        let payload = std::mem::take(&mut self.control);
        self.close_received = true;
        let (code, reason) = match payload.len() {
            0 => (1005, String::new()),
            1 => return Err(violation(1002, "close frame with a one-byte payload")),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                if !is_valid_close_code(code) {
                    return Err(violation(1002, format!("invalid close code {code}")));
                }
                let reason = utf8::validate(&payload[2..]).map_err(|_| invalid_utf8())?;
                (code, reason.to_owned())
            }
        };
        self.close_code = Some(code);
        self.close_reason = Some(reason.clone());
        // RFC 6455 §5.5.1: answer with a close frame, echoing the peer's code and reason.
        let answer = (!self.close_queued).then_some(OpCode::Close);
        self.queue_reply(answer, &payload);
        rx.control(Event::Close { code, reason });
        Ok(())
    }

    /// Fails the connection (RFC 6455 §7.1.7): queue a close frame, stop reading.
    fn fail(&mut self, v: Violation, rx: &mut impl Receiver) {
        self.failed = true;
        self.frame = None;
        self.message.clear();
        self.pieces = false;
        let answer = (!self.close_queued).then_some(OpCode::Close);
        self.queue_reply(answer, &close_payload(v.code, &v.reason));
        self.close_code = Some(v.code);
        self.close_reason = Some(v.reason.clone());
        rx.control(Event::Failure {
            code: v.code,
            reason: v.reason,
        });
    }

    fn mask_key(&mut self) -> Option<[u8; 4]> {
        match self.role {
            Role::Client => Some(self.rng.mask_key()),
            Role::Server => None,
        }
    }

    /// Whether a frame from [`crate::frame::shared_text`] or [`crate::frame::shared_binary`], encoded once for many
    /// connections, may be written to this one as it is: a server (clients mask each frame
    /// with a key of their own) without compression, whose close frame has not left.
    pub fn accepts_shared_frames(&self) -> bool {
        self.role == Role::Server
            && self.deflate.is_none()
            && !self.close_sent
            && self.sending.is_none()
    }

    /// Whether permessage-deflate was negotiated.
    pub fn compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Whether a compressor or decompressor is allocated now.
    pub fn holds_compression_state(&self) -> bool {
        self.deflate
            .as_ref()
            .is_some_and(PerMessageDeflate::holds_state)
    }

    /// Frees what an idle compressed connection does not need: its compressor and
    /// decompressor (rebuilt from the kept history by the next message; see
    /// [`PerMessageDeflate::compact`]) and its message buffers, if no message went either way
    /// since the last call. Called periodically, this frees them after one to two periods
    /// of silence. True if compression state was freed.
    pub fn compact_if_idle(&mut self) -> bool {
        let Some(deflate) = self.deflate.as_mut() else {
            return false;
        };
        if !deflate.compact_if_idle() {
            return false;
        }
        self.scratch = Vec::new();
        self.raw = Vec::new();
        if self.message.is_empty() && self.message_opcode.is_none() {
            self.message = Vec::new();
        }
        true
    }

    /// The connection is over (its transport closed): frees its compression state and
    /// buffers at once, rather than whenever the last reference to it goes. Counters,
    /// close code and reason stay; nothing can be received or sent afterwards.
    pub fn release(&mut self) {
        self.eof = true;
        self.close_sent = true;
        self.close_queued = true;
        self.deflate = None;
        self.frame = None;
        self.message_opcode = None;
        self.pieces = false;
        self.sending = None;
        self.message = Vec::new();
        self.raw = Vec::new();
        self.scratch = Vec::new();
        self.control = Vec::new();
        self.replies = VecDeque::new();
    }

    /// Encodes a text message as one frame (compressed if negotiated, masked by a client),
    /// borrowing `text` or the engine's compression buffer: write it out with
    /// [`OutFrame::write_to`], [`OutFrame::append_to`] or [`OutFrame::unmasked_parts`]
    /// before the next call. Fails with [`SendError::Closed`] once this side's close frame
    /// has left.
    pub fn encode_text<'a>(&'a mut self, text: &'a str) -> Result<OutFrame<'a>, SendError> {
        self.encode_data(OpCode::Text, text.as_bytes())
    }

    /// Encodes a binary message as one frame, like [`Connection::encode_text`].
    pub fn encode_binary<'a>(&'a mut self, data: &'a [u8]) -> Result<OutFrame<'a>, SendError> {
        self.encode_data(OpCode::Binary, data)
    }

    fn encode_data<'a>(
        &'a mut self,
        opcode: OpCode,
        payload: &'a [u8],
    ) -> Result<OutFrame<'a>, SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        if self.sending.is_some() {
            return Err(SendError::MessageInProgress);
        }
        let mask = self.mask_key();
        let frame = match self.deflate.as_mut() {
            Some(deflate) => {
                self.scratch.clear();
                deflate.compress(payload, &mut self.scratch);
                OutFrame::new(opcode, true, &self.scratch, mask)
            }
            None => OutFrame::new(opcode, false, payload, mask),
        };
        self.counters.messages_sent += 1;
        self.counters.bytes_sent += frame.len() as u64;
        Ok(frame)
    }

    /// Encodes one fragment of a message sent in pieces (RFC 6455 §5.4), compressed if
    /// negotiated (RFC 7692: RSV1 on the first frame only, each fragment flushed so the peer
    /// can inflate it at once) and masked by a client. `first` starts a message of `chunk`'s
    /// kind; otherwise the fragment continues the open one, whose kind it must have; `fin`
    /// ends it. Text comes as `&str`, so the message is valid UTF-8 however it is cut.
    /// Control frames may be sent between fragments; no other message may be, until the last
    /// fragment ([`SendError::MessageInProgress`]). Fails with
    /// [`SendError::NoMessageInProgress`] for a continuation with no message open,
    /// [`SendError::FragmentKind`] for a fragment of the other kind, [`SendError::Closed`]
    /// once this side's close frame has left.
    ///
    /// ```
    /// use wschannel::{Chunk, Config, Connection, Event, Role};
    ///
    /// let mut server = Connection::new(Role::Server, Config::default());
    /// let mut client = Connection::new(Role::Client, Config::default());
    /// let mut wire = server.encode_fragment(Chunk::Text("Hel"), true, false)?.to_vec();
    /// wire.extend(server.encode_fragment(Chunk::Text("lo"), false, true)?.to_vec());
    /// let mut events = Vec::new();
    /// client.receive_data(&wire, &mut events);
    /// assert_eq!(events, [Event::Text("Hello".into())]);
    /// # Ok::<(), wschannel::SendError>(())
    /// ```
    pub fn encode_fragment<'a>(
        &'a mut self,
        chunk: Chunk<'a>,
        first: bool,
        fin: bool,
    ) -> Result<OutFrame<'a>, SendError> {
        if self.close_sent {
            return Err(SendError::Closed);
        }
        let opcode = match (first, self.sending) {
            (true, Some(_)) => return Err(SendError::MessageInProgress),
            (false, None) => return Err(SendError::NoMessageInProgress),
            (false, Some(open)) if open != chunk.opcode() => {
                return Err(SendError::FragmentKind(match open {
                    OpCode::Text => "text",
                    _ => "binary",
                }))
            }
            (true, None) => chunk.opcode(),
            (false, Some(_)) => OpCode::Continuation,
        };
        self.sending = if fin { None } else { Some(chunk.opcode()) };
        let mask = self.mask_key();
        let payload = chunk.bytes();
        let frame = match self.deflate.as_mut() {
            Some(deflate) => {
                self.scratch.clear();
                deflate.compress_fragment(payload, fin, &mut self.scratch);
                OutFrame::fragment(opcode, first, fin, &self.scratch, mask)
            }
            None => OutFrame::fragment(opcode, false, fin, payload, mask),
        };
        if fin {
            self.counters.messages_sent += 1;
        }
        self.counters.bytes_sent += frame.len() as u64;
        Ok(frame)
    }

    /// Encodes a ping carrying `data` (at most 125 bytes, else
    /// [`SendError::ControlTooLong`]). Fails with [`SendError::Closed`] once this side's
    /// close frame has left.
    pub fn encode_ping<'a>(&mut self, data: &'a [u8]) -> Result<OutFrame<'a>, SendError> {
        self.encode_control(OpCode::Ping, data)?
            .ok_or(SendError::Closed)
    }

    /// Encodes an unsolicited pong carrying `data` (at most 125 bytes, else
    /// [`SendError::ControlTooLong`]); pings are answered by the engine itself. `None` once
    /// this side's close frame has left: the pong is dropped, which is not an error.
    pub fn encode_pong<'a>(&mut self, data: &'a [u8]) -> Result<Option<OutFrame<'a>>, SendError> {
        self.encode_control(OpCode::Pong, data)
    }

    fn encode_control<'a>(
        &mut self,
        opcode: OpCode,
        payload: &'a [u8],
    ) -> Result<Option<OutFrame<'a>>, SendError> {
        if payload.len() > 125 {
            return Err(SendError::ControlTooLong(payload.len()));
        }
        if self.close_sent {
            return if opcode == OpCode::Pong {
                Ok(None)
            } else {
                Err(SendError::Closed)
            };
        }
        let mask = self.mask_key();
        let frame = OutFrame::new(opcode, false, payload, mask);
        self.counters.bytes_sent += frame.len() as u64;
        Ok(Some(frame))
    }

    /// A text message as one frame (compressed if negotiated, masked by a client), in a new
    /// vector. Fails with [`SendError::Closed`] once this side's close frame has left.
    ///
    /// ```
    /// use wschannel::{Config, Connection, Role};
    ///
    /// let mut server = Connection::new(Role::Server, Config::default());
    /// assert_eq!(server.send_text("hi").unwrap(), b"\x81\x02hi");
    /// ```
    pub fn send_text(&mut self, text: &str) -> Result<Vec<u8>, SendError> {
        Ok(self.encode_text(text)?.to_vec())
    }

    /// A binary message as one frame, like [`Connection::send_text`].
    pub fn send_binary(&mut self, data: &[u8]) -> Result<Vec<u8>, SendError> {
        Ok(self.encode_binary(data)?.to_vec())
    }

    /// A ping frame carrying `data` (at most 125 bytes, else [`SendError::ControlTooLong`]).
    /// Fails with [`SendError::Closed`] once this side's close frame has left.
    pub fn send_ping(&mut self, data: &[u8]) -> Result<Vec<u8>, SendError> {
        Ok(self.encode_ping(data)?.to_vec())
    }

    /// An unsolicited pong frame carrying `data` (at most 125 bytes, else
    /// [`SendError::ControlTooLong`]); pings are answered by the engine itself. Once this
    /// side's close frame has left, the pong is dropped: the result is empty, not an error.
    pub fn send_pong(&mut self, data: &[u8]) -> Result<Vec<u8>, SendError> {
        Ok(self
            .encode_pong(data)?
            .map(|f| f.to_vec())
            .unwrap_or_default())
    }

    /// Starts the closing handshake (RFC 6455 §5.5.1, §7.4). With no code the frame is empty.
    pub fn send_close(&mut self, code: Option<u16>, reason: &str) -> Result<Vec<u8>, SendError> {
        if self.close_queued {
            return Err(SendError::Closed);
        }
        let payload = match code {
            None if reason.is_empty() => Vec::new(),
            None => return Err(SendError::ReasonWithoutCode),
            Some(code) if !is_valid_close_code(code) => return Err(SendError::InvalidCode(code)),
            Some(_) if reason.len() > 123 => return Err(SendError::ReasonTooLong(reason.len())),
            Some(code) => close_payload(code, reason),
        };
        let mask = self.mask_key();
        self.close_queued = true;
        self.close_sent = true;
        let frame = OutFrame::new(OpCode::Close, false, &payload, mask).to_vec();
        self.counters.bytes_sent += frame.len() as u64;
        Ok(frame)
    }
}

fn append(dst: &mut Vec<u8>, chunk: &[u8], mask: Option<[u8; 4]>, offset: usize) {
    match mask {
        Some(key) => extend_masked(dst, chunk, key, offset),
        None => dst.extend_from_slice(chunk),
    }
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}

fn invalid_utf8() -> Violation {
    violation(1007, "invalid UTF-8 in text")
}

/// The most compressed bytes a message may take on the wire when it may inflate to at most
/// `max` bytes. Deflate can make data larger: zlib falls back to stored blocks (5 bytes more
/// per 64 KiB, RFC 1951 §3.2.4), an encoder using fixed Huffman codes only spends 9 bits on
/// some bytes (an eighth more, §3.2.6); plus room for the empty blocks flushes add. A frame
/// announcing more is refused from its header.
fn compressed_limit(max: usize) -> u64 {
    let max = max as u64;
    max.saturating_add(max / 8).saturating_add(4096)
}

fn too_big(what: &str, size: u64, max: impl std::fmt::Display) -> Violation {
    violation(
        1009,
        format!("{what} of {size} bytes exceeds the limit of {max} bytes"),
    )
}

fn inflate_error(e: DecompressError) -> Violation {
    match e {
        DecompressError::TooBig => violation(1009, "decompressed message exceeds the size limit"),
        DecompressError::Corrupt => violation(1007, "invalid compressed data"),
    }
}

#[cfg(test)]
mod streaming_tests;
#[cfg(test)]
pub(crate) mod tests;
