//! Messages sent as fragments ([`Connection::encode_fragment`]) and received in pieces
//! ([`Delivery::Pieces`]), with and without permessage-deflate.

use super::tests::frame;
use super::*;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn config(deflate: Option<DeflateParams>, max: Option<usize>) -> Config {
    Config {
        deflate,
        max_message_size: max,
        ..Config::default()
    }
}

/// A client and a server, compressed with `deflate` if given.
fn pair(deflate: Option<DeflateParams>) -> (Connection, Connection) {
    (
        Connection::with_seed(Role::Client, config(deflate, None), 11),
        Connection::new(Role::Server, config(deflate, None)),
    )
}

fn feed(conn: &mut Connection, bytes: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    conn.receive_data(bytes, &mut events);
    events
}

fn pieces() -> Delivery {
    Delivery::Pieces {
        max_message_size: None,
    }
}

/// The frames of `chunks` sent as one message, each fragment encoded by `sender`.
fn fragments(sender: &mut Connection, chunks: &[Chunk<'_>]) -> Vec<u8> {
    let mut wire = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let frame = sender
            .encode_fragment(*chunk, i == 0, i + 1 == chunks.len())
            .expect("a fragment");
        frame.append_to(&mut wire);
    }
    wire
}

/// Headers of the frames in `wire` (payloads skipped).
fn headers(wire: &[u8]) -> Vec<Header> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let (header, used) = Header::parse(&wire[at..]).expect("a whole frame");
        at += used + header.len as usize;
        out.push(header);
    }
    out
}

/// Joins pieces; checks that each is of `text`'s kind and that only the last has `fin`.
fn join(events: &[Event]) -> (Vec<u8>, usize) {
    let mut data = Vec::new();
    let mut pieces = 0;
    for (i, event) in events.iter().enumerate() {
        let (bytes, fin) = match event {
            Event::TextPiece { text, fin } => (text.as_bytes(), *fin),
            Event::BinaryPiece { data, fin } => (&data[..], *fin),
            other => panic!("not a piece: {other:?}"),
        };
        assert_eq!(fin, i + 1 == events.len(), "fin only on the last piece");
        data.extend_from_slice(bytes);
        pieces += 1;
    }
    (data, pieces)
}

fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn fragments_arrive_as_one_message_and_set_fin_and_opcodes() {
    for deflate in [None, Some(DeflateParams::default())] {
        let (mut client, mut server) = pair(deflate);
        let wire = fragments(
            &mut server,
            &[Chunk::Text("κό"), Chunk::Text(""), Chunk::Text("σμε")],
        );
        let heads = headers(&wire);
        let firsts: Vec<(bool, u8, bool)> =
            heads.iter().map(|h| (h.fin, h.opcode, h.rsv1)).collect();
        let compressed = deflate.is_some();
        assert_eq!(
            firsts,
            [(false, 1, compressed), (false, 0, false), (true, 0, false)]
        );
        assert_eq!(feed(&mut client, &wire), [Event::Text("κόσμε".into())]);
        // The client masks its fragments; the server reads them.
        let wire = fragments(&mut client, &[Chunk::Binary(b"ab"), Chunk::Binary(b"c")]);
        assert!(headers(&wire).iter().all(|h| h.mask.is_some()));
        assert_eq!(feed(&mut server, &wire), [Event::Binary(b"abc".to_vec())]);
        assert_eq!(server.counters().messages_sent, 1);
        assert_eq!(client.counters().messages_sent, 1);
    }
}

#[test]
fn a_single_final_fragment_is_a_whole_message() {
    let (mut client, mut server) = pair(None);
    let wire = fragments(&mut server, &[Chunk::Binary(b"all")]);
    assert_eq!(wire, b"\x82\x03all");
    assert_eq!(feed(&mut client, &wire), [Event::Binary(b"all".to_vec())]);
}

#[test]
fn misuse_of_fragments_is_refused_and_changes_nothing() {
    let (mut client, mut server) = pair(None);
    assert_eq!(
        server
            .encode_fragment(Chunk::Text("x"), false, true)
            .unwrap_err(),
        SendError::NoMessageInProgress
    );
    let mut wire = server
        .encode_fragment(Chunk::Text("one "), true, false)
        .unwrap()
        .to_vec();
    assert!(server.sending_fragments());
    assert!(!server.accepts_shared_frames());
    assert_eq!(
        server.encode_text("other").unwrap_err(),
        SendError::MessageInProgress
    );
    assert_eq!(
        server.encode_binary(b"other").unwrap_err(),
        SendError::MessageInProgress
    );
    assert_eq!(
        server
            .encode_fragment(Chunk::Text("new"), true, true)
            .unwrap_err(),
        SendError::MessageInProgress
    );
    assert_eq!(
        server
            .encode_fragment(Chunk::Binary(b"\xff"), false, true)
            .unwrap_err(),
        SendError::FragmentKind("text")
    );
    // Control frames may come between fragments.
    wire.extend(server.send_ping(b"p").unwrap());
    wire.extend(server.send_pong(b"q").unwrap());
    server
        .encode_fragment(Chunk::Text("two"), false, true)
        .unwrap()
        .append_to(&mut wire);
    assert!(!server.sending_fragments());
    assert!(server.accepts_shared_frames());
    wire.extend(server.send_text("after").unwrap());
    assert_eq!(
        feed(&mut client, &wire),
        [
            Event::Ping(b"p".to_vec()),
            Event::Pong(b"q".to_vec()),
            Event::Text("one two".into()),
            Event::Text("after".into()),
        ]
    );
    assert_eq!(server.counters().messages_sent, 2);
}

#[test]
fn a_close_may_cut_a_fragmented_message_and_ends_sending() {
    let (_, mut server) = pair(None);
    server
        .encode_fragment(Chunk::Binary(b"a"), true, false)
        .unwrap();
    server.send_close(Some(1000), "").unwrap();
    assert_eq!(
        server
            .encode_fragment(Chunk::Binary(b"b"), false, true)
            .unwrap_err(),
        SendError::Closed
    );
}

#[test]
fn compressed_fragments_round_trip_with_and_without_context_takeover() {
    let text: String = "streaming a message in pieces ".repeat(5_000);
    for no_takeover in [false, true] {
        let params = DeflateParams {
            server_no_context_takeover: no_takeover,
            client_no_context_takeover: no_takeover,
            ..DeflateParams::default()
        };
        let (mut client, mut server) = pair(Some(params));
        for round in 0..3 {
            let chunks: Vec<Chunk<'_>> = text.as_bytes().chunks(7_000).map(Chunk::Binary).collect();
            let wire = fragments(&mut client, &chunks);
            let heads = headers(&wire);
            assert!(heads[0].rsv1 && heads[1..].iter().all(|h| !h.rsv1));
            // Compressed: far smaller than the text.
            assert!(
                wire.len() < text.len() / 10,
                "round {round}: {}",
                wire.len()
            );
            assert_eq!(
                feed(&mut server, &wire),
                [Event::Binary(text.as_bytes().to_vec())]
            );
            // A whole message after it, both ways.
            let whole = client.send_text("whole").unwrap();
            assert_eq!(feed(&mut server, &whole), [Event::Text("whole".into())]);
            let back = server.send_text(&text).unwrap();
            assert_eq!(feed(&mut client, &back), [Event::Text(text.clone())]);
        }
    }
}

#[test]
fn an_empty_final_fragment_ends_a_compressed_message() {
    let (mut client, mut server) = pair(Some(DeflateParams::default()));
    for _ in 0..2 {
        let wire = fragments(
            &mut server,
            &[Chunk::Text("abc"), Chunk::Text("abc"), Chunk::Text("")],
        );
        assert_eq!(feed(&mut client, &wire), [Event::Text("abcabc".into())]);
    }
}

#[test]
fn pieces_are_delivered_as_frames_arrive_with_fin_on_the_last() {
    let (mut client, mut server) = pair(None);
    server.set_delivery(pieces());
    assert_eq!(server.delivery(), pieces());
    let wire = fragments(&mut client, &[Chunk::Binary(b"abc"), Chunk::Binary(b"de")]);
    let (first, second) = wire.split_at(2 + 4 + 3);
    assert_eq!(
        feed(&mut server, first),
        [Event::BinaryPiece {
            data: b"abc".to_vec(),
            fin: false
        }]
    );
    assert_eq!(
        feed(&mut server, second),
        [Event::BinaryPiece {
            data: b"de".to_vec(),
            fin: true
        }]
    );
    // An unfragmented message is one piece; an empty one too.
    let mut wire = frame(0x81, b"whole", Some(KEY));
    wire.extend(frame(0x82, b"", Some(KEY)));
    assert_eq!(
        feed(&mut server, &wire),
        [
            Event::TextPiece {
                text: "whole".into(),
                fin: true
            },
            Event::BinaryPiece {
                data: vec![],
                fin: true
            },
        ]
    );
    assert_eq!(server.counters().messages_received, 3);
}

#[test]
fn text_pieces_split_only_between_characters() {
    let text = "aκόσμε€𝄞z".repeat(50);
    let wire = frame(0x81, text.as_bytes(), Some(KEY));
    for step in [1, 2, 3, 5, 7, 64] {
        let mut server = Connection::new(Role::Server, Config::default());
        server.set_delivery(pieces());
        let mut events = Vec::new();
        for part in wire.chunks(step) {
            server.receive_data(part, &mut events);
        }
        let (joined, _) = join(&events);
        assert_eq!(joined, text.as_bytes(), "step {step}");
        assert!(events.iter().all(|e| matches!(e, Event::TextPiece { .. })));
    }
    // A character cut between two frames is carried to the next piece.
    let mut server = Connection::new(Role::Server, Config::default());
    server.set_delivery(pieces());
    let euro = "€".as_bytes();
    let mut events = feed(&mut server, &frame(0x01, &[b'a', euro[0]], Some(KEY)));
    events.extend(feed(&mut server, &frame(0x80, &euro[1..], Some(KEY))));
    assert_eq!(
        events,
        [
            Event::TextPiece {
                text: "a".into(),
                fin: false
            },
            Event::TextPiece {
                text: "€".into(),
                fin: true
            },
        ]
    );
}

#[test]
fn invalid_text_in_pieces_fails_fast_with_1007() {
    let mut server = Connection::new(Role::Server, Config::default());
    server.set_delivery(pieces());
    let events = feed(&mut server, &frame(0x01, b"ok\xff", Some(KEY)));
    assert!(matches!(
        events.last(),
        Some(Event::Failure { code: 1007, .. })
    ));
    // A message that ends inside a character.
    let mut server = Connection::new(Role::Server, Config::default());
    server.set_delivery(pieces());
    let mut events = feed(&mut server, &frame(0x01, b"ab\xe2\x82", Some(KEY)));
    assert_eq!(
        events,
        [Event::TextPiece {
            text: "ab".into(),
            fin: false
        }]
    );
    events = feed(&mut server, &frame(0x80, b"", Some(KEY)));
    assert!(matches!(&events[..], [Event::Failure { code: 1007, .. }]));
}

#[test]
fn invalid_text_in_pieces_fails_before_the_rest_of_the_read_is_parsed() {
    // Found by the `pieces` fuzz target: invalid UTF-8 in a first fragment, then, in the
    // same read, a frame that breaks the rules another way (a masked frame to a client;
    // an unmasked one to a server). The text fails first, with 1007, as it does whole;
    // it was checked only when its piece was handed over, so the next header's 1002 won.
    for (role, mask, bad) in [
        (Role::Client, None, frame(0x80, b"x", Some(KEY))),
        (Role::Server, Some(KEY), frame(0x80, b"x", None)),
    ] {
        for compressed in [false, true] {
            let deflate = compressed.then(DeflateParams::default);
            let mut conn = Connection::new(role, config(deflate, None));
            conn.set_delivery(pieces());
            let mut wire = if compressed {
                let peer = if role == Role::Client {
                    Role::Server
                } else {
                    Role::Client
                };
                let mut sender = Connection::new(peer, config(deflate, None));
                let mut wire = Vec::new();
                sender
                    .encode_fragment(Chunk::Binary(b"\x92\x01"), true, false)
                    .expect("a fragment")
                    .append_to(&mut wire);
                wire[0] = (wire[0] & 0xf0) | 0x01; // the same bytes, as text
                wire
            } else {
                frame(0x01, b"\x92\x01", mask)
            };
            wire.extend_from_slice(&bad);
            let events = feed(&mut conn, &wire);
            assert!(
                matches!(&events[..], [Event::Failure { code: 1007, .. }]),
                "{role:?} compressed {compressed}: {events:?}"
            );
            assert_eq!(conn.close_code(), Some(1007));
        }
    }
}

#[test]
fn pieces_have_their_own_limit_and_hold_at_most_max_piece() {
    let big = random_bytes(3 * MAX_PIECE + 5, 3);
    // Over the connection's 1 MiB limit as a whole message: fine in pieces with no limit.
    let mut server = Connection::new(Role::Server, Config::default());
    server.set_delivery(pieces());
    let events = feed(&mut server, &frame(0x82, &big, Some(KEY)));
    let (joined, count) = join(&events);
    assert_eq!(joined, big);
    assert_eq!(count, 4);
    assert!(events
        .iter()
        .all(|e| matches!(e, Event::BinaryPiece { data, .. } if data.len() <= MAX_PIECE)));
    // With a limit for pieces: refused from the header, as a whole message would be.
    let mut server = Connection::new(Role::Server, Config::default());
    server.set_delivery(Delivery::Pieces {
        max_message_size: Some(MAX_PIECE),
    });
    let mut wire = frame(0x02, &big[..MAX_PIECE], Some(KEY));
    wire.extend(frame(0x80, b"x", Some(KEY)));
    let events = feed(&mut server, &wire);
    assert!(matches!(
        events.last(),
        Some(Event::Failure { code: 1009, .. })
    ));
}

#[test]
fn compressed_pieces_are_inflated_incrementally_and_bounded() {
    // Compresses to a few KiB, inflates to 5 MiB: delivered in pieces of at most MAX_PIECE.
    let text = "0123456789abcdef".repeat(5 * MAX_PIECE / 16);
    let params = DeflateParams::default();
    let (mut client, mut server) = pair(Some(params));
    server.set_delivery(pieces());
    for round in 0..2 {
        let wire = client.send_text(&text).unwrap();
        assert!(wire.len() < 64 * 1024);
        let events = feed(&mut server, &wire);
        let (joined, count) = join(&events);
        assert_eq!(joined, text.as_bytes(), "round {round}");
        assert!(count >= 5);
        assert!(events
            .iter()
            .all(|e| matches!(e, Event::TextPiece { text, .. } if text.len() <= MAX_PIECE)));
        // Sent as fragments and fed one frame at a time, too.
        let chunks: Vec<Chunk<'_>> = text
            .as_bytes()
            .chunks(300_001)
            .map(|c| Chunk::Text(std::str::from_utf8(c).unwrap()))
            .collect();
        let wire = fragments(&mut client, &chunks);
        let mut events = Vec::new();
        for part in wire.chunks(4096) {
            server.receive_data(part, &mut events);
        }
        assert_eq!(join(&events).0, text.as_bytes());
    }
    // A limit on the inflated total: 1009 before the bomb is inflated past it.
    let (mut client, mut server) = pair(Some(params));
    server.set_delivery(Delivery::Pieces {
        max_message_size: Some(2 * MAX_PIECE),
    });
    let events = feed(&mut server, &client.send_text(&text).unwrap());
    let last = events.last().unwrap();
    assert!(
        matches!(last, Event::Failure { code: 1009, .. }),
        "{last:?}"
    );
    let delivered: usize = events[..events.len() - 1]
        .iter()
        .map(|e| match e {
            Event::TextPiece { text, fin: false } => text.len(),
            other => panic!("not a first piece: {other:?}"),
        })
        .sum();
    assert!(delivered <= 2 * MAX_PIECE);
}

#[test]
fn pieces_apply_at_once_and_whole_messages_from_the_next_message() {
    let (mut client, mut server) = pair(None);
    let first = client
        .encode_fragment(Chunk::Binary(b"ab"), true, false)
        .unwrap()
        .to_vec();
    assert!(feed(&mut server, &first).is_empty());
    // A message under way goes on in pieces: what was assembled of it first.
    server.set_delivery(pieces());
    let rest = client
        .encode_fragment(Chunk::Binary(b"c"), false, true)
        .unwrap()
        .to_vec();
    assert_eq!(
        feed(&mut server, &rest),
        [Event::BinaryPiece {
            data: b"abc".to_vec(),
            fin: true
        }]
    );
    // Back to whole messages: from the next one; one in pieces ends in pieces.
    let open = client
        .encode_fragment(Chunk::Binary(b"d"), true, false)
        .unwrap()
        .to_vec();
    assert_eq!(
        feed(&mut server, &open),
        [Event::BinaryPiece {
            data: b"d".to_vec(),
            fin: false
        }]
    );
    server.set_delivery(Delivery::Messages);
    let end = client
        .encode_fragment(Chunk::Binary(b"e"), false, true)
        .unwrap()
        .to_vec();
    assert_eq!(
        feed(&mut server, &end),
        [Event::BinaryPiece {
            data: b"e".to_vec(),
            fin: true
        }]
    );
    assert_eq!(
        feed(&mut server, &client.send_binary(b"f").unwrap()),
        [Event::Binary(b"f".to_vec())]
    );
}

#[test]
fn a_message_switched_to_pieces_midway_keeps_its_limit_pieces_and_history() {
    // Uncompressed, with a whole-message limit above MAX_PIECE: what was assembled comes
    // in pieces of at most MAX_PIECE, text cut between characters.
    let text = "€uro ".repeat(2 * MAX_PIECE / 7);
    let (mut client, _) = pair(None);
    let mut server = Connection::new(Role::Server, config(None, Some(4 * MAX_PIECE)));
    let (head, tail) = text.split_at(text.len() - 7);
    let mut wire = fragments(&mut client, &[Chunk::Text(head), Chunk::Text(tail)]);
    let cut = wire.len() - 30;
    assert!(feed(&mut server, &wire[..cut]).is_empty());
    server.set_delivery(pieces());
    let mut events = feed(&mut server, &wire.split_off(cut));
    let (joined, count) = join(&events);
    assert_eq!(joined, text.as_bytes());
    assert!(count >= 2);
    assert!(events
        .iter()
        .all(|e| matches!(e, Event::TextPiece { text, .. } if text.len() <= MAX_PIECE)));
    events.clear();
    // Compressed with context takeover, compacted after the switch: the history has the
    // part inflated whole, so the next message (which refers to it) still inflates.
    let params = DeflateParams::default();
    let (mut client, mut server) = pair(Some(params));
    let phrase = "a phrase the next message repeats, from the first part only. ";
    let first = format!("{phrase}{}", "x".repeat(40));
    let wire = fragments(
        &mut client,
        &[Chunk::Text(&first), Chunk::Text("and a short end")],
    );
    let (head_frame, rest) = wire.split_at(headers(&wire)[0].len as usize + 2);
    assert!(feed(&mut server, head_frame).is_empty());
    server.set_delivery(pieces());
    let (joined, _) = join(&feed(&mut server, rest));
    assert_eq!(joined, format!("{first}and a short end").as_bytes());
    assert!(server.compact_if_idle() || server.compact_if_idle());
    let next = client.send_text(phrase).unwrap();
    assert!(next.len() < phrase.len() / 2, "refers back: {}", next.len());
    let (joined, _) = join(&feed(&mut server, &next));
    assert_eq!(joined, phrase.as_bytes());
}

#[test]
fn pieces_read_in_place_match_pieces_from_receive_data() {
    let big = random_bytes(700_000, 9);
    let wire = frame(0x82, &big, Some(KEY));
    let mut server = Connection::new(Role::Server, Config::default());
    server.set_delivery(pieces());
    let mut events = Vec::new();
    let mut at = 0;
    while at < wire.len() {
        let rest = &wire[at..];
        let mut source = rest;
        if server
            .read_payload_in_place(100_000, &mut source, &mut events)
            .is_some()
        {
            at += rest.len() - source.len();
        } else {
            let n = rest.len().min(100_000);
            server.receive_data(&rest[..n], &mut events);
            at += n;
        }
    }
    let (joined, count) = join(&events);
    assert_eq!(joined, big);
    assert!(count >= 7, "one piece per read: {count}");
}

#[test]
fn control_frames_between_pieces_are_handled_in_order() {
    let mut server = Connection::new(Role::Server, Config::default());
    server.set_delivery(pieces());
    let mut wire = frame(0x02, b"a", Some(KEY));
    wire.extend(frame(0x89, b"hi", Some(KEY)));
    wire.extend(frame(0x80, b"b", Some(KEY)));
    let events = feed(&mut server, &wire);
    assert_eq!(
        events,
        [
            Event::BinaryPiece {
                data: b"a".to_vec(),
                fin: false
            },
            Event::Ping(b"hi".to_vec()),
            Event::BinaryPiece {
                data: b"b".to_vec(),
                fin: true
            },
        ]
    );
    assert_eq!(server.data_to_send(), b"\x8a\x02hi");
    // What came before a close frame in the same read is delivered before the close.
    let mut wire = frame(0x01, b"last words", Some(KEY));
    wire.extend(frame(0x88, b"\x03\xe8", Some(KEY)));
    assert_eq!(
        feed(&mut server, &wire),
        [
            Event::TextPiece {
                text: "last words".into(),
                fin: false
            },
            Event::Close {
                code: 1000,
                reason: String::new()
            },
        ]
    );
}

/// Many random messages, cut into random fragments and fed in random reads, compressed or
/// not: a connection receiving in pieces gets the same bytes as one receiving whole
/// messages, every piece within [`MAX_PIECE`], text pieces whole characters.
#[test]
fn pieces_join_to_the_whole_messages_for_random_cuts() {
    let alphabet = ["a", "é", "€", "𝄞", " ", "z"];
    for seed in 1..=24u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let deflate = (seed % 3 != 0).then(|| DeflateParams {
            client_no_context_takeover: seed % 2 == 0,
            ..DeflateParams::default()
        });
        let (mut client, _) = pair(deflate);
        let mut whole = Connection::new(Role::Server, config(deflate, None));
        let mut pieced = Connection::new(Role::Server, config(deflate, None));
        pieced.set_delivery(pieces());
        let mut wire = Vec::new();
        let messages = 1 + next(4);
        for _ in 0..messages {
            let text = next(2) == 0;
            let large = next(8) == 0;
            let len = next(if large {
                3 * MAX_PIECE as u64 / 2
            } else {
                3000
            }) as usize;
            let data: Vec<u8> = if text {
                let mut s = String::new();
                while s.len() < len {
                    s.push_str(alphabet[next(alphabet.len() as u64) as usize]);
                }
                s.into_bytes()
            } else {
                random_bytes(len, seed + len as u64)
            };
            // Cut into fragments (text at character boundaries, as &str must be).
            let mut cuts = vec![0];
            let count = next(5);
            for _ in 0..count {
                let mut at = next(data.len() as u64 + 1) as usize;
                while text && std::str::from_utf8(&data[..at]).is_err() {
                    at -= 1;
                }
                cuts.push(at);
            }
            cuts.push(data.len());
            cuts.sort_unstable();
            let chunks: Vec<Chunk<'_>> = cuts
                .windows(2)
                .map(|w| {
                    let part = &data[w[0]..w[1]];
                    if text {
                        Chunk::Text(std::str::from_utf8(part).unwrap())
                    } else {
                        Chunk::Binary(part)
                    }
                })
                .collect();
            wire.extend(fragments(&mut client, &chunks));
            if next(3) == 0 {
                wire.extend(client.send_ping(b"between").unwrap());
            }
        }
        let expected = feed(&mut whole, &wire);
        let mut got = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let n = (1 + next(200_000) as usize).min(wire.len() - at);
            pieced.receive_data(&wire[at..at + n], &mut got);
            at += n;
        }
        // Join the pieces back into messages.
        let mut joined = Vec::new();
        let mut current: Option<(bool, Vec<u8>)> = None;
        for event in got {
            let (text, bytes, fin) = match event {
                Event::TextPiece { text, fin } => (true, text.into_bytes(), fin),
                Event::BinaryPiece { data, fin } => (false, data, fin),
                other => {
                    joined.push(other);
                    continue;
                }
            };
            assert!(
                bytes.len() <= MAX_PIECE,
                "seed {seed}: a piece of {}",
                bytes.len()
            );
            let entry = current.get_or_insert((text, Vec::new()));
            assert_eq!(entry.0, text, "seed {seed}: one kind per message");
            entry.1.extend(bytes);
            if fin {
                let (text, bytes) = current.take().unwrap();
                joined.push(if text {
                    Event::Text(String::from_utf8(bytes).unwrap())
                } else {
                    Event::Binary(bytes)
                });
            }
        }
        assert!(
            current.is_none(),
            "seed {seed}: a message without its last piece"
        );
        assert_eq!(joined, expected, "seed {seed}");
    }
}

/// Compaction between the pieces of a message, both ways (a server lends its zlib state
/// back after each message; within one it keeps it): the message goes on, and so do the
/// next ones, which refer back to it.
#[test]
fn compaction_between_pieces_keeps_the_message_going() {
    let params = DeflateParams::default();
    let (mut client, mut server) = pair(Some(params));
    server.set_delivery(pieces());
    let phrase = "a phrase that comes back in every fragment and message. ";
    for round in 0..3 {
        let mut joined = Vec::new();
        let mut first = true;
        for _ in 0..3 {
            // The sender, a client, compacts between its fragments too.
            let wire = client
                .encode_fragment(Chunk::Text(phrase), first, false)
                .unwrap()
                .to_vec();
            first = false;
            // Half a frame, so that the server's decompressor is inside a block when it
            // compacts.
            let (head, tail) = wire.split_at(wire.len() / 2);
            for part in [head, tail] {
                for event in feed(&mut server, part) {
                    match event {
                        Event::TextPiece { text, fin: false } => joined.extend(text.into_bytes()),
                        other => panic!("round {round}: {other:?}"),
                    }
                }
                server.compact_if_idle();
                server.compact_if_idle();
            }
            client.compact_if_idle();
            client.compact_if_idle();
        }
        let end = client
            .encode_fragment(Chunk::Text("end"), false, true)
            .unwrap()
            .to_vec();
        let events = feed(&mut server, &end);
        let Some(Event::TextPiece { text, fin: true }) = events.last() else {
            panic!("round {round}: {events:?}");
        };
        joined.extend(text.as_bytes());
        assert_eq!(joined, format!("{}end", phrase.repeat(3)).as_bytes());
        // Whole messages both ways afterwards, referring back.
        let back = server.send_text(phrase).unwrap();
        assert_eq!(
            feed(&mut client, &back),
            [Event::Text(phrase.into())],
            "round {round}"
        );
    }
}
