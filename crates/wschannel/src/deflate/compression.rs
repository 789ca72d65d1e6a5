//! Compression: one connection's compressor and decompressor (RFC 7692 §7.2).

use std::cell::RefCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::{Decompress, FlushDecompress, Status};
use zlib_rs::{Deflate, DeflateFlush};

use super::negotiation::clamp_bits;
use super::{DeflateParams, MAX_LEVEL, MAX_WINDOW_BITS, MIN_INFLATE_STEP, MIN_WINDOW_BITS, TAIL};
use crate::frame::Role;

/// Why an incoming compressed message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    /// The decompressed message would exceed the size limit (close with 1009).
    #[error("decompressed message exceeds the size limit")]
    TooBig,
    /// The payload is not valid DEFLATE data, or refers to history it may not use (close with
    /// 1007).
    #[error("invalid compressed data")]
    Corrupt,
}

/// Per connection compression state, role-aware: as a Server, the compressor uses
/// `server_max_window_bits` / `server_no_context_takeover` and the decompressor `client_*`; as a
/// Client the opposite.
///
/// The compressor and decompressor are created on first use (a connection that only receives
/// never pays for a compressor) and reused for every later message: no context takeover resets
/// them in place rather than reallocating.
///
/// A server's connection *lends* them back after each message (a client keeps them): to a
/// small pool per thread (four of each), from which the next message on any of the
/// thread's server connections takes one. A connection then holds only its history (at most
/// two windows each way) between messages, so a server's many connections cost a few KiB each
/// even while busy. The connection that lent a state takes it back as it is when nothing used
/// it since; another resets it and gives it the history as a preset dictionary, as
/// [`PerMessageDeflate::compact`]'s rebuild does (with zlib-rs, a compressor's reset clears a
/// 128 KiB hash table and the dictionary is hashed again: a few microseconds a message while
/// more than four server connections are busy in one thread).
pub struct PerMessageDeflate {
    role: Role,
    params: DeflateParams,
    level: u32,
    /// Window bits of our compressor (8..=15).
    compress_bits: u8,
    reset_compressor: bool,
    reset_decompressor: bool,
    compressor: Option<Deflate>,
    decompressor: Option<Inflater>,
    /// Lend the compressor and decompressor back after each message (servers).
    lends: bool,
    /// Tells this connection's lent states from the others' (unique in the process).
    id: u64,
    /// Messages compressed, and messages decompressed: a lent state is this connection's
    /// own, as it is, while its generation still matches.
    sent_generation: u64,
    received_generation: u64,
    /// The last bytes given to the compressor (at most its window), with context takeover:
    /// what a compressor rebuilt after [`PerMessageDeflate::compact`] starts from.
    pub(super) sent_history: Vec<u8>,
    /// The last bytes the decompressor produced (at most the peer's window), likewise.
    pub(super) received_history: Vec<u8>,
    /// Where the message being decompressed starts in the output, once it has begun.
    message_start: Option<usize>,
    /// A message is being inflated in pieces ([`PerMessageDeflate::inflate_piece`]): its
    /// decompressor stays (compaction keeps it; it is lent only once the message ends).
    inflating_pieces: bool,
    /// A message went either way since the last [`PerMessageDeflate::compact_if_idle`].
    active: bool,
}

impl fmt::Debug for PerMessageDeflate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerMessageDeflate")
            .field("role", &self.role)
            .field("params", &self.params)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

/// Lent compressors and decompressors kept per thread (each kind).
pub(super) const SPARES_KEPT: usize = 4;

/// A compressor or decompressor lent back after a message, with whose context it holds.
struct Spare<T> {
    owner: u64,
    generation: u64,
    /// The compressor's window bits and level (0 for decompressors, which are all alike).
    kind: u32,
    state: T,
}

#[derive(Default)]
struct Spares {
    compressors: Vec<Spare<Deflate>>,
    decompressors: Vec<Spare<Inflater>>,
}

thread_local! {
    static SPARES: RefCell<Spares> = RefCell::new(Spares::default());
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Takes the spare of `kind` whose context is `owner`'s at `generation` (true: as it is); else
/// one no connection owns any more (false: to be reset); else, when [`SPARES_KEPT`]
/// connections already keep theirs, the least recently lent of `kind`; else none (a new one
/// is made, so that up to [`SPARES_KEPT`] busy connections keep theirs).
fn take_spare<T>(
    spares: &mut Vec<Spare<T>>,
    owner: u64,
    generation: u64,
    kind: u32,
) -> Option<(T, bool)> {
    let own = spares.iter().position(|spare| {
        spare.owner == owner && spare.generation == generation && spare.kind == kind
    });
    if let Some(index) = own {
        return Some((spares.remove(index).state, true));
    }
    let unowned = spares
        .iter()
        .position(|spare| spare.owner == 0 && spare.kind == kind);
    if let Some(index) = unowned {
        return Some((spares.remove(index).state, false));
    }
    if spares.iter().filter(|spare| spare.owner != 0).count() < SPARES_KEPT {
        return None;
    }
    let index = spares.iter().position(|spare| spare.kind == kind)?;
    Some((spares.remove(index).state, false))
}

/// Lends `spare` back; if there are too many, one no connection owns goes first, else the
/// least recently lent.
fn lend_spare<T>(spares: &mut Vec<Spare<T>>, spare: Spare<T>) {
    spares.push(spare);
    if spares.len() > SPARES_KEPT {
        let index = spares
            .iter()
            .position(|spare| spare.owner == 0)
            .unwrap_or(0);
        spares.remove(index);
    }
}

/// A connection is gone: its spares in this thread are anyone's.
fn disown<T>(spares: &mut [Spare<T>], owner: u64) {
    for spare in spares.iter_mut().filter(|spare| spare.owner == owner) {
        spare.owner = 0;
    }
}

/// zlib's memory level for a compressor with a window of 2^`bits` bytes: `bits - 7` from 12
/// bits up, which sizes zlib's literal buffer to the window (8 for 32 KiB, zlib's default; 5
/// for 4 KiB, as websockets uses with its 4 KiB windows); zlib's default, 8, below 12 bits,
/// where smaller buffers make incompressible data grow by over 2 % (stored blocks cut short).
/// zlib-rs sizes its output buffers by it (16 KiB at 5, 112 KiB at 8); its hash table is
/// 64 Ki entries whatever the level.
pub(super) fn mem_level(bits: u8) -> i32 {
    if bits < 12 {
        8
    } else {
        (i32::from(bits) - 7).min(8)
    }
}

impl Drop for PerMessageDeflate {
    fn drop(&mut self) {
        if self.lends {
            let owner = self.id;
            // Not at all while the thread's pool is gone (its exit) or in use.
            let _ = SPARES.try_with(|spares| {
                if let Ok(mut spares) = spares.try_borrow_mut() {
                    disown(&mut spares.compressors, owner);
                    disown(&mut spares.decompressors, owner);
                }
            });
        }
    }
}

impl PerMessageDeflate {
    /// `level` is the zlib level 0..=9 (larger values are treated as 9); window bits outside
    /// 8..=15 are clamped.
    pub fn new(role: Role, params: DeflateParams, level: u32) -> Self {
        let (own_bits, own_reset, peer_reset) = match role {
            Role::Server => (
                params.server_max_window_bits,
                params.server_no_context_takeover,
                params.client_no_context_takeover,
            ),
            Role::Client => (
                params.client_max_window_bits,
                params.client_no_context_takeover,
                params.server_no_context_takeover,
            ),
        };
        PerMessageDeflate {
            role,
            params,
            level: level.min(MAX_LEVEL),
            compress_bits: clamp_bits(own_bits),
            reset_compressor: own_reset,
            reset_decompressor: peer_reset,
            compressor: None,
            decompressor: None,
            lends: role == Role::Server,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            sent_generation: 0,
            received_generation: 0,
            sent_history: Vec::new(),
            received_history: Vec::new(),
            message_start: None,
            inflating_pieces: false,
            active: false,
        }
    }

    /// Frees the compressor and decompressor (about 300 KiB with 32 KiB windows), keeping
    /// only the history that context takeover needs (at most one window each way). The next
    /// message rebuilds them from it: a preset dictionary (RFC 1951 allows back-references
    /// into it) gives the new compressor the same history the peer's decompressor has, and
    /// the new decompressor the history the peer's compressor may refer to.
    /// A message whose decompression has begun keeps its decompressor.
    pub fn compact(&mut self) {
        self.compressor = None;
        if self.message_start.is_none() && !self.inflating_pieces {
            self.decompressor = None;
        }
        if self.lends {
            let (owner, sent, received) = (self.id, self.sent_generation, self.received_generation);
            SPARES.with_borrow_mut(|spares| {
                spares
                    .compressors
                    .retain(|s| s.owner != owner || s.generation != sent);
                spares
                    .decompressors
                    .retain(|s| s.owner != owner || s.generation != received);
            });
        }
        let own_window = 1 << self.compress_bits.max(MIN_WINDOW_BITS + 1);
        let peer_window = 1 << self.peer_bits().max(MIN_WINDOW_BITS + 1);
        trim_to(&mut self.sent_history, own_window, own_window);
        trim_to(&mut self.received_history, peer_window, peer_window);
        self.sent_history.shrink_to_fit();
        self.received_history.shrink_to_fit();
    }

    /// [`PerMessageDeflate::compact`] if no message went either way since the last call.
    /// True if it compacted.
    pub fn compact_if_idle(&mut self) -> bool {
        if std::mem::take(&mut self.active) {
            return false;
        }
        let held = self.holds_state();
        self.compact();
        held && !self.holds_state()
    }

    /// Whether a compressor or decompressor with this connection's context is allocated: its
    /// own, or one it lent that this thread keeps unchanged.
    pub fn holds_state(&self) -> bool {
        if self.compressor.is_some() || self.decompressor.is_some() {
            return true;
        }
        let (owner, sent, received) = (self.id, self.sent_generation, self.received_generation);
        self.lends
            && SPARES.with_borrow(|spares| {
                spares
                    .compressors
                    .iter()
                    .any(|s| s.owner == owner && s.generation == sent)
                    || spares
                        .decompressors
                        .iter()
                        .any(|s| s.owner == owner && s.generation == received)
            })
    }

    /// Whether it holds a compressor or decompressor itself (not lent).
    #[cfg(test)]
    pub(super) fn owns_state(&self) -> bool {
        self.compressor.is_some() || self.decompressor.is_some()
    }

    /// The compressor's window bits and level, as a spare's kind.
    fn compressor_kind(&self) -> u32 {
        u32::from(self.compress_bits) << 8 | self.level
    }

    /// This connection's compressor: its own, a spare (reset and given the history unless it
    /// was this connection's, unchanged), or a new one.
    fn take_compressor(&mut self) -> Deflate {
        if let Some(deflater) = self.compressor.take() {
            return deflater;
        }
        let (owner, generation, kind) = (self.id, self.sent_generation, self.compressor_kind());
        let spare = if self.lends {
            SPARES.with_borrow_mut(|spares| {
                take_spare(&mut spares.compressors, owner, generation, kind)
            })
        } else {
            None
        };
        let mut deflater = match spare {
            Some((deflater, true)) => return deflater,
            Some((mut deflater, false)) => {
                deflater.reset();
                deflater
            }
            None => {
                // zlib refuses 8 bits for raw deflate; 9 bits never reach past 250 bytes (module
                // docs).
                let bits = self.compress_bits.max(MIN_WINDOW_BITS + 1);
                Deflate::new_with_config(zlib_rs::DeflateConfig {
                    level: self.level as i32,
                    window_bits: -i32::from(bits),
                    mem_level: mem_level(bits),
                    ..zlib_rs::DeflateConfig::default()
                })
            }
        };
        if !self.sent_history.is_empty() {
            deflater
                .set_dictionary(&self.sent_history)
                .expect("a preset dictionary on a new raw deflate stream");
        }
        deflater
    }

    /// This connection's decompressor for a message that begins, likewise.
    fn take_decompressor(&mut self) -> Inflater {
        if let Some(inflater) = self.decompressor.take() {
            return inflater;
        }
        let (owner, generation) = (self.id, self.received_generation);
        let spare = if self.lends {
            SPARES.with_borrow_mut(|spares| {
                take_spare(&mut spares.decompressors, owner, generation, 0)
            })
        } else {
            None
        };
        let mut inflater = match spare {
            Some((inflater, true)) => return inflater,
            Some((mut inflater, false)) => {
                inflater.reset();
                inflater
            }
            None => Inflater::new(),
        };
        if !self.received_history.is_empty() {
            inflater
                .inner
                .set_dictionary(&self.received_history)
                .expect("a preset dictionary on a new raw inflate stream");
        }
        inflater
    }

    /// Window bits of the peer's compressor, which bound how far back its messages refer.
    fn peer_bits(&self) -> u8 {
        match self.role {
            Role::Server => self.params.client_max_window_bits,
            Role::Client => self.params.server_max_window_bits,
        }
    }

    /// The role this end plays, which decides which half of the params applies to the
    /// compressor and which to the decompressor.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The agreed params it was created with.
    pub fn params(&self) -> DeflateParams {
        self.params
    }

    /// Compresses one whole message (RFC 7692 §7.2.1): raw DEFLATE, sync flush, trailing
    /// `00 00 ff ff` stripped. Appends to `out`. The compressor is reset after the message when
    /// this side has no context takeover. An empty message compresses to `[0x00]`.
    pub fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        if message.is_empty() {
            // The header byte of an empty stored block: what `00 00 00 ff ff` leaves once the tail
            // is stripped. Between messages the compressor sits on a byte boundary with nothing
            // pending, so this is valid whatever its history, which it leaves unchanged.
            out.push(0x00);
            return;
        }
        self.compress_flushed(message, true, out);
    }

    /// Compresses one fragment of a message sent in pieces (RFC 7692 §7.2.1 allows any
    /// fragmentation of the compressed payload): each fragment ends with a sync flush, so the
    /// peer can inflate it as it comes; only the last one (`fin`) has the trailing
    /// `00 00 ff ff` stripped, and after it the compressor is reset when this side has no
    /// context takeover. An empty non-final fragment compresses to nothing; an empty final
    /// one to `[0x00]` (after a sync flush the compressor sits on a byte boundary, as between
    /// messages). Appends to `out`.
    pub fn compress_fragment(&mut self, data: &[u8], fin: bool, out: &mut Vec<u8>) {
        if !data.is_empty() {
            self.compress_flushed(data, fin, out);
        } else if fin {
            out.push(0x00);
            // The compressor kept since the message's earlier fragments, if any.
            if let Some(deflater) = self.compressor.take() {
                self.end_compressed_message(deflater);
            }
        }
    }

    /// Compresses `message` (not empty) ending with a sync flush; keeps the history (with
    /// context takeover). With `fin` the message ends here: the trailing `00 00 ff ff` is
    /// stripped and the compressor reset (no context takeover) and lent (a server); without,
    /// the tail stays and the connection keeps the compressor for the next fragment.
    /// Appends to `out`.
    fn compress_flushed(&mut self, message: &[u8], fin: bool, out: &mut Vec<u8>) {
        self.active = true;
        let bits = self.compress_bits;
        let mut deflater = self.take_compressor();
        let start = out.len();
        out.reserve(compress_bound(message.len(), bits));
        let mut input = message;
        loop {
            if out.len() == out.capacity() {
                out.reserve((out.len() - start).max(64));
            }
            let room = out.capacity() - out.len();
            let before = out.len();
            let consumed_before = deflater.total_in();
            write_spare(out, room, |buf| {
                let before = deflater.total_out();
                deflater
                    .compress_uninit(input, buf, DeflateFlush::SyncFlush)
                    .expect("deflate of an in-memory buffer cannot fail");
                ((deflater.total_out() - before) as usize, ())
            });
            input = &input[(deflater.total_in() - consumed_before) as usize..];
            // zlib's rule: the flush is complete once a call returns with output space left.
            if input.is_empty() && out.len() - before < room {
                break;
            }
        }
        debug_assert!(out[start..].ends_with(&TAIL));
        if fin && out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
        if !self.reset_compressor {
            keep_tail(
                &mut self.sent_history,
                message,
                1 << bits.max(MIN_WINDOW_BITS + 1),
            );
        }
        if fin {
            self.end_compressed_message(deflater);
        } else {
            self.compressor = Some(deflater); // the rest of the message follows
        }
    }

    /// A message's compression is over: reset the compressor (no context takeover), then
    /// lend it (a server) or keep it.
    fn end_compressed_message(&mut self, mut deflater: Deflate) {
        if self.reset_compressor {
            deflater.reset();
        }
        self.sent_generation += 1;
        if self.lends {
            let spare = Spare {
                owner: self.id,
                generation: self.sent_generation,
                kind: self.compressor_kind(),
                state: deflater,
            };
            SPARES.with_borrow_mut(|spares| lend_spare(&mut spares.compressors, spare));
        } else {
            self.compressor = Some(deflater);
        }
    }

    /// Decompresses one fragment of a compressed message as it arrives (the frames of one
    /// message come in order). `fin` marks the last fragment: then `00 00 ff ff` is fed too
    /// (§7.2.2) and the decompressor is reset if the peer has no context takeover.
    ///
    /// Appends to `out`; fails with [`DecompressError::TooBig`] as soon as `out.len()` would
    /// exceed `max_size` (output grows in bounded steps, so a bomb is never inflated past the
    /// limit), [`DecompressError::Corrupt`] for invalid data. After an error the decompressor is
    /// reset; the connection is expected to fail.
    pub fn decompress(
        &mut self,
        fragment: &[u8],
        fin: bool,
        max_size: Option<usize>,
        out: &mut Vec<u8>,
    ) -> Result<(), DecompressError> {
        self.active = true;
        let limit = max_size.unwrap_or(usize::MAX);
        let window = 1 << self.peer_bits().max(MIN_WINDOW_BITS + 1);
        let mut inflater = self.take_decompressor();
        let start = *self.message_start.get_or_insert(out.len());
        let mut result = inflater.inflate(fragment, limit, out);
        if fin && result.is_ok() {
            result = inflater.finish_message(limit, out);
            if self.reset_decompressor {
                inflater.reset();
            } else if result.is_ok() {
                keep_tail(&mut self.received_history, &out[start..], window);
            }
        }
        if fin || result.is_err() {
            self.message_start = None;
        }
        let mut owner = self.id;
        if result.is_err() {
            inflater.reset();
            owner = 0; // no connection's context any more
        }
        if !fin && result.is_ok() {
            self.decompressor = Some(inflater); // the rest of the message follows
            return result;
        }
        self.end_decompressed_message(inflater, owner);
        result
    }
}

impl PerMessageDeflate {
    /// Inflates a fragment of a compressed message delivered in pieces: as much of `input`
    /// as fits until `out` holds `cap` bytes. Returns how many bytes of `input` it took and
    /// whether output may still be pending (it stopped at `cap`): then empty `out` and call
    /// again with the rest of the input (possibly none). Never fails with
    /// [`DecompressError::TooBig`]: the caller bounds the message by its choice of `cap`.
    pub fn inflate_piece(
        &mut self,
        input: &[u8],
        cap: usize,
        out: &mut Vec<u8>,
    ) -> Result<(usize, bool), DecompressError> {
        self.active = true;
        let window = 1 << self.peer_bits().max(MIN_WINDOW_BITS + 1);
        let inflater = self.piece_inflater();
        let start = out.len();
        let result = inflater.inflate_capped(input, cap, out);
        self.after_piece(result.is_ok(), start, window, out);
        result
    }

    /// The message delivered in pieces has ended (its last frame is inflated): feeds the
    /// tail (§7.2.2) with the same contract as [`PerMessageDeflate::inflate_piece`]. True
    /// once the message is complete (the decompressor then reset if the peer has no context
    /// takeover); false when it stopped at `cap`: empty `out` and call again.
    pub fn finish_piece_message(
        &mut self,
        cap: usize,
        out: &mut Vec<u8>,
    ) -> Result<bool, DecompressError> {
        self.active = true;
        let window = 1 << self.peer_bits().max(MIN_WINDOW_BITS + 1);
        let inflater = self.piece_inflater();
        let start = out.len();
        let result = inflater.finish_capped(cap, out);
        self.after_piece(result.is_ok(), start, window, out);
        if result == Ok(true) {
            self.end_piece_message(true);
        }
        result
    }

    /// The message inflated in pieces is over (or failed): reset the decompressor (no
    /// context takeover, or an error), then lend it (a server) or keep it.
    fn end_piece_message(&mut self, ok: bool) {
        self.inflating_pieces = false;
        let Some(mut inflater) = self.decompressor.take() else {
            return;
        };
        let mut owner = self.id;
        if !ok {
            inflater.reset();
            owner = 0; // no connection's context any more
        } else if self.reset_decompressor {
            inflater.reset();
        }
        self.end_decompressed_message(inflater, owner);
    }

    /// A received message's decompression is over (the inflater already reset where it had
    /// to be): lend it (a server; `owner` 0 when no connection's context is in it) or keep it.
    fn end_decompressed_message(&mut self, inflater: Inflater, owner: u64) {
        self.received_generation += 1;
        if self.lends {
            let spare = Spare {
                owner,
                generation: self.received_generation,
                kind: 0,
                state: inflater,
            };
            SPARES.with_borrow_mut(|spares| lend_spare(&mut spares.decompressors, spare));
        } else {
            self.decompressor = Some(inflater);
        }
    }

    /// A message being decompressed whole ([`PerMessageDeflate::decompress`]) goes on in
    /// pieces ([`PerMessageDeflate::inflate_piece`]): `out` is what [`decompress`] has put
    /// out so far, which joins the history now (the pieces add theirs as they come).
    ///
    /// [`decompress`]: PerMessageDeflate::decompress
    pub fn leave_whole_message(&mut self, out: &[u8]) {
        let Some(start) = self.message_start.take() else {
            return;
        };
        self.inflating_pieces = true;
        if !self.reset_decompressor {
            let window = 1 << self.peer_bits().max(MIN_WINDOW_BITS + 1);
            keep_tail(
                &mut self.received_history,
                &out[start.min(out.len())..],
                window,
            );
        }
    }

    /// The decompressor of a message inflated in pieces: the one it began with, or this
    /// connection's (taken back from the pool, or rebuilt from the history) when it begins.
    fn piece_inflater(&mut self) -> &mut Inflater {
        self.inflating_pieces = true;
        if self.decompressor.is_none() {
            let inflater = self.take_decompressor();
            self.decompressor = Some(inflater);
        }
        self.decompressor.as_mut().expect("just set")
    }

    /// Keeps the history of a piece's output (with context takeover), or resets after an
    /// error.
    fn after_piece(&mut self, ok: bool, start: usize, window: usize, out: &[u8]) {
        if !ok {
            self.end_piece_message(false);
        } else if !self.reset_decompressor {
            keep_tail(&mut self.received_history, &out[start..], window);
        }
    }
}

/// Appends `data` to `history`, which keeps at least its last `window` bytes and at most
/// twice that (trimmed only when over, so small messages do not move the window each time).
fn keep_tail(history: &mut Vec<u8>, data: &[u8], window: usize) {
    if data.len() >= window {
        history.clear();
        history.extend_from_slice(&data[data.len() - window..]);
    } else {
        history.extend_from_slice(data);
        trim_to(history, 2 * window, window);
    }
}

/// Keeps only the last `keep` bytes of `history` if it holds more than `over`.
fn trim_to(history: &mut Vec<u8>, over: usize, keep: usize) {
    if history.len() > over {
        history.drain(..history.len() - keep);
    }
}

/// An upper estimate of the compressed size, so that one allocation usually suffices. With a
/// 32 KiB window zlib falls back to stored blocks (about 5 bytes per 16 KiB); with smaller
/// windows a block may be Huffman-coded at up to 9 bits per byte.
fn compress_bound(len: usize, bits: u8) -> usize {
    let overhead = if bits >= MAX_WINDOW_BITS {
        (len >> 12) + (len >> 14)
    } else {
        (len >> 3) + (len >> 6)
    };
    len.saturating_add(overhead).saturating_add(32)
}

/// Runs a (de)compression call on at most `limit` bytes of `out`'s spare capacity and keeps the
/// bytes it reports as written.
fn write_spare<R>(
    out: &mut Vec<u8>,
    limit: usize,
    call: impl FnOnce(&mut [MaybeUninit<u8>]) -> (usize, R),
) -> R {
    let spare = out.spare_capacity_mut();
    let len = spare.len().min(limit);
    let (written, result) = call(&mut spare[..len]);
    assert!(
        written <= len,
        "the codec reported more output than it was given room for"
    );
    // SAFETY: the codec initialised the first `written` bytes of the spare capacity it was given.
    unsafe { out.set_len(out.len() + written) };
    result
}

/// The decompressor: always a 32 KiB window, which inflates any window the peer may use and
/// resets without reallocating (flate2 rebuilds a non-default-window inflater on reset).
struct Inflater {
    inner: Decompress,
    /// Data was fed since the message began or the stream last ended (BFINAL), so the tail must
    /// complete it. Without such data the tail would be read as the start of a stored block that
    /// never ends: an empty payload, or one that ends with a BFINAL block, needs no tail.
    needs_tail: bool,
    /// Bytes of the tail fed so far to a message delivered in pieces (`finish_capped`).
    tail_taken: usize,
}

impl Inflater {
    fn new() -> Self {
        Inflater {
            inner: Decompress::new(false),
            needs_tail: false,
            tail_taken: 0,
        }
    }

    fn reset(&mut self) {
        self.inner.reset(false);
        self.needs_tail = false;
        self.tail_taken = 0;
    }

    /// Feeds the tail that ends every message (§7.2.2).
    fn finish_message(&mut self, limit: usize, out: &mut Vec<u8>) -> Result<(), DecompressError> {
        if !self.needs_tail {
            return Ok(());
        }
        self.inflate(&TAIL, limit, out)?;
        self.needs_tail = false;
        Ok(())
    }

    /// Inflates `input` into `out` until `out` holds `cap` bytes: the bytes of `input` taken,
    /// and whether it stopped at `cap` (output may be pending; call again, with the rest).
    fn inflate_capped(
        &mut self,
        input: &[u8],
        cap: usize,
        out: &mut Vec<u8>,
    ) -> Result<(usize, bool), DecompressError> {
        let mut taken = 0;
        loop {
            if out.len() >= cap {
                return Ok((taken, true));
            }
            let rest = &input[taken..];
            let room = cap - out.len();
            if out.capacity() == out.len() {
                let want = rest.len().saturating_mul(4).max(MIN_INFLATE_STEP);
                out.reserve_exact(want.max(out.capacity()).min(room));
            }
            let window = (out.capacity() - out.len()).min(room);
            let inner = &mut self.inner;
            let consumed_before = inner.total_in();
            let len_before = out.len();
            let result = write_spare(out, window, |buf| {
                let before = inner.total_out();
                let result = inner.decompress_uninit(rest, buf, FlushDecompress::None);
                ((inner.total_out() - before) as usize, result)
            });
            let consumed = (inner.total_in() - consumed_before) as usize;
            let produced = out.len() - len_before;
            taken += consumed;
            if consumed > 0 {
                self.needs_tail = true;
            }
            match result {
                Err(_) => return Err(DecompressError::Corrupt),
                Ok(Status::StreamEnd) => {
                    self.inner.reset(false);
                    self.needs_tail = false;
                    if taken == input.len() {
                        return Ok((taken, false));
                    }
                }
                Ok(Status::Ok | Status::BufError) => {
                    if produced < window {
                        if taken == input.len() {
                            return Ok((taken, false));
                        }
                        if consumed == 0 && produced == 0 {
                            return Err(DecompressError::Corrupt);
                        }
                    }
                }
            }
        }
    }

    /// Feeds the tail that ends a message delivered in pieces, until `out` holds `cap`
    /// bytes: true once done.
    fn finish_capped(&mut self, cap: usize, out: &mut Vec<u8>) -> Result<bool, DecompressError> {
        if !self.needs_tail && self.tail_taken == 0 {
            return Ok(true);
        }
        let (taken, more) = self.inflate_capped(&TAIL[self.tail_taken..], cap, out)?;
        self.tail_taken += taken;
        if self.tail_taken == TAIL.len() && !more {
            self.tail_taken = 0;
            self.needs_tail = false;
            return Ok(true);
        }
        Ok(false)
    }

    /// Inflates all of `input` into `out`, never letting `out` grow past `limit + 1` bytes.
    fn inflate(
        &mut self,
        mut input: &[u8],
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), DecompressError> {
        if out.len() > limit {
            return Err(DecompressError::TooBig);
        }
        // Nothing is ever left pending between calls: each call below runs until the inflater
        // stops short of filling its output.
        if input.is_empty() {
            return Ok(());
        }
        let mut want = input.len().saturating_mul(4).max(256);
        loop {
            // One byte past the limit tells "exactly at the limit" from "over it".
            let room = (limit - out.len()).saturating_add(1);
            let spare = out.capacity() - out.len();
            if spare < want.min(room) {
                // Grow geometrically, but never reserve past the limit.
                let additional = want.max(out.capacity()).max(MIN_INFLATE_STEP).min(room);
                out.reserve_exact(additional);
            }
            want = 1;
            let window = (out.capacity() - out.len()).min(room);
            let inner = &mut self.inner;
            let consumed_before = inner.total_in();
            let len_before = out.len();
            let result = write_spare(out, window, |buf| {
                let before = inner.total_out();
                let result = inner.decompress_uninit(input, buf, FlushDecompress::None);
                ((inner.total_out() - before) as usize, result)
            });
            let consumed = (inner.total_in() - consumed_before) as usize;
            let produced = out.len() - len_before;
            input = &input[consumed..];
            if out.len() > limit {
                return Err(DecompressError::TooBig);
            }
            if consumed > 0 {
                self.needs_tail = true;
            }
            match result {
                Err(_) => return Err(DecompressError::Corrupt),
                Ok(Status::StreamEnd) => {
                    // A BFINAL block (§7.2.3.4): whatever follows starts a new stream.
                    self.inner.reset(false);
                    self.needs_tail = false;
                    if input.is_empty() {
                        return Ok(());
                    }
                }
                Ok(Status::Ok | Status::BufError) => {
                    if produced < window {
                        // Output to spare: the inflater took all it could.
                        if input.is_empty() {
                            return Ok(());
                        }
                        if consumed == 0 && produced == 0 {
                            // Input left, room left, no progress: never happens with valid data.
                            return Err(DecompressError::Corrupt);
                        }
                    }
                }
            }
        }
    }
}
