//! Byte-level tests of the connection state machine, in both roles.

use super::*;
use crate::frame::Header;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame with an explicit first byte (FIN, RSV bits, opcode), masked if `mask` is given.
pub(crate) fn frame(first: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let header = Header {
        fin: first & 0x80 != 0,
        rsv1: first & 0x40 != 0,
        rsv2: first & 0x20 != 0,
        rsv3: first & 0x10 != 0,
        opcode: first & 0x0f,
        mask,
        len: payload.len() as u64,
    };
    let mut head = [0; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    let mut out = head[..n].to_vec();
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        crate::mask::apply_mask(&mut out[start..], key, 0);
    }
    out
}

/// A frame as a client sends it (masked).
fn from_client(first: u8, payload: &[u8]) -> Vec<u8> {
    frame(first, payload, Some(KEY))
}

fn server() -> Connection {
    Connection::new(Role::Server, Config::default())
}

fn client() -> Connection {
    Connection::with_seed(Role::Client, Config::default(), 7)
}

fn feed(conn: &mut Connection, bytes: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    conn.receive_data(bytes, &mut events);
    events
}

fn feed_bytewise(conn: &mut Connection, bytes: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    for byte in bytes {
        conn.receive_data(std::slice::from_ref(byte), &mut events);
    }
    events
}

fn failure(code: u16) -> impl Fn(&Vec<Event>) -> bool {
    move |events| matches!(events.last(), Some(Event::Failure { code: c, .. }) if *c == code)
}

fn close_frame_code(bytes: &[u8]) -> u16 {
    let (header, used) = Header::parse(bytes).expect("a close frame");
    assert_eq!(header.opcode, 0x8);
    let mut payload = bytes[used..used + header.len as usize].to_vec();
    if let Some(key) = header.mask {
        crate::mask::apply_mask(&mut payload, key, 0);
    }
    u16::from_be_bytes([payload[0], payload[1]])
}

fn assert_fails(conn: &mut Connection, bytes: &[u8], code: u16) {
    let events = feed(conn, bytes);
    assert!(
        failure(code)(&events),
        "expected failure {code}, got {events:?}"
    );
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(close_frame_code(&conn.data_to_send()), code);
    assert!(conn.close_expected());
    assert_eq!(conn.close_code(), Some(code));
}

#[test]
fn server_receives_masked_hello() {
    let mut conn = server();
    let events = feed(
        &mut conn,
        &[
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ],
    );
    assert_eq!(events, vec![Event::Text("Hello".into())]);
}

#[test]
fn client_receives_unmasked_hello() {
    let mut conn = client();
    let events = feed(&mut conn, &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    assert_eq!(events, vec![Event::Text("Hello".into())]);
}

#[test]
fn server_parses_frames_fed_one_byte_at_a_time() {
    let mut wire = from_client(0x81, "héllo wörld".as_bytes());
    wire.extend(from_client(0x82, &[0u8; 300]));
    wire.extend(from_client(0x82, &vec![9u8; 70000]));
    wire.extend(from_client(0x89, b"p"));
    let mut conn = server();
    let events = feed_bytewise(&mut conn, &wire);
    assert_eq!(
        events,
        vec![
            Event::Text("héllo wörld".into()),
            Event::Binary(vec![0; 300]),
            Event::Binary(vec![9; 70000]),
            Event::Ping(b"p".to_vec()),
        ]
    );
}

#[test]
fn client_parses_frames_fed_one_byte_at_a_time() {
    let mut wire = frame(0x81, b"abc", None);
    wire.extend(frame(0x01, b"de", None));
    wire.extend(frame(0x80, b"f", None));
    let mut conn = client();
    assert_eq!(
        feed_bytewise(&mut conn, &wire),
        vec![Event::Text("abc".into()), Event::Text("def".into())]
    );
}

#[test]
fn server_parses_frames_in_every_two_way_split() {
    let mut wire = from_client(0x82, &[1, 2, 3, 4, 5, 6, 7]);
    wire.extend(from_client(0x81, b"xyz"));
    for cut in 0..=wire.len() {
        let mut conn = server();
        let mut events = feed(&mut conn, &wire[..cut]);
        events.extend(feed(&mut conn, &wire[cut..]));
        assert_eq!(
            events,
            vec![
                Event::Binary(vec![1, 2, 3, 4, 5, 6, 7]),
                Event::Text("xyz".into())
            ]
        );
    }
}

#[test]
fn empty_messages_are_delivered() {
    let mut conn = server();
    let mut wire = from_client(0x81, b"");
    wire.extend(from_client(0x82, b""));
    assert_eq!(
        feed(&mut conn, &wire),
        vec![Event::Text(String::new()), Event::Binary(Vec::new())]
    );
}

#[test]
fn server_rejects_unmasked_frame() {
    assert_fails(&mut server(), &frame(0x81, b"hi", None), 1002);
}

#[test]
fn client_rejects_masked_frame() {
    assert_fails(&mut client(), &frame(0x81, b"hi", Some(KEY)), 1002);
}

#[test]
fn server_rejects_reserved_bits() {
    for first in [0xa1, 0x91, 0xc1] {
        // RSV2, RSV3, and RSV1 without permessage-deflate.
        assert_fails(&mut server(), &from_client(first, b"x"), 1002);
    }
}

#[test]
fn server_rejects_reserved_opcodes() {
    for opcode in [3u8, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
        assert_fails(&mut server(), &from_client(0x80 | opcode, b""), 1002);
    }
}

#[test]
fn server_rejects_fragmented_control_frame() {
    assert_fails(&mut server(), &from_client(0x09, b"ping"), 1002);
}

#[test]
fn server_rejects_control_frame_over_125_bytes() {
    assert_fails(&mut server(), &from_client(0x89, &[0; 126]), 1002);
}

#[test]
fn server_rejects_continuation_without_message() {
    assert_fails(&mut server(), &from_client(0x80, b"x"), 1002);
}

#[test]
fn server_rejects_new_message_inside_fragmented_one() {
    let mut wire = from_client(0x01, b"a");
    wire.extend(from_client(0x81, b"b"));
    assert_fails(&mut server(), &wire, 1002);
}

#[test]
fn server_reassembles_fragments_with_interleaved_control_frames() {
    let mut wire = from_client(0x01, b"fra");
    wire.extend(from_client(0x89, b"1"));
    wire.extend(from_client(0x00, b"gme"));
    wire.extend(from_client(0x8a, b"2"));
    wire.extend(from_client(0x80, b"nts"));
    let mut conn = server();
    let events = feed(&mut conn, &wire);
    assert_eq!(
        events,
        vec![
            Event::Ping(b"1".to_vec()),
            Event::Pong(b"2".to_vec()),
            Event::Text("fragments".into())
        ]
    );
    assert_eq!(conn.data_to_send(), frame(0x8a, b"1", None));
}

#[test]
fn client_answers_ping_with_masked_pong() {
    let mut conn = client();
    feed(&mut conn, &frame(0x89, b"hey", None));
    let out = conn.data_to_send();
    let (header, used) = Header::parse(&out).unwrap();
    assert_eq!((header.opcode, header.len), (0xa, 3));
    let mut payload = out[used..].to_vec();
    crate::mask::apply_mask(&mut payload, header.mask.expect("client masks"), 0);
    assert_eq!(payload, b"hey");
}

#[test]
fn server_fails_fast_on_invalid_utf8_in_an_unfinished_frame() {
    let full = from_client(0x81, b"valid start \xff and more text that never arrives");
    // Only the header and the first 14 payload bytes arrive; the bad byte is among them.
    let mut conn = server();
    let events = feed(&mut conn, &full[..6 + 14]);
    assert!(failure(1007)(&events), "{events:?}");
}

#[test]
fn server_fails_fast_on_invalid_utf8_in_a_first_fragment() {
    let mut conn = server();
    let events = feed(&mut conn, &from_client(0x01, b"ok \xed\xa0\x80"));
    assert!(failure(1007)(&events), "{events:?}");
}

#[test]
fn server_accepts_a_character_split_across_fragments() {
    let mut wire = from_client(0x01, b"\xce");
    wire.extend(from_client(0x80, b"\xba"));
    assert_eq!(feed(&mut server(), &wire), vec![Event::Text("κ".into())]);
}

#[test]
fn server_rejects_text_ending_inside_a_character() {
    assert_fails(&mut server(), &from_client(0x81, b"ab\xce"), 1007);
}

#[test]
fn client_rejects_invalid_utf8_in_a_whole_frame() {
    assert_fails(&mut client(), &frame(0x81, b"\xc0\xaf", None), 1007);
}

#[test]
fn server_echoes_a_close_frame_and_expects_to_close() {
    let mut conn = server();
    let mut payload = 3001u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    let events = feed(&mut conn, &from_client(0x88, &payload));
    assert_eq!(
        events,
        vec![Event::Close {
            code: 3001,
            reason: "bye".into()
        }]
    );
    assert_eq!(conn.data_to_send(), frame(0x88, &payload, None));
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.close_expected());
    assert_eq!(
        (conn.close_code(), conn.close_reason()),
        (Some(3001), Some("bye"))
    );
}

#[test]
fn client_echoes_an_empty_close_frame_with_an_empty_one() {
    let mut conn = client();
    let events = feed(&mut conn, &frame(0x88, b"", None));
    assert_eq!(
        events,
        vec![Event::Close {
            code: 1005,
            reason: String::new()
        }]
    );
    let out = conn.data_to_send();
    assert_eq!((out[0], out[1]), (0x88, 0x80));
    assert!(
        !conn.close_expected(),
        "a client waits for the server to close TCP"
    );
}

#[test]
fn close_frame_with_one_byte_fails_with_1002() {
    assert_fails(&mut server(), &from_client(0x88, &[0x03]), 1002);
}

#[test]
fn close_frame_with_invalid_code_fails_with_1002() {
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        assert_fails(&mut server(), &from_client(0x88, &code.to_be_bytes()), 1002);
    }
}

#[test]
fn close_frame_with_valid_codes_is_accepted() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
    ] {
        let events = feed(&mut server(), &from_client(0x88, &code.to_be_bytes()));
        assert_eq!(
            events,
            vec![Event::Close {
                code,
                reason: String::new()
            }]
        );
    }
}

#[test]
fn close_frame_with_invalid_utf8_reason_fails_with_1007() {
    assert_fails(&mut server(), &from_client(0x88, b"\x03\xe8\xff"), 1007);
}

#[test]
fn data_after_close_frame_is_ignored() {
    let mut wire = from_client(0x88, &1000u16.to_be_bytes());
    wire.extend(from_client(0x81, b"late"));
    let events = feed(&mut server(), &wire);
    assert_eq!(
        events,
        vec![Event::Close {
            code: 1000,
            reason: String::new()
        }]
    );
}

#[test]
fn local_close_then_peer_echo_completes_the_handshake() {
    let mut conn = server();
    let sent = conn.send_close(Some(1000), "done").unwrap();
    assert_eq!(sent, frame(0x88, b"\x03\xe8done", None));
    assert_eq!(conn.state(), State::Closing);
    assert!(!conn.close_expected());
    feed(&mut conn, &from_client(0x88, b"\x03\xe8done"));
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.close_expected());
    assert!(conn.data_to_send().is_empty(), "no second close frame");
}

#[test]
fn no_pong_is_sent_after_the_close_frame() {
    let mut conn = server();
    conn.send_close(None, "").unwrap();
    let events = feed(&mut conn, &from_client(0x89, b"x"));
    assert_eq!(events, vec![Event::Ping(b"x".to_vec())]);
    assert!(conn.data_to_send().is_empty());
}

#[test]
fn send_close_validates_code_and_reason() {
    let mut conn = server();
    for code in [999u16, 1004, 1005, 1006, 1015, 2999, 5000] {
        assert_eq!(
            conn.send_close(Some(code), ""),
            Err(SendError::InvalidCode(code))
        );
    }
    let long = "x".repeat(124);
    assert_eq!(
        conn.send_close(Some(1000), &long),
        Err(SendError::ReasonTooLong(124))
    );
    assert_eq!(
        conn.send_close(None, "why"),
        Err(SendError::ReasonWithoutCode)
    );
    assert_eq!(conn.state(), State::Open, "a refused close changes nothing");
    assert_eq!(conn.send_close(None, ""), Ok(vec![0x88, 0x00]));
    assert_eq!(conn.send_close(None, ""), Err(SendError::Closed));
    assert_eq!(conn.send_text("late"), Err(SendError::Closed));
}

#[test]
fn server_sends_unmasked_frames() {
    let mut conn = server();
    assert_eq!(
        conn.send_text("Hello").unwrap(),
        [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']
    );
    assert_eq!(conn.send_binary(&[1, 2]).unwrap(), [0x82, 0x02, 1, 2]);
    assert_eq!(conn.send_ping(b"").unwrap(), [0x89, 0x00]);
    assert_eq!(conn.send_pong(b"a").unwrap(), [0x8a, 0x01, b'a']);
}

#[test]
fn client_sends_masked_frames_that_a_server_reads() {
    let mut sender = client();
    let mut receiver = server();
    let big = vec![0xabu8; 100_000];
    let mut wire = sender.send_text("Hello").unwrap();
    wire.extend(sender.send_binary(&big).unwrap());
    assert_eq!(wire[1] & 0x80, 0x80, "mask bit set");
    assert_eq!(
        feed(&mut receiver, &wire),
        vec![Event::Text("Hello".into()), Event::Binary(big)]
    );
}

#[test]
fn seeded_clients_use_the_same_masks() {
    assert_eq!(
        client().send_text("x").unwrap(),
        client().send_text("x").unwrap()
    );
}

#[test]
fn control_payload_over_125_bytes_is_refused() {
    assert_eq!(
        server().send_ping(&[0; 126]),
        Err(SendError::ControlTooLong(126))
    );
}

#[test]
fn message_over_the_limit_fails_with_1009() {
    let config = Config {
        max_message_size: Some(10),
        ..Config::default()
    };
    let mut conn = Connection::new(Role::Server, config);
    assert_eq!(
        feed(&mut conn, &from_client(0x82, &[0; 10])),
        vec![Event::Binary(vec![0; 10])]
    );
    assert_fails(&mut conn, &from_client(0x82, &[0; 11]), 1009);
}

#[test]
fn fragmented_message_over_the_limit_fails_with_1009_before_it_ends() {
    let config = Config {
        max_message_size: Some(10),
        ..Config::default()
    };
    let mut conn = Connection::new(Role::Server, config);
    let mut wire = from_client(0x02, &[0; 6]);
    wire.extend(from_client(0x00, &[0; 6]));
    assert_fails(&mut conn, &wire, 1009);
}

#[test]
fn frame_over_the_frame_limit_fails_with_1009_from_its_header() {
    let config = Config {
        max_frame_size: Some(4),
        ..Config::default()
    };
    let mut conn = Connection::new(Role::Server, config);
    let wire = from_client(0x82, &[0; 5]);
    assert_fails(&mut conn, &wire[..6], 1009);
}

#[test]
fn default_limit_is_one_mebibyte() {
    let mut conn = server();
    let header = frame(0x82, &[], Some(KEY));
    // A header announcing 1 MiB + 1 fails before any payload arrives.
    let mut big = Header::parse(&header).unwrap().0;
    big.len = (DEFAULT_MAX_MESSAGE_SIZE + 1) as u64;
    let mut head = [0; MAX_HEADER_LEN];
    let n = big.encode(&mut head);
    assert_fails(&mut conn, &head[..n], 1009);
}

#[test]
fn eof_without_close_frame_reports_1006() {
    let mut conn = client();
    conn.receive_eof();
    assert_eq!(
        (conn.close_code(), conn.close_reason()),
        (Some(1006), Some(""))
    );
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.close_expected());
}

#[test]
fn eof_after_close_frame_keeps_its_code() {
    let mut conn = client();
    feed(&mut conn, &frame(0x88, b"\x0b\xb9you asked me to", None));
    conn.receive_eof();
    assert_eq!(
        (conn.close_code(), conn.close_reason()),
        (Some(3001), Some("you asked me to"))
    );
}

#[test]
fn failure_stops_parsing_the_rest_of_the_input() {
    let mut wire = from_client(0x83, b"");
    wire.extend(from_client(0x81, b"after"));
    let mut conn = server();
    let events = feed(&mut conn, &wire);
    assert_eq!(events.len(), 1);
    assert!(failure(1002)(&events));
    assert!(feed(&mut conn, &from_client(0x81, b"later")).is_empty());
}

#[test]
fn server_draining_once_after_a_read_answers_both_pings_of_that_read() {
    // Regression: data_to_send() gave one reply per call, so a driver that drains once
    // after each receive_data (the usual loop) lost the second pong.
    let mut wire = from_client(0x89, b"a");
    wire.extend(from_client(0x89, b"b"));
    let mut conn = server();
    assert_eq!(feed(&mut conn, &wire).len(), 2);
    assert_eq!(conn.replies_waiting(), 2);
    let mut expected = frame(0x8a, b"a", None);
    expected.extend(frame(0x8a, b"b", None));
    assert_eq!(conn.data_to_send(), expected);
    assert_eq!(conn.replies_waiting(), 0);
    assert!(conn.data_to_send().is_empty());
}

#[test]
fn server_next_reply_answers_one_event_at_a_time() {
    let mut wire = from_client(0x81, b"Hello");
    wire.extend(from_client(0x89, b"a"));
    wire.extend(from_client(0x88, b""));
    let mut conn = server();
    assert_eq!(feed(&mut conn, &wire).len(), 3);
    assert_eq!(conn.next_reply(), Some(frame(0x8a, b"a", None)));
    // The answer to "Hello" may still go out before the close echo.
    assert!(conn.send_text("Hello").is_ok());
    assert_eq!(conn.next_reply(), Some(frame(0x88, b"", None)));
    assert_eq!(conn.next_reply(), None);
    assert_eq!(conn.send_text("late"), Err(SendError::Closed));
}

#[test]
fn server_replies_come_out_in_order_pongs_before_the_close_echo() {
    let mut wire = from_client(0x89, b"a");
    wire.extend(from_client(0x88, &1000u16.to_be_bytes()));
    wire.extend(from_client(0x89, b"after the close"));
    let mut conn = server();
    feed(&mut conn, &wire);
    let mut expected = frame(0x8a, b"a", None);
    expected.extend(frame(0x88, &1000u16.to_be_bytes(), None));
    assert_eq!(conn.data_to_send(), expected);
    assert!(conn.close_sent());
    assert!(conn.close_expected());
}

#[test]
fn server_answer_to_a_message_before_the_peer_close_goes_out_first() {
    let mut wire = from_client(0x81, b"Hello");
    wire.extend(from_client(0x88, &1000u16.to_be_bytes()));
    let mut conn = server();
    let events = feed(&mut conn, &wire);
    assert_eq!(events[0], Event::Text("Hello".into()));
    // The application answers "Hello" before it handles the close event.
    assert_eq!(
        conn.send_text("Hello").unwrap(),
        frame(0x81, b"Hello", None)
    );
    assert!(!conn.close_expected(), "the echo has not left yet");
    assert_eq!(
        conn.data_to_send(),
        frame(0x88, &1000u16.to_be_bytes(), None)
    );
    assert!(conn.close_expected());
    assert_eq!(conn.send_text("late"), Err(SendError::Closed));
}

#[test]
fn server_answer_to_a_message_before_a_violation_goes_out_before_the_failure_close() {
    let mut wire = from_client(0x81, b"Hello");
    wire.extend(from_client(0xb1, b"bad"));
    let mut conn = server();
    let events = feed(&mut conn, &wire);
    assert_eq!(events[0], Event::Text("Hello".into()));
    assert!(failure(1002)(&events));
    assert!(conn.send_text("Hello").is_ok());
    assert!(!conn.close_expected());
    assert_eq!(close_frame_code(&conn.data_to_send()), 1002);
    assert!(conn.close_expected());
    assert_eq!(conn.send_binary(b"late"), Err(SendError::Closed));
}

#[test]
fn user_close_cannot_follow_a_queued_close_echo() {
    let mut conn = server();
    feed(&mut conn, &from_client(0x88, b""));
    assert_eq!(conn.send_close(Some(1000), ""), Err(SendError::Closed));
    assert_eq!(conn.data_to_send(), frame(0x88, b"", None));
}

#[test]
fn only_uncompressed_open_servers_accept_shared_frames() {
    let mut conn = server();
    assert!(conn.accepts_shared_frames());
    let shared = crate::frame::shared_text("all").to_vec();
    assert_eq!(
        shared,
        conn.send_text("all").unwrap(),
        "the same bytes as its own frame"
    );
    assert!(
        !client().accepts_shared_frames(),
        "a client masks each frame"
    );
    let deflate = Config {
        deflate: Some(DeflateParams::default()),
        ..Config::default()
    };
    assert!(!Connection::new(Role::Server, deflate).accepts_shared_frames());
    conn.send_close(None, "").unwrap();
    assert!(!conn.accepts_shared_frames());
}

/// Feeds `wire` as an I/O layer with direct payload reads would: into the message buffer
/// whenever the engine offers room (at most `step` bytes at a time), else as usual.
fn feed_in_place(conn: &mut Connection, wire: &[u8], step: usize) -> Vec<Event> {
    let mut events = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let rest = &wire[at..];
        let mut source = rest;
        if conn
            .read_payload_in_place(step, &mut source, &mut events)
            .is_some()
        {
            at += rest.len() - source.len();
        } else {
            let n = rest.len().min(step);
            conn.receive_data(&rest[..n], &mut events);
            at += n;
        }
    }
    events
}

fn large_config() -> Config {
    Config {
        max_message_size: None,
        ..Config::default()
    }
}

#[test]
fn payload_read_in_place_gives_the_same_events_as_receive_data() {
    let text: String = "wschannel é ".repeat(30_000); // multi-byte characters across reads
    let binary: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let mut wire = from_client(0x81, text.as_bytes());
    wire.extend(from_client(0x02, &binary[..100_000])); // fragmented, with a ping inside
    wire.extend(from_client(0x89, b"in between"));
    wire.extend(from_client(0x80, &binary[100_000..]));
    wire.extend(from_client(0x82, &binary[..70_000]));
    for step in [1000, 4096, 65_536, 100_001, 1 << 20] {
        let mut direct = Connection::new(Role::Server, large_config());
        let mut plain = Connection::new(Role::Server, large_config());
        let events = feed_in_place(&mut direct, &wire, step);
        assert_eq!(events, feed(&mut plain, &wire), "step {step}");
        assert!(matches!(&events[0], Event::Text(t) if *t == text));
        assert_eq!(events.len(), 4);
        assert!(matches!(&events[2], Event::Binary(b) if *b == binary));
    }
    // A client reads unmasked frames the same way.
    let mut client_conn = Connection::with_seed(Role::Client, large_config(), 3);
    let events = feed_in_place(&mut client_conn, &frame(0x82, &binary, None), 70_000);
    assert!(matches!(&events[..], [Event::Binary(b)] if *b == binary));
}

#[test]
fn payload_read_in_place_fails_on_invalid_utf8_as_receive_data_does() {
    let mut payload = "a".repeat(200_000).into_bytes();
    payload[150_000] = 0xff;
    let wire = from_client(0x81, &payload);
    let mut conn = Connection::new(Role::Server, large_config());
    let mut events = feed_in_place(&mut conn, &wire, 65_536);
    assert!(failure(1007)(&events), "{events:?}");
    assert!(
        conn.read_payload_in_place(65_536, &mut &[0u8; 70_000][..], &mut events)
            .is_none(),
        "no more reads once failed"
    );
}

#[test]
fn small_frames_and_compressed_ones_get_no_direct_room() {
    let mut conn = Connection::new(Role::Server, large_config());
    let wire = from_client(0x82, &[0; 100_000]);
    feed(&mut conn, &wire[..20]);
    let mut rest = &wire[20..];
    let asked = conn.read_payload_in_place(1 << 20, &mut rest, &mut Vec::new());
    assert_eq!(
        asked,
        Some(100_000 - (20 - 14)),
        "up to the end of the frame"
    );
    let mut small = Connection::new(Role::Server, large_config());
    feed(&mut small, &from_client(0x82, &[0; 1000])[..20]);
    let mut untouched = &[0u8; 1000][..];
    let none = small.read_payload_in_place(1 << 20, &mut untouched, &mut Vec::new());
    assert_eq!((none, untouched.len()), (None, 1000));
}

/// A frame header announcing `len` payload bytes, with first byte `first`, masked.
fn client_header(first: u8, len: u64) -> Vec<u8> {
    let mut header = Header::parse(&from_client(first, &[])).unwrap().0;
    header.len = len;
    let mut head = [0; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    head[..n].to_vec()
}

#[test]
fn server_refuses_a_length_with_its_most_significant_bit_set() {
    for role_limit in [Some(1 << 20), None] {
        let mut conn = Connection::new(
            Role::Server,
            Config {
                max_message_size: role_limit,
                ..Config::default()
            },
        );
        assert_fails(&mut conn, &client_header(0x82, 1 << 63), 1002);
    }
}

#[test]
fn server_refuses_a_continuation_whose_length_would_wrap_the_message_size() {
    // Six bytes so far, then a continuation announcing 2^64 - 6: the sum wraps to 0, which
    // passed the 1 MiB limit and let the peer stream any amount into one message.
    let mut conn = server();
    let mut wire = from_client(0x02, &[0; 6]);
    wire.extend(client_header(0x00, u64::MAX - 5));
    wire.extend([0; 64]);
    let events = feed(&mut conn, &wire);
    assert!(failure(1002)(&events), "{events:?}");
    assert!(!events.iter().any(|e| matches!(e, Event::Binary(_))));
    assert_eq!(close_frame_code(&conn.data_to_send()), 1002);
}

#[test]
fn client_refuses_a_continuation_whose_length_would_wrap_the_message_size() {
    let mut conn = client();
    let mut wire = frame(0x01, b"abc", None);
    let mut header = Header::parse(&frame(0x00, &[], None)).unwrap().0;
    header.len = u64::MAX - 2;
    let mut head = [0; MAX_HEADER_LEN];
    let n = header.encode(&mut head);
    wire.extend_from_slice(&head[..n]);
    let events = feed(&mut conn, &wire);
    assert!(failure(1002)(&events), "{events:?}");
    assert_eq!(conn.close_code(), Some(1002));
}

#[test]
fn continuations_just_under_the_limit_pass_and_one_byte_more_fails() {
    let config = Config {
        max_message_size: Some(10),
        ..Config::default()
    };
    let mut conn = Connection::new(Role::Server, config.clone());
    let mut wire = from_client(0x02, &[1; 4]);
    wire.extend(from_client(0x00, &[2; 3]));
    wire.extend(from_client(0x80, &[3; 3]));
    let mut expected = vec![1; 4];
    expected.extend([2; 3]);
    expected.extend([3; 3]);
    assert_eq!(feed(&mut conn, &wire), vec![Event::Binary(expected)]);
    let mut conn = Connection::new(Role::Server, config);
    let mut wire = from_client(0x02, &[1; 4]);
    wire.extend(from_client(0x00, &[2; 3]));
    // The header of the frame that would make 11 bytes is refused before its payload.
    wire.extend(client_header(0x80, 4));
    assert_fails(&mut conn, &wire, 1009);
}

#[test]
fn compressed_frame_announcing_far_more_than_the_limit_fails_from_its_header() {
    let config = Config {
        deflate: Some(DeflateParams::default()),
        ..Config::default()
    };
    let mut conn = Connection::new(Role::Server, config);
    // 1 GiB announced, no payload sent: refused at once (the limit used to apply only
    // after inflating, so the engine would wait for, and inflate, all of it).
    assert_fails(&mut conn, &client_header(0xc2, 1 << 30), 1009);
}

#[test]
fn compressed_message_may_take_somewhat_more_than_the_limit_on_the_wire() {
    // Incompressible data is sent as stored blocks, a little larger than the message: a
    // message of exactly the limit still passes.
    let params = DeflateParams::default();
    let config = Config {
        max_message_size: Some(100_000),
        deflate: Some(params),
        ..Config::default()
    };
    let mut sender = Connection::with_seed(Role::Client, config.clone(), 3);
    let mut data = vec![0u8; 100_000];
    let mut x: u32 = 1;
    for b in &mut data {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 24) as u8;
    }
    let wire = sender.send_binary(&data).unwrap();
    assert!(wire.len() > data.len(), "stored blocks make it larger");
    let mut conn = Connection::new(Role::Server, config);
    assert_eq!(feed(&mut conn, &wire), vec![Event::Binary(data)]);
}

// Counters: messages as delivered and encoded, bytes as on the wire.

fn counters(
    messages_received: u64,
    messages_sent: u64,
    bytes_received: u64,
    bytes_sent: u64,
) -> Counters {
    Counters {
        messages_received,
        messages_sent,
        bytes_received,
        bytes_sent,
    }
}

#[test]
fn counters_start_at_zero() {
    assert_eq!(server().counters(), Counters::default());
    assert_eq!(client().counters(), counters(0, 0, 0, 0));
}

#[test]
fn received_messages_are_counted_once_whatever_the_chunking() {
    // Two masked messages, one fragmented with a ping between its fragments: 2 messages,
    // every byte of the five frames.
    let mut wire = from_client(0x81, b"hello");
    wire.extend(from_client(0x02, &[1; 200]));
    wire.extend(from_client(0x89, b"ping"));
    wire.extend(from_client(0x80, &[2; 70_000]));
    let total = wire.len() as u64;
    assert_eq!(total, (6 + 5) + (8 + 200) + (6 + 4) + (14 + 70_000));
    let mut whole = Connection::new(Role::Server, large_config());
    feed(&mut whole, &wire);
    let mut bytewise = Connection::new(Role::Server, large_config());
    feed_bytewise(&mut bytewise, &wire);
    let mut in_place = Connection::new(Role::Server, large_config());
    feed_in_place(&mut in_place, &wire, 4096);
    for conn in [&whole, &bytewise, &in_place] {
        assert_eq!(conn.counters(), counters(2, 0, total, 0));
    }
    // The pong is counted when it is taken.
    assert_eq!(whole.data_to_send().len(), 2 + 4);
    assert_eq!(whole.counters(), counters(2, 0, total, 6));
}

#[test]
fn unmasked_whole_messages_delivered_in_place_are_counted() {
    // A client gets unmasked frames: each whole one is delivered from the read itself.
    let mut wire = frame(0x81, b"one", None);
    wire.extend(frame(0x82, &[7; 300], None));
    wire.extend(frame(0x81, b"", None));
    let mut conn = client();
    assert_eq!(feed(&mut conn, &wire).len(), 3);
    assert_eq!(conn.counters(), counters(3, 0, (2 + 3) + (4 + 300) + 2, 0));
}

#[test]
fn a_message_that_fails_is_not_counted_but_its_bytes_are() {
    let mut conn = server();
    let wire = from_client(0x81, &[b'a', 0xff, b'b']);
    assert_fails(&mut conn, &wire, 1007);
    // The failure's close frame (code and reason) was taken by assert_fails.
    let close = close_payload(1007, "invalid UTF-8 in text").len() as u64 + 2;
    assert_eq!(conn.counters(), counters(0, 0, wire.len() as u64, close));
    let mut client_conn = client();
    assert_fails(&mut client_conn, &frame(0x81, &[0xc3], None), 1007);
    assert_eq!(client_conn.counters().messages_received, 0);
}

#[test]
fn bytes_after_the_close_frame_are_counted_as_received() {
    let mut conn = server();
    let mut wire = from_client(0x88, &close_payload(1000, ""));
    wire.extend(from_client(0x81, b"late"));
    let events = feed(&mut conn, &wire);
    assert_eq!(events.len(), 1);
    assert_eq!(conn.counters(), counters(0, 0, wire.len() as u64, 0));
    assert_eq!(conn.data_to_send().len(), 4);
    assert_eq!(conn.counters().bytes_sent, 4);
}

#[test]
fn sent_frames_are_counted_with_their_headers_and_masks() {
    let mut conn = server();
    conn.send_text("hi").unwrap(); // 2 + 2
    conn.send_binary(&[0; 126]).unwrap(); // 4 + 126
    conn.send_binary(&[0; 65_536]).unwrap(); // 10 + 65,536
    conn.send_ping(b"p").unwrap(); // 2 + 1: not a message
    conn.send_pong(b"").unwrap(); // 2
    conn.send_close(Some(1000), "bye").unwrap(); // 2 + 5
    assert_eq!(
        conn.counters(),
        counters(0, 3, 0, 4 + 130 + 65_546 + 3 + 2 + 7)
    );
    // Refused sends count nothing.
    assert!(conn.send_text("after").is_err());
    assert!(conn.send_close(None, "").is_err());
    assert_eq!(conn.send_pong(b"dropped").unwrap(), b"");
    assert_eq!(conn.counters().messages_sent, 3);
    assert_eq!(conn.counters().bytes_sent, 65_692);

    let mut masked = client();
    masked.send_text("hi").unwrap(); // 2 + 4 + 2
    masked.send_ping(b"").unwrap(); // 2 + 4
    assert_eq!(masked.counters(), counters(0, 1, 0, 8 + 6));
}

#[test]
fn compressed_messages_count_their_compressed_size() {
    let config = Config {
        deflate: Some(DeflateParams::default()),
        ..Config::default()
    };
    let mut sender = Connection::with_seed(Role::Client, config.clone(), 5);
    let text = "compress me ".repeat(100);
    let wire = sender.send_text(&text).unwrap();
    assert!(wire.len() < text.len());
    assert_eq!(sender.counters(), counters(0, 1, 0, wire.len() as u64));
    let mut receiver = Connection::new(Role::Server, config);
    assert_eq!(feed(&mut receiver, &wire), vec![Event::Text(text)]);
    assert_eq!(receiver.counters(), counters(1, 0, wire.len() as u64, 0));
}

#[test]
fn a_shared_frame_counts_as_one_message_sent() {
    let mut conn = server();
    let frame = crate::frame::shared_text("to all").to_vec();
    conn.count_shared_frame(frame.len());
    assert_eq!(conn.counters(), counters(0, 1, 0, 8));
}

#[test]
fn release_frees_the_compression_state_and_keeps_the_close_code() {
    let config = Config {
        deflate: Some(DeflateParams::default()),
        ..Config::default()
    };
    let mut sender = Connection::with_seed(Role::Client, config.clone(), 5);
    let mut conn = Connection::new(Role::Server, config);
    let wire = sender.send_text("hello hello hello").unwrap();
    assert_eq!(
        feed(&mut conn, &wire),
        vec![Event::Text("hello hello hello".into())]
    );
    let close = sender.send_close(Some(4001), "bye").unwrap();
    feed(&mut conn, &close);
    assert!(conn.holds_compression_state());
    conn.release();
    assert!(!conn.holds_compression_state());
    assert!(!conn.compressed());
    assert_eq!(conn.state(), State::Closed);
    assert_eq!(conn.close_code(), Some(4001));
    assert_eq!(conn.close_reason(), Some("bye"));
    assert_eq!(conn.send_text("late"), Err(SendError::Closed));
    assert!(feed(&mut conn, &sender_frame_after_release()).is_empty());
}

fn sender_frame_after_release() -> Vec<u8> {
    from_client(0x81, b"ignored")
}
