//! The blocking `WebSocket` over real loopback sockets: against itself, against tungstenite
//! in both roles, and against a raw peer written here for what a library peer cannot do.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use wschannel::handshake::{AcceptOptions, ClientOptions};
use wschannel::sync::WebSocket;
use wschannel::{Config, DeflateConfig, Error, Message};

/// How long any read may block before the test fails instead of hanging.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A listener on a free port and its address.
fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    (listener, address)
}

fn accept_one(listener: &TcpListener) -> TcpStream {
    let (stream, _) = listener.accept().unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

fn dial(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// A wschannel server thread that echoes every message of one connection, returning the
/// close code it saw.
fn echo_server(
    options: AcceptOptions,
) -> (String, thread::JoinHandle<Result<Option<u16>, String>>) {
    let (listener, address) = listen();
    let server = thread::spawn(move || {
        let stream = accept_one(&listener);
        let mut ws = WebSocket::accept_with(stream, &options, Config::default())
            .map_err(|e| e.to_string())?;
        while let Some(message) = ws.read().map_err(|e| e.to_string())? {
            match message {
                Message::Text(text) => ws.send_text(&text),
                Message::Binary(data) => ws.send_binary(&data),
            }
            .map_err(|e| e.to_string())?;
        }
        Ok(ws.close_code())
    });
    (address, server)
}

#[test]
fn client_and_server_echo_and_close_cleanly() {
    let (address, server) = echo_server(AcceptOptions::default());
    let mut ws = WebSocket::connect(dial(&address), &address, "/").unwrap();
    ws.send_text("héllo").unwrap();
    assert_eq!(ws.read().unwrap(), Some(Message::Text("héllo".into())));
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    ws.send_binary(&big).unwrap();
    assert_eq!(ws.read().unwrap(), Some(Message::Binary(big)));
    ws.close(Some(1000), "bye").unwrap();
    assert_eq!(ws.read().unwrap(), None);
    assert_eq!(
        (ws.close_code(), ws.close_reason()),
        (Some(1000), Some("bye"))
    );
    assert_eq!(server.join().unwrap(), Ok(Some(1000)));
}

#[test]
fn client_and_server_agree_on_compression_and_a_subprotocol() {
    let accept = AcceptOptions {
        protocols: vec!["chat".into()],
        deflate: Some(DeflateConfig::default()),
        ..AcceptOptions::default()
    };
    let (address, server) = echo_server(accept);
    let options = ClientOptions {
        protocols: vec!["other".into(), "chat".into()],
        deflate: Some(DeflateConfig::default()),
        ..ClientOptions::default()
    };
    let config = Config::default();
    let mut ws = WebSocket::connect_with(dial(&address), &address, "/", &options, config).unwrap();
    assert_eq!(ws.protocol(), Some("chat"));
    let text = "compressible ".repeat(1000);
    ws.send_text(&text).unwrap();
    assert_eq!(ws.read().unwrap(), Some(Message::Text(text.clone())));
    let sent = ws.counters().bytes_sent;
    assert!(sent < text.len() as u64 / 10, "{sent} bytes on the wire");
    ws.close(None, "").unwrap();
    assert_eq!(ws.read().unwrap(), None);
    assert_eq!(server.join().unwrap(), Ok(Some(1005)));
}

#[test]
fn client_talks_to_a_tungstenite_server() {
    let (listener, address) = listen();
    let server = thread::spawn(move || {
        let mut ws = tungstenite::accept(accept_one(&listener)).unwrap();
        ws.send(tungstenite::Message::Ping(
            b"from tungstenite".to_vec().into(),
        ))
        .unwrap();
        loop {
            match ws.read().unwrap() {
                tungstenite::Message::Text(text) => {
                    ws.send(tungstenite::Message::Text(text)).unwrap()
                }
                tungstenite::Message::Binary(data) => {
                    ws.send(tungstenite::Message::Binary(data)).unwrap()
                }
                tungstenite::Message::Pong(data) => assert_eq!(&data[..], b"from tungstenite"),
                tungstenite::Message::Close(frame) => {
                    let frame = frame.expect("a close code");
                    // tungstenite echoes the close itself; read until it is done.
                    while ws.read().is_ok() {}
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let mut ws = WebSocket::connect(dial(&address), &address, "/chat").unwrap();
    ws.send_text("one").unwrap();
    assert_eq!(ws.read().unwrap(), Some(Message::Text("one".into())));
    ws.send_binary(&[0, 1, 2]).unwrap();
    assert_eq!(ws.read().unwrap(), Some(Message::Binary(vec![0, 1, 2])));
    ws.close(Some(4000), "done here").unwrap();
    assert_eq!(ws.read().unwrap(), None);
    assert_eq!(ws.close_code(), Some(4000));
    assert_eq!(server.join().unwrap(), (4000, "done here".to_owned()));
}

#[test]
fn server_talks_to_a_tungstenite_client() {
    let (address, server) = echo_server(AcceptOptions::default());
    let url = format!("ws://{address}/");
    let (mut ws, response) = tungstenite::client(url, dial(&address)).unwrap();
    assert_eq!(response.status(), 101);
    ws.send(tungstenite::Message::Ping(b"p".to_vec().into()))
        .unwrap();
    ws.send(tungstenite::Message::Text("hello".into())).unwrap();
    assert_eq!(
        ws.read().unwrap(),
        tungstenite::Message::Pong(b"p".to_vec().into())
    );
    assert_eq!(
        ws.read().unwrap(),
        tungstenite::Message::Text("hello".into())
    );
    ws.close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "leaving".into(),
    }))
    .unwrap();
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(frame))) => {
                assert_eq!(frame.code, CloseCode::Away);
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(server.join().unwrap(), Ok(Some(1001)));
}

/// The upgrade request a raw client sends, and the 101 it expects to read.
const UPGRADE: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// A masked client frame (key 0: the payload is sent as it is).
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mut frame = vec![first, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

/// Reads from `stream` until `want` bytes came.
fn read_exactly(stream: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = vec![0; want];
    stream.read_exact(&mut got).unwrap();
    got
}

#[test]
fn server_answers_both_pings_of_one_read() {
    // The wrapper's side of the engine regression: replies taken per event, none lost.
    let (address, server) = echo_server(AcceptOptions::default());
    let mut raw = dial(&address);
    raw.write_all(UPGRADE).unwrap();
    let head = read_exactly(&mut raw, 129);
    assert!(
        head.ends_with(b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"),
        "{head:?}"
    );
    let mut wire = client_frame(0x89, b"a");
    wire.extend(client_frame(0x89, b"b"));
    wire.extend(client_frame(0x88, &1000u16.to_be_bytes()));
    raw.write_all(&wire).unwrap();
    let replies = read_exactly(&mut raw, 3 + 3 + 4);
    assert_eq!(replies, b"\x8a\x01a\x8a\x01b\x88\x02\x03\xe8");
    assert_eq!(server.join().unwrap(), Ok(Some(1000)));
}

#[test]
fn server_fails_a_message_over_the_default_limit_with_1009() {
    let (listener, address) = listen();
    let server = thread::spawn(move || {
        let mut ws = WebSocket::accept(accept_one(&listener)).unwrap();
        let failed = ws.read();
        (format!("{failed:?}"), ws.read().map_err(|e| e.to_string()))
    });
    let url = format!("ws://{address}/");
    let (mut ws, _) = tungstenite::client(url, dial(&address)).unwrap();
    let two_mib = vec![0u8; 2 << 20];
    // The server may fail the connection before all of it is written.
    let _ = ws.send(tungstenite::Message::Binary(two_mib.into()));
    let (failed, after) = server.join().unwrap();
    assert!(failed.contains("Failed { code: 1009"), "{failed}");
    assert_eq!(after, Ok(None), "the connection is over");
    match ws.read() {
        Ok(tungstenite::Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected the 1009 close frame, got {other:?}"),
    }
}

#[test]
fn server_refuses_a_plain_http_request_with_its_status() {
    let (listener, address) = listen();
    let server = thread::spawn(move || WebSocket::accept(accept_one(&listener)).err());
    let mut raw = dial(&address);
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    raw.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 404 "), "{response}");
    match server.join().unwrap() {
        Some(Error::Refused { status: 404, .. }) => {}
        other => panic!("expected a 404 refusal, got {other:?}"),
    }
}

#[test]
fn client_reports_a_stream_ended_without_a_close_frame() {
    let (listener, address) = listen();
    let server = thread::spawn(move || {
        let mut ws = WebSocket::accept(accept_one(&listener)).unwrap();
        ws.send_text("last words").unwrap();
        // Dropping the WebSocket closes TCP with no close frame.
    });
    let mut ws = WebSocket::connect(dial(&address), &address, "/").unwrap();
    assert_eq!(ws.read().unwrap(), Some(Message::Text("last words".into())));
    server.join().unwrap();
    match ws.read() {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
        other => panic!("expected UnexpectedEof, got {other:?}"),
    }
    assert_eq!(ws.close_code(), Some(1006));
}

#[test]
fn client_sending_after_close_is_refused_at_the_call() {
    let (address, server) = echo_server(AcceptOptions::default());
    let mut ws = WebSocket::connect(dial(&address), &address, "/").unwrap();
    ws.close(Some(1000), "").unwrap();
    match ws.send_text("too late") {
        Err(Error::Send(e)) => assert!(e.to_string().contains("close frame"), "{e}"),
        other => panic!("expected a send error, got {other:?}"),
    }
    assert!(
        matches!(ws.close(Some(1000), ""), Ok(())),
        "closing again does nothing"
    );
    assert!(matches!(ws.send_text(""), Err(Error::Send(_))));
    assert_eq!(ws.read().unwrap(), None);
    assert_eq!(server.join().unwrap(), Ok(Some(1000)));
}
