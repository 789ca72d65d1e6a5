//! The connection's lifecycle, sans I/O: when to close, who closes TCP, keepalive and every
//! deadline, decided in one place for every driver.
//!
//! A [`Session`] sits beside an [`engine::Connection`](crate::engine::Connection): the engine
//! turns bytes into frames and frames into bytes; the session decides what the connection
//! *does* about the peer's pings, pongs, close frames and failures, about the user's close,
//! about time passing and about the transport ending. Its inputs are method calls (bytes
//! received, EOF, transport lost, the user's close, the consumer's and the write buffer's
//! state, the current time); its output is an ordered queue of [`Action`]s for the driver
//! (write these bytes, pause reading, close the transport, ...) and one deadline
//! ([`Session::poll_timeout`]). In the style of quinn-proto: time is an input
//! ([`Session::handle_timeout`]), so the lifecycle is tested with a fake clock, no sleeps.
//!
//! A driver owns sockets, clocks, threads or tasks and the hot message path (messages go
//! straight from the engine to its consumer, and from its sink to the engine); it never
//! decides a close code or a timeout. After every input it drains [`Session::poll_action`]
//! in order, and (re)arms one timer at [`Session::poll_timeout`].
//!
//! The rules it applies (RFC 6455 §7):
//! - **Replies owed before the close echo.** When the peer's close (or a failure) arrives
//!   while this side has not closed, the session asks the driver to let its consumer answer
//!   the messages that came before it ([`Action::AwaitConsumer`]): the echo goes out once the
//!   driver calls [`Session::consumer_caught_up`] (at once if nothing is queued), the user
//!   closes, or the close deadline passes. Reading is paused meanwhile.
//! - **Who closes TCP.** Once the close frames have crossed, the server closes the transport;
//!   a client waits for the server's EOF until the close deadline. After failing the
//!   connection (a protocol violation by the peer), this side half-closes and reads, dropping
//!   everything, until the peer's EOF: closing with unread data could reset the connection
//!   and destroy the close frame on its way.
//! - **One close deadline.** Closing starts once (the user's close, the peer's close, a
//!   failure, a keepalive timeout) and arms one deadline, `close_timeout` later. It is
//!   extended only while the peer makes progress taking what was written before the close
//!   (the driver reports how many bytes are still unsent, [`Action::SampleUnsent`]), and once
//!   when the wait for the consumer ends it. When it passes, the transport is aborted.
//! - **Keepalive.** With a ping interval, a ping goes out after each interval without a pong;
//!   if no pong comes within the pong timeout the connection closes with 1001 (going away).
//!   Any pong restarts the interval; the round-trip time of the last answered ping is kept.
//! - **Pongs while writes wait.** While the driver's write buffer is over its limit, only the
//!   latest ping is answered (RFC 6455 §5.5.3), when writing resumes: a peer that pings
//!   without reading cannot grow the buffer by a pong per ping.
//! - **Reading.** Paused while the consumer's buffer is full, while a close reply waits for
//!   the consumer and (servers, [`SessionConfig::pause_reading_while_writes_wait`]) while the
//!   write buffer is over its limit; once the peer's close frame is in, reading only looks
//!   for the EOF and is never paused.
//! - **The final close code**: the peer's close code (1005 if it had none), or the code this
//!   side failed with, or 1001 after a keepalive timeout, or 1006 if the transport ended
//!   without a close frame.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use wschannel::{Action, Config, Connection, Role, Session, SessionConfig};
//!
//! let start = Instant::now();
//! let mut conn = Connection::new(Role::Server, Config::default());
//! let mut config = SessionConfig::new(Role::Server);
//! config.ping_interval = Some(Duration::from_secs(20));
//! let mut session = Session::new(Role::Server, config, start);
//!
//! // Nothing to do until the first keepalive ping is due.
//! assert_eq!(session.poll_action(), None);
//! let due = session.poll_timeout().expect("a ping is scheduled");
//! assert_eq!(due, start + Duration::from_secs(20));
//!
//! // The driver's timer fires: the session asks for a ping to be written.
//! session.handle_timeout(&mut conn, due, || 0);
//! assert_eq!(session.poll_action(), Some(Action::Write(b"\x89\x00".to_vec())));
//!
//! // The user closes: the close frame goes out and sending stops.
//! session.close(&mut conn, Some(1000), "", due).unwrap();
//! assert!(matches!(session.poll_action(), Some(Action::Write(_))));
//! assert_eq!(session.poll_action(), Some(Action::StopSending));
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::engine::{Connection, Event, Receiver, Role, SendError};

/// Close code sent and reported when keepalive gives up (RFC 6455 §7.4.1: going away).
pub const GOING_AWAY: u16 = 1001;
/// Close code reported when the transport ended without a close frame (RFC 6455 §7.1.5).
pub const ABNORMAL_CLOSURE: u16 = 1006;
/// How long the close reply waits for the consumer when no close timeout is set.
pub const DEFAULT_CONSUMER_WAIT: Duration = Duration::from_secs(10);

/// What a driver must do, in the order the session queued them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes after everything written before (a pong, a ping, a close frame).
    Write(Vec<u8>),
    /// No message may be sent any more: this side's close frame is out. The sink drops or
    /// refuses messages from now on.
    StopSending,
    /// Stop reading from the transport.
    PauseReading,
    /// Read from the transport again.
    ResumeReading,
    /// The peer closed (or the connection failed) behind messages the consumer may not have
    /// answered yet. Call [`Session::consumer_caught_up`] once it has (at once if the
    /// consumer has nothing queued): the close reply waits until then.
    AwaitConsumer,
    /// Report how many bytes written so far have not been taken by the peer yet (the
    /// driver's buffer and, where the OS says, the kernel's unacknowledged bytes) with
    /// [`Session::sample_unsent`]: the close deadline is extended while that number falls.
    SampleUnsent,
    /// No more messages will arrive: end the consumer's stream.
    EndStream,
    /// Shut down the writing half of the transport (TCP FIN) and keep reading (the engine
    /// drops what comes) until the peer's EOF.
    HalfClose,
    /// Close the transport once what was written has left.
    CloseTransport,
    /// Drop the transport now, discarding anything unsent.
    Abort,
    /// The connection is over; [`Session::close_code`] and [`Session::close_reason`] are
    /// final.
    Done,
}

/// Where the connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The opening handshake is in progress (see [`Session::opening`]).
    Opening,
    /// Messages flow both ways.
    Open,
    /// This side sent its close frame and waits for the peer's.
    CloseSent,
    /// The peer's close (or a failure) arrived; the reply waits for the consumer.
    AwaitingConsumer,
    /// The close frames crossed; a client waits for the server to close TCP.
    AwaitingEof,
    /// This side failed the connection, half-closed, and reads until the peer's EOF.
    Lingering,
    /// The driver was asked to close or abort the transport.
    ClosingTransport,
    /// The transport is gone ([`Action::Done`] was queued).
    Closed,
}

/// The lifecycle's settings. Durations are measured on the driver's clock.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Send a ping after this long without a pong; `None`: no keepalive.
    pub ping_interval: Option<Duration>,
    /// How long to wait for a pong before closing with 1001; `None`: the ping interval.
    pub pong_timeout: Option<Duration>,
    /// The close deadline (see the module docs); `None`: wait for the peer forever.
    pub close_timeout: Option<Duration>,
    /// How long the close reply may wait for the consumer when `close_timeout` is `None`.
    pub consumer_wait: Duration,
    /// Whether reading pauses while the driver's write buffer is over its limit (servers:
    /// a peer that sends without reading cannot make this side hold what it answers).
    /// Clients keep reading, so that two peers that both write more than they read cannot
    /// wait for each other forever.
    pub pause_reading_while_writes_wait: bool,
    /// Whether the transport can shut down its writing half alone (TCP can, TLS cannot).
    pub half_close: bool,
    /// Free the compression state of a connection idle for this long
    /// ([`Connection::compact_if_idle`]); `None`: never.
    pub compact_interval: Option<Duration>,
    /// The opening handshake's deadline, for a session made with [`Session::opening`].
    pub open_timeout: Option<Duration>,
}

impl SessionConfig {
    /// The settings of a side: no keepalive, a 10 s close deadline, half-close allowed;
    /// a server pauses reading while its writes wait.
    pub fn new(role: Role) -> Self {
        SessionConfig {
            ping_interval: None,
            pong_timeout: None,
            close_timeout: Some(Duration::from_secs(10)),
            consumer_wait: DEFAULT_CONSUMER_WAIT,
            pause_reading_while_writes_wait: role == Role::Server,
            half_close: true,
            compact_interval: None,
            open_timeout: None,
        }
    }
}

/// The lifecycle of one WebSocket connection: see the [module docs](self).
#[derive(Debug)]
pub struct Session {
    role: Role,
    config: SessionConfig,
    phase: Phase,
    /// The actions, each with whether it is a pong (pongs still queued when writes start
    /// to wait are coalesced into the owed pong).
    actions: VecDeque<(Action, bool)>,
    close_code: Option<u16>,
    close_reason: Option<String>,
    /// The peer's close frame arrived (or this side failed): nothing more will be taken.
    peer_closed: bool,
    stream_ended: bool,
    sending_stopped: bool,
    // Reading.
    reading: bool,
    consumer_full: bool,
    writes_waiting: bool,
    /// The latest ping's pong, held while writes wait.
    owed_pong: Vec<u8>,
    // Deadlines.
    open_deadline: Option<Instant>,
    close_deadline: Option<Instant>,
    /// Unsent bytes at the last sample, for the close deadline's progress rule.
    unsent: Option<usize>,
    next_ping: Option<Instant>,
    pong_deadline: Option<Instant>,
    ping_sent_at: Option<Instant>,
    round_trip: Option<Duration>,
    next_compaction: Option<Instant>,
}

impl Session {
    /// The session of a connection whose opening handshake just succeeded, at `now`.
    pub fn new(role: Role, config: SessionConfig, now: Instant) -> Self {
        let mut session = Self::opening(role, config, now);
        session.opened(now);
        session
    }

    /// The session of a connection whose opening handshake starts at `now`: if it has not
    /// finished by `open_timeout`, [`Session::handle_timeout`] aborts the transport.
    pub fn opening(role: Role, config: SessionConfig, now: Instant) -> Self {
        let open_deadline = config.open_timeout.map(|t| now + t);
        Session {
            role,
            config,
            phase: Phase::Opening,
            actions: VecDeque::new(),
            close_code: None,
            close_reason: None,
            peer_closed: false,
            stream_ended: false,
            sending_stopped: false,
            reading: true,
            consumer_full: false,
            writes_waiting: false,
            owed_pong: Vec::new(),
            open_deadline,
            close_deadline: None,
            unsent: None,
            next_ping: None,
            pong_deadline: None,
            ping_sent_at: None,
            round_trip: None,
            next_compaction: None,
        }
    }

    /// The opening handshake succeeded at `now`: keepalive and compaction start.
    pub fn opened(&mut self, now: Instant) {
        if self.phase != Phase::Opening {
            return;
        }
        self.phase = Phase::Open;
        self.open_deadline = None;
        self.next_ping = self.config.ping_interval.map(|i| now + i);
        self.next_compaction = self.config.compact_interval.map(|i| now + i);
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The settings.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Changes the settings of an open session; deadlines already armed stay as they are,
    /// a new ping interval starts from `now`.
    pub fn reconfigure(&mut self, config: SessionConfig, now: Instant) {
        let keepalive_changed = config.ping_interval != self.config.ping_interval;
        let compaction_changed = config.compact_interval != self.config.compact_interval;
        self.config = config;
        if self.phase == Phase::Open {
            if keepalive_changed {
                self.next_ping = self.config.ping_interval.map(|i| now + i);
                self.pong_deadline = None;
                self.ping_sent_at = None;
            }
            if compaction_changed {
                self.next_compaction = self.config.compact_interval.map(|i| now + i);
            }
        }
        self.update_reading();
    }

    /// Where the connection is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The close code to report: see the module docs. `None` while nothing has closed.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// The close reason that goes with [`Session::close_code`].
    pub fn close_reason(&self) -> Option<&str> {
        self.close_reason.as_deref()
    }

    /// The round-trip time of the last keepalive ping that was answered.
    pub fn round_trip(&self) -> Option<Duration> {
        self.round_trip
    }

    /// Whether messages may still be sent (this side's close frame is not out).
    pub fn sending(&self) -> bool {
        !self.sending_stopped
    }

    /// The next action for the driver, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front().map(|(action, _)| action)
    }

    /// Whether actions wait in [`Session::poll_action`].
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// When [`Session::handle_timeout`] must be called next (the earliest deadline).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        [
            self.open_deadline,
            self.close_deadline,
            self.next_ping,
            self.pong_deadline,
            self.next_compaction,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // Inputs.

    /// Feeds received bytes to `conn` and acts on the control events among them; messages
    /// go to `rx` as they are found, control events too (after the session saw them).
    pub fn receive_data(
        &mut self,
        conn: &mut Connection,
        data: &[u8],
        rx: &mut impl Receiver,
        now: Instant,
    ) {
        let mut tap = ControlTap::new(rx);
        conn.receive_data(data, &mut tap);
        self.handle_events(conn, &tap.into_controls(), now);
    }

    /// Acts on the control events a [`ControlTap`] kept, in order.
    pub fn handle_events(&mut self, conn: &mut Connection, events: &[Event], now: Instant) {
        for event in events {
            self.handle_event(conn, event, now);
        }
    }

    /// Acts on one control event from `conn` (a [`Receiver::control`] event). Call it for
    /// every ping, pong, close and failure, in order, when not using
    /// [`Session::receive_data`]: each takes its reply from `conn`.
    pub fn handle_event(&mut self, conn: &mut Connection, event: &Event, now: Instant) {
        match event {
            Event::Ping(_) => {
                let pong = conn.next_reply().unwrap_or_default();
                if pong.is_empty() {
                    return;
                }
                if self.writes_waiting {
                    self.owed_pong = pong; // only the latest ping needs an answer
                } else {
                    self.push_pong(pong);
                }
            }
            Event::Pong(_) => {
                if let Some(sent) = self.ping_sent_at.take() {
                    self.round_trip = Some(now.saturating_duration_since(sent));
                }
                if self.next_ping.is_some() || self.pong_deadline.is_some() {
                    self.pong_deadline = None;
                    self.next_ping = self.config.ping_interval.map(|i| now + i);
                }
            }
            Event::Close { code, reason } | Event::Failure { code, reason } => {
                self.close_code = Some(*code);
                self.close_reason = Some(reason.clone());
                self.peer_closed = true;
                self.stop_keepalive();
                match self.phase {
                    Phase::Opening | Phase::Open => {
                        self.arm_close_deadline(now, true);
                        self.phase = Phase::AwaitingConsumer;
                        self.update_reading();
                        self.push(Action::AwaitConsumer);
                    }
                    Phase::CloseSent => self.finish_close(conn, now),
                    _ => {
                        // A reply owed for a close that raced ours: take it in order.
                        let _ = conn.next_reply();
                        self.update_reading();
                    }
                }
            }
            Event::Text(_)
            | Event::Binary(_)
            | Event::TextPiece { .. }
            | Event::BinaryPiece { .. } => {}
        }
    }

    /// The consumer has answered the messages that came before the peer's close (or has
    /// stopped consuming): the close reply goes out.
    pub fn consumer_caught_up(&mut self, conn: &mut Connection, now: Instant) {
        if self.phase == Phase::AwaitingConsumer {
            self.finish_close(conn, now);
        }
    }

    /// The user closes: this side's close frame goes out (RFC 6455 §5.5.1) and the close
    /// deadline starts. Closing again, or after the peer's close was answered, does
    /// nothing; while the reply to the peer's close waits for the consumer, it goes out now.
    pub fn close(
        &mut self,
        conn: &mut Connection,
        code: Option<u16>,
        reason: &str,
        now: Instant,
    ) -> Result<(), SendError> {
        match self.phase {
            Phase::Opening | Phase::Open => {}
            Phase::AwaitingConsumer => {
                self.finish_close(conn, now);
                return Ok(());
            }
            _ => return Ok(()),
        }
        if conn.close_sent() {
            return Ok(());
        }
        let frame = conn.send_close(code, reason)?;
        self.send_owed_pong();
        self.push(Action::Write(frame));
        self.stop_sending();
        self.stop_keepalive();
        self.phase = Phase::CloseSent;
        self.arm_close_deadline(now, false);
        Ok(())
    }

    /// The peer closed its side of the transport (EOF).
    pub fn receive_eof(&mut self, conn: &mut Connection) {
        conn.receive_eof();
        if self.close_code.is_none() {
            self.close_code = Some(ABNORMAL_CLOSURE);
            self.close_reason = Some(String::new());
        }
        self.peer_closed = true;
        if !matches!(self.phase, Phase::ClosingTransport | Phase::Closed) {
            self.stop_keepalive();
            self.phase = Phase::ClosingTransport;
            self.push(Action::CloseTransport);
        }
    }

    /// The transport is gone (closed by either side, reset, or aborted).
    pub fn connection_lost(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.close_code.is_none() {
            self.close_code = Some(ABNORMAL_CLOSURE);
            self.close_reason = Some(String::new());
        }
        self.stop_sending();
        self.end_stream();
        self.phase = Phase::Closed;
        self.owed_pong = Vec::new();
        self.open_deadline = None;
        self.close_deadline = None;
        self.next_ping = None;
        self.pong_deadline = None;
        self.next_compaction = None;
        self.push(Action::Done);
    }

    /// Whether the consumer's buffer is full (its backpressure): reading pauses while it is.
    pub fn set_consumer_full(&mut self, full: bool) {
        self.consumer_full = full;
        self.update_reading();
    }

    /// Whether the driver's write buffer is over its limit. While it is, only the latest
    /// ping is answered, when it falls below: the pongs still queued (a driver that polls
    /// one action at a time and writes it learns of a full buffer between two pongs) are
    /// held as one.
    pub fn set_writes_waiting(&mut self, waiting: bool) {
        self.writes_waiting = waiting;
        if waiting {
            self.coalesce_queued_pongs();
        } else {
            self.send_owed_pong();
        }
        self.update_reading();
    }

    fn coalesce_queued_pongs(&mut self) {
        // Only the pongs ahead of everything else: a pong may not move past a close frame.
        let first_close = self
            .actions
            .iter()
            .position(|(_, pong)| !*pong)
            .unwrap_or(self.actions.len());
        let mut latest = None;
        let mut index = 0;
        self.actions.retain(|(action, pong)| {
            let keep = !*pong || index >= first_close;
            if !keep {
                if let Action::Write(bytes) = action {
                    latest = Some(bytes.clone());
                }
            }
            index += 1;
            keep
        });
        if let Some(pong) = latest {
            self.owed_pong = pong;
        }
    }

    fn push(&mut self, action: Action) {
        self.actions.push_back((action, false));
    }

    fn push_pong(&mut self, pong: Vec<u8>) {
        self.actions.push_back((Action::Write(pong), true));
    }

    /// The answer to [`Action::SampleUnsent`]: bytes written but not yet taken by the peer.
    pub fn sample_unsent(&mut self, unsent: usize) {
        self.unsent = Some(unsent);
    }

    /// Time has come to `now`: applies every deadline that passed. `unsent` is the number
    /// of bytes written but not yet taken by the peer (as for [`Action::SampleUnsent`]),
    /// read when a close deadline passes. Returns whether idle compression state was freed.
    pub fn handle_timeout(
        &mut self,
        conn: &mut Connection,
        now: Instant,
        unsent: impl FnOnce() -> usize,
    ) -> bool {
        if self.open_deadline.is_some_and(|d| d <= now) {
            self.open_deadline = None;
            if self.phase == Phase::Opening {
                self.abort();
                return false;
            }
        }
        if self.close_deadline.is_some_and(|d| d <= now) {
            self.close_deadline_passed(conn, now, unsent());
        }
        if self.pong_deadline.is_some_and(|d| d <= now) {
            self.pong_deadline = None;
            self.keepalive_failed(conn, now);
        }
        if self.next_ping.is_some_and(|d| d <= now) {
            self.next_ping = None;
            self.send_ping(conn, now);
        }
        let mut freed = false;
        if let Some(at) = self.next_compaction.filter(|d| *d <= now) {
            freed = conn.compact_if_idle();
            self.next_compaction = self.config.compact_interval.map(|i| at.max(now) + i);
        }
        freed
    }

    // The rules.

    fn finish_close(&mut self, conn: &mut Connection, now: Instant) {
        self.send_owed_pong(); // before the close frame, after which nothing may follow
        let reply = conn.next_reply().unwrap_or_default();
        if !reply.is_empty() {
            self.push(Action::Write(reply));
        }
        self.stop_sending();
        self.stop_keepalive();
        if self.close_deadline.is_none() || self.phase == Phase::AwaitingConsumer {
            // The wait for the consumer ends: the handshake's end gets its own interval.
            self.close_deadline = None;
            self.arm_close_deadline(now, false);
        }
        if conn.close_expected() {
            self.end_stream();
            if self.peer_closed_cleanly(conn) || !self.config.half_close {
                self.phase = Phase::ClosingTransport;
                self.push(Action::CloseTransport);
            } else {
                self.phase = Phase::Lingering;
                self.push(Action::HalfClose);
            }
        } else {
            // A client waits for the server to close TCP. Its stream ends then, not now: a
            // program that stops once the stream has ended must not leave the socket open.
            self.phase = Phase::AwaitingEof;
            if self.config.close_timeout.is_none() {
                self.end_stream();
            }
        }
        self.update_reading();
    }

    fn peer_closed_cleanly(&self, conn: &Connection) -> bool {
        conn.close_received()
    }

    fn close_deadline_passed(&mut self, conn: &mut Connection, now: Instant, unsent: usize) {
        self.close_deadline = None;
        if self.phase == Phase::AwaitingConsumer {
            self.finish_close(conn, now);
            return;
        }
        // The peer took some of what was written since the last sample: give it more time.
        let progress = self.unsent.is_some_and(|before| unsent < before);
        if progress {
            if let Some(timeout) = self.config.close_timeout {
                self.unsent = Some(unsent);
                self.close_deadline = Some(now + timeout);
                return;
            }
        }
        self.abort();
    }

    fn keepalive_failed(&mut self, conn: &mut Connection, now: Instant) {
        if self.phase != Phase::Open {
            return;
        }
        self.close_code = Some(GOING_AWAY);
        self.close_reason = Some(String::new());
        if let Ok(frame) = conn.send_close(Some(GOING_AWAY), "") {
            self.send_owed_pong();
            self.push(Action::Write(frame));
        }
        self.stop_sending();
        self.end_stream();
        self.stop_keepalive();
        self.phase = Phase::CloseSent;
        self.arm_close_deadline(now, false);
    }

    fn send_ping(&mut self, conn: &mut Connection, now: Instant) {
        if self.phase != Phase::Open {
            return;
        }
        if let Ok(ping) = conn.send_ping(b"") {
            self.push(Action::Write(ping));
            self.ping_sent_at = Some(now);
            let timeout = self.config.pong_timeout.or(self.config.ping_interval);
            self.pong_deadline = timeout.map(|t| now + t);
        }
    }

    fn arm_close_deadline(&mut self, now: Instant, for_consumer: bool) {
        if self.close_deadline.is_some() {
            return;
        }
        let timeout = match self.config.close_timeout {
            Some(timeout) => timeout,
            None if for_consumer => self.config.consumer_wait,
            None => return,
        };
        self.close_deadline = Some(now + timeout);
        self.unsent = None;
        self.push(Action::SampleUnsent);
    }

    fn abort(&mut self) {
        if self.phase != Phase::Closed {
            self.phase = Phase::ClosingTransport;
            self.push(Action::Abort);
        }
    }

    fn stop_keepalive(&mut self) {
        self.next_ping = None;
        self.pong_deadline = None;
        self.ping_sent_at = None;
    }

    fn stop_sending(&mut self) {
        if !self.sending_stopped {
            self.sending_stopped = true;
            self.push(Action::StopSending);
        }
    }

    fn end_stream(&mut self) {
        if !self.stream_ended {
            self.stream_ended = true;
            self.push(Action::EndStream);
        }
    }

    fn send_owed_pong(&mut self) {
        if !self.owed_pong.is_empty() {
            let pong = std::mem::take(&mut self.owed_pong);
            self.push_pong(pong);
        }
    }

    fn update_reading(&mut self) {
        let want = match self.phase {
            Phase::Closed | Phase::ClosingTransport => return,
            Phase::AwaitingConsumer => false,
            Phase::Lingering => true,
            _ if self.peer_closed => true, // only the EOF is left to read
            _ => {
                !(self.consumer_full
                    || (self.writes_waiting && self.config.pause_reading_while_writes_wait))
            }
        };
        if want != self.reading {
            self.reading = want;
            self.push(if want {
                Action::ResumeReading
            } else {
                Action::PauseReading
            });
        }
    }
}

/// A [`Receiver`] that passes everything on to the driver's receiver and keeps a copy of
/// the control events for [`Session::handle_events`]: for a driver that feeds the engine
/// itself (several reads, reads in place) rather than through [`Session::receive_data`].
pub struct ControlTap<'a, R: Receiver> {
    inner: &'a mut R,
    controls: Vec<Event>,
}

impl<'a, R: Receiver> ControlTap<'a, R> {
    /// Wraps the driver's receiver.
    pub fn new(inner: &'a mut R) -> Self {
        ControlTap {
            inner,
            controls: Vec::new(),
        }
    }

    /// The control events seen, in order.
    pub fn into_controls(self) -> Vec<Event> {
        self.controls
    }
}

impl<R: Receiver> Receiver for ControlTap<'_, R> {
    fn text(&mut self, text: &str) {
        self.inner.text(text);
    }
    fn binary(&mut self, data: &[u8]) {
        self.inner.binary(data);
    }
    fn control(&mut self, event: Event) {
        self.controls.push(event.clone());
        self.inner.control(event);
    }
    fn piece(&mut self, piece: crate::engine::Chunk<'_>, fin: bool) {
        self.inner.piece(piece, fin);
    }
}

#[cfg(test)]
mod tests;
