//! The lifecycle driven by a fake clock: instants built by adding durations, no sleeps.

use super::*;
use crate::engine::Config;
use crate::frame::Header;

const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];
const SECOND: Duration = Duration::from_secs(1);

/// A frame the peer sends: masked when the peer is a client (we are the server).
fn frame(opcode: u8, payload: &[u8], to: Role) -> Vec<u8> {
    let mask = (to == Role::Server).then_some(KEY);
    crate::engine::tests::frame(0x80 | opcode, payload, mask)
}

fn close_frame(code: u16, reason: &str, to: Role) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    frame(0x8, &payload, to)
}

/// What this side wrote, parsed: (opcode, payload) per frame.
fn written(actions: &[Action]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    for action in actions {
        if let Action::Write(bytes) = action {
            let mut rest = &bytes[..];
            while let Some((header, n)) = Header::parse(rest) {
                let len = header.len as usize;
                let mut payload = rest[n..n + len].to_vec();
                if let Some(key) = header.mask {
                    crate::mask::apply_mask(&mut payload, key, 0);
                }
                frames.push((header.opcode, payload));
                rest = &rest[n + len..];
            }
        }
    }
    frames
}

struct Side {
    conn: Connection,
    session: Session,
    t0: Instant,
    messages: Vec<Event>,
}

impl Side {
    fn new(role: Role, tweak: impl FnOnce(&mut SessionConfig)) -> Self {
        let mut config = SessionConfig::new(role);
        tweak(&mut config);
        let t0 = Instant::now();
        Side {
            conn: Connection::with_seed(role, Config::default(), 3),
            session: Session::new(role, config, t0),
            t0,
            messages: Vec::new(),
        }
    }

    fn server() -> Self {
        Self::new(Role::Server, |_| {})
    }

    fn client() -> Self {
        Self::new(Role::Client, |_| {})
    }

    fn at(&self, seconds: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(seconds)
    }

    fn role(&self) -> Role {
        self.session.role()
    }

    fn receive(&mut self, bytes: &[u8], seconds: f64) -> Vec<Action> {
        let now = self.at(seconds);
        let mut events = Vec::new();
        self.session
            .receive_data(&mut self.conn, bytes, &mut events, now);
        self.messages.extend(events);
        self.actions()
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.session.poll_action()).collect()
    }

    fn tick(&mut self, seconds: f64, unsent: usize) -> Vec<Action> {
        let now = self.at(seconds);
        self.session.handle_timeout(&mut self.conn, now, || unsent);
        self.actions()
    }

    fn close(&mut self, code: Option<u16>, seconds: f64) -> Vec<Action> {
        let now = self.at(seconds);
        self.session
            .close(&mut self.conn, code, "", now)
            .expect("a valid close");
        self.actions()
    }

    fn caught_up(&mut self, seconds: f64) -> Vec<Action> {
        let now = self.at(seconds);
        self.session.consumer_caught_up(&mut self.conn, now);
        self.actions()
    }

    fn deadline(&self) -> Option<f64> {
        self.session
            .poll_timeout()
            .map(|t| t.duration_since(self.t0).as_secs_f64())
    }
}

fn without_samples(actions: Vec<Action>) -> Vec<Action> {
    actions
        .into_iter()
        .filter(|a| *a != Action::SampleUnsent)
        .collect()
}

#[test]
fn a_server_answers_the_peers_close_once_the_consumer_caught_up_then_closes_tcp() {
    let mut s = Side::server();
    let actions = s.receive(&close_frame(1000, "bye", Role::Server), 0.0);
    assert_eq!(
        without_samples(actions),
        [Action::PauseReading, Action::AwaitConsumer]
    );
    assert_eq!(s.session.phase(), Phase::AwaitingConsumer);
    assert_eq!(s.session.close_code(), Some(1000));
    assert_eq!(s.session.close_reason(), Some("bye"));
    let actions = s.caught_up(0.1);
    assert_eq!(written(&actions), [(0x8, b"\x03\xe8bye".to_vec())]);
    assert_eq!(
        without_samples(actions)[1..],
        [
            Action::StopSending,
            Action::EndStream,
            Action::CloseTransport
        ]
    );
    assert_eq!(s.session.phase(), Phase::ClosingTransport);
    s.session.connection_lost();
    assert_eq!(s.actions(), [Action::Done]);
    assert_eq!(s.session.close_code(), Some(1000));
    assert_eq!(s.session.poll_timeout(), None);
}

#[test]
fn replies_to_messages_before_the_close_go_out_before_the_echo() {
    let mut s = Side::server();
    let mut bytes = frame(0x1, b"question", Role::Server);
    bytes.extend(close_frame(1001, "", Role::Server));
    let actions = s.receive(&bytes, 0.0);
    assert_eq!(s.messages[0], Event::Text("question".into()));
    assert!(actions.contains(&Action::AwaitConsumer));
    // The consumer answers: the engine still takes messages until the echo is out.
    let answer = s.conn.send_text("answer").expect("still open for answers");
    assert!(!answer.is_empty());
    let actions = s.caught_up(0.5);
    assert_eq!(written(&actions), [(0x8, b"\x03\xe9".to_vec())]);
    assert!(s.conn.send_text("too late").is_err());
}

#[test]
fn the_close_reply_goes_out_when_the_consumer_does_not_catch_up_in_time() {
    let mut s = Side::server();
    s.receive(&close_frame(1000, "", Role::Server), 0.0);
    assert_eq!(s.deadline(), Some(10.0));
    assert!(s.tick(9.9, 0).is_empty());
    let actions = s.tick(10.0, 0);
    assert_eq!(written(&actions), [(0x8, b"\x03\xe8".to_vec())]);
    assert!(actions.contains(&Action::CloseTransport));
    // The end of the handshake gets its own interval, then the transport is dropped.
    assert_eq!(s.deadline(), Some(20.0));
    assert_eq!(without_samples(s.tick(20.0, 0)), [Action::Abort]);
}

#[test]
fn without_a_close_timeout_the_consumer_wait_is_bounded_by_the_default() {
    let mut s = Side::new(Role::Server, |c| c.close_timeout = None);
    s.receive(&close_frame(1000, "", Role::Server), 0.0);
    assert_eq!(s.deadline(), Some(DEFAULT_CONSUMER_WAIT.as_secs_f64()));
    let actions = s.tick(DEFAULT_CONSUMER_WAIT.as_secs_f64(), 0);
    assert!(actions.contains(&Action::CloseTransport));
    assert_eq!(
        s.deadline(),
        None,
        "no deadline after that without a close timeout"
    );
}

#[test]
fn a_client_waits_for_the_servers_eof_and_ends_its_stream_with_the_transport() {
    let mut c = Side::client();
    let actions = c.close(Some(1000), 0.0);
    assert_eq!(written(&actions), [(0x8, b"\x03\xe8".to_vec())]);
    assert!(actions.contains(&Action::StopSending));
    assert!(actions.contains(&Action::SampleUnsent));
    assert_eq!(c.session.phase(), Phase::CloseSent);
    let actions = c.receive(&close_frame(1000, "", Role::Client), 1.0);
    assert!(written(&actions).is_empty(), "no echo of an echo");
    assert!(!actions.contains(&Action::EndStream));
    assert!(!actions.contains(&Action::CloseTransport));
    assert_eq!(c.session.phase(), Phase::AwaitingEof);
    c.session.receive_eof(&mut c.conn);
    assert_eq!(c.actions(), [Action::CloseTransport]);
    c.session.connection_lost();
    assert_eq!(c.actions(), [Action::EndStream, Action::Done]);
    assert_eq!(c.session.close_code(), Some(1000));
}

#[test]
fn a_client_drops_a_server_that_never_closes_tcp_at_the_one_deadline() {
    let mut c = Side::client();
    c.close(Some(1000), 0.0);
    c.receive(&close_frame(1000, "", Role::Client), 4.0);
    // One deadline from the start of the close, not a new one per step.
    assert_eq!(c.deadline(), Some(10.0));
    assert_eq!(c.tick(10.0, 0), [Action::Abort]);
    c.session.connection_lost();
    assert_eq!(c.actions(), [Action::EndStream, Action::Done]);
    assert_eq!(c.session.close_code(), Some(1000));
}

#[test]
fn the_close_deadline_moves_while_the_peer_takes_what_was_written_before_it() {
    let mut s = Side::server();
    let actions = s.close(Some(1000), 0.0);
    assert!(actions.contains(&Action::SampleUnsent));
    s.session.sample_unsent(1_000_000);
    assert!(s.tick(10.0, 600_000).is_empty(), "progress: more time");
    assert_eq!(s.deadline(), Some(20.0));
    assert!(s.tick(20.0, 1).is_empty());
    assert_eq!(s.tick(30.0, 1), [Action::Abort], "no progress: dropped");
}

#[test]
fn a_peer_that_never_answers_the_close_is_dropped_at_the_deadline() {
    let mut s = Side::server();
    s.close(Some(1000), 0.0);
    s.session.sample_unsent(0);
    assert_eq!(s.tick(10.0, 0), [Action::Abort]);
    s.session.connection_lost();
    assert_eq!(s.actions(), [Action::EndStream, Action::Done]);
    assert_eq!(s.session.close_code(), Some(ABNORMAL_CLOSURE));
}

#[test]
fn keepalive_pings_each_interval_and_measures_the_round_trip() {
    let mut c = Side::new(Role::Client, |c| c.ping_interval = Some(20 * SECOND));
    assert_eq!(c.deadline(), Some(20.0));
    let actions = c.tick(20.0, 0);
    assert_eq!(written(&actions), [(0x9, Vec::new())]);
    assert_eq!(
        c.deadline(),
        Some(40.0),
        "the pong timeout defaults to the interval"
    );
    c.receive(&frame(0xA, b"", Role::Client), 20.25);
    assert_eq!(c.session.round_trip(), Some(Duration::from_millis(250)));
    assert_eq!(c.deadline(), Some(40.25), "a pong restarts the interval");
}

#[test]
fn keepalive_closes_with_1001_when_no_pong_comes() {
    let mut c = Side::new(Role::Client, |c| {
        c.ping_interval = Some(20 * SECOND);
        c.pong_timeout = Some(5 * SECOND);
    });
    c.tick(20.0, 0);
    assert_eq!(c.deadline(), Some(25.0));
    let actions = c.tick(25.0, 0);
    assert_eq!(written(&actions), [(0x8, b"\x03\xe9".to_vec())]);
    assert!(actions.contains(&Action::StopSending));
    assert!(actions.contains(&Action::EndStream));
    assert_eq!(c.session.close_code(), Some(GOING_AWAY));
    assert_eq!(c.session.phase(), Phase::CloseSent);
    assert_eq!(c.deadline(), Some(35.0), "then the close deadline");
}

#[test]
fn only_the_latest_ping_is_answered_while_writes_wait() {
    let mut s = Side::server();
    s.session.set_writes_waiting(true);
    assert_eq!(
        s.actions(),
        [Action::PauseReading],
        "a server stops reading"
    );
    let mut pings = frame(0x9, b"1", Role::Server);
    pings.extend(frame(0x9, b"2", Role::Server));
    assert!(written(&s.receive(&pings, 0.0)).is_empty());
    s.session.set_writes_waiting(false);
    let actions = s.actions();
    assert_eq!(written(&actions), [(0xA, b"2".to_vec())]);
    assert_eq!(actions.last(), Some(&Action::ResumeReading));
}

#[test]
fn every_ping_of_one_read_is_answered_when_writes_flow() {
    let mut c = Side::client();
    let mut pings = frame(0x9, b"a", Role::Client);
    pings.extend(frame(0x9, b"b", Role::Client));
    let actions = c.receive(&pings, 0.0);
    assert_eq!(
        written(&actions),
        [(0xA, b"a".to_vec()), (0xA, b"b".to_vec())]
    );
}

#[test]
fn a_client_keeps_reading_while_its_writes_wait() {
    let mut c = Side::client();
    c.session.set_writes_waiting(true);
    assert!(c.actions().is_empty());
    c.session.set_consumer_full(true);
    assert_eq!(c.actions(), [Action::PauseReading]);
    c.session.set_consumer_full(false);
    assert_eq!(c.actions(), [Action::ResumeReading]);
}

#[test]
fn the_pong_owed_goes_out_before_a_close_frame() {
    let mut c = Side::client();
    c.session.set_writes_waiting(true);
    c.receive(&frame(0x9, b"p", Role::Client), 0.0);
    let actions = c.close(Some(1000), 1.0);
    assert_eq!(
        written(&actions),
        [(0xA, b"p".to_vec()), (0x8, b"\x03\xe8".to_vec())]
    );
}

#[test]
fn a_failure_half_closes_and_lingers_until_the_peers_eof() {
    let mut s = Side::server();
    // An unmasked frame from a client: 1002.
    let actions = s.receive(&frame(0x1, b"x", Role::Client), 0.0);
    assert!(actions.contains(&Action::AwaitConsumer));
    assert_eq!(s.session.close_code(), Some(1002));
    let actions = s.caught_up(0.0);
    assert_eq!(written(&actions)[0].0, 0x8);
    assert_eq!(&written(&actions)[0].1[..2], &1002u16.to_be_bytes());
    assert!(actions.contains(&Action::HalfClose));
    assert!(actions.contains(&Action::EndStream));
    assert_eq!(actions.last(), Some(&Action::ResumeReading));
    assert_eq!(s.session.phase(), Phase::Lingering);
    s.session.receive_eof(&mut s.conn);
    assert_eq!(s.actions(), [Action::CloseTransport]);
    assert_eq!(s.session.close_code(), Some(1002));
}

#[test]
fn a_failure_without_half_close_closes_the_transport() {
    let mut s = Side::new(Role::Server, |c| c.half_close = false);
    s.receive(&frame(0x1, b"x", Role::Client), 0.0);
    let actions = s.caught_up(0.0);
    assert!(actions.contains(&Action::CloseTransport));
    assert!(!actions.contains(&Action::HalfClose));
}

#[test]
fn a_lost_transport_reports_1006_and_ends_everything_once() {
    let mut s = Side::server();
    s.session.connection_lost();
    assert_eq!(
        s.actions(),
        [Action::StopSending, Action::EndStream, Action::Done]
    );
    assert_eq!(s.session.close_code(), Some(ABNORMAL_CLOSURE));
    s.session.connection_lost();
    assert!(s.actions().is_empty());
}

#[test]
fn an_eof_without_a_close_frame_closes_the_transport_with_1006() {
    let mut c = Side::new(Role::Client, |c| c.ping_interval = Some(SECOND));
    c.session.receive_eof(&mut c.conn);
    assert_eq!(c.actions(), [Action::CloseTransport]);
    assert_eq!(c.session.close_code(), Some(ABNORMAL_CLOSURE));
    assert_eq!(c.deadline(), None, "no keepalive after the EOF");
}

#[test]
fn the_users_close_while_the_reply_waits_for_the_consumer_sends_the_echo() {
    let mut s = Side::server();
    s.receive(&close_frame(3000, "done", Role::Server), 0.0);
    let actions = s.close(Some(1000), 0.5);
    assert_eq!(written(&actions), [(0x8, b"\x0b\xb8done".to_vec())]);
    assert!(actions.contains(&Action::CloseTransport));
    assert_eq!(s.session.close_code(), Some(3000));
}

#[test]
fn closing_twice_does_nothing_and_bad_codes_are_refused() {
    let mut c = Side::client();
    let err = c
        .session
        .close(&mut c.conn, Some(1005), "", c.t0)
        .unwrap_err();
    assert_eq!(err, SendError::InvalidCode(1005));
    assert!(c.actions().is_empty());
    c.close(Some(1000), 0.0);
    assert!(c.close(Some(1000), 1.0).is_empty());
}

#[test]
fn an_unfinished_opening_handshake_is_aborted_at_the_open_deadline() {
    let t0 = Instant::now();
    let mut config = SessionConfig::new(Role::Server);
    config.open_timeout = Some(5 * SECOND);
    let mut session = Session::opening(Role::Server, config, t0);
    let mut conn = Connection::new(Role::Server, Config::default());
    assert_eq!(session.poll_timeout(), Some(t0 + 5 * SECOND));
    session.handle_timeout(&mut conn, t0 + 5 * SECOND, || 0);
    assert_eq!(session.poll_action(), Some(Action::Abort));
    let mut opened = Session::opening(Role::Server, session.config().clone(), t0);
    opened.opened(t0 + SECOND);
    assert_eq!(opened.poll_timeout(), None);
}

#[test]
fn idle_compression_state_is_freed_at_each_interval() {
    let mut s = Side::new(Role::Server, |c| c.compact_interval = Some(30 * SECOND));
    assert_eq!(s.deadline(), Some(30.0));
    s.tick(30.0, 0);
    assert_eq!(s.deadline(), Some(60.0));
}

#[test]
fn reading_stays_on_for_the_eof_once_the_peers_close_is_in() {
    let mut c = Side::client();
    c.session.set_consumer_full(true);
    assert_eq!(c.actions(), [Action::PauseReading]);
    c.close(Some(1000), 0.0);
    let actions = c.receive(&close_frame(1000, "", c.role()), 0.1);
    assert_eq!(actions.last(), Some(&Action::ResumeReading));
}

#[test]
fn pongs_still_queued_when_writes_start_to_wait_are_held_as_one() {
    let mut c = Side::client();
    let mut pings = Vec::new();
    for i in 0..5u8 {
        pings.extend(frame(0x9, &[i], Role::Client));
    }
    let now = c.at(0.0);
    let mut events = Vec::new();
    c.session
        .receive_data(&mut c.conn, &pings, &mut events, now);
    // The driver writes the first pong, and its buffer fills.
    let first = c.session.poll_action();
    assert_eq!(written(&[first.unwrap()]), [(0xA, vec![0])]);
    c.session.set_writes_waiting(true);
    assert!(c.actions().is_empty(), "the other four are held");
    c.session.set_writes_waiting(false);
    assert_eq!(written(&c.actions()), [(0xA, vec![4])]);
}
