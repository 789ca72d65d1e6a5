//! Byte-level tests of the opening handshake: `sign_key`, the client's request and its checks
//! of the response, the server's parsing and checks of the request, and the responses.

use super::*;
use crate::deflate::{server_negotiate, DeflateConfig};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn options(
    protocols: &[&str],
    deflate: Option<DeflateConfig>,
    headers: &[(&str, &str)],
) -> ClientOptions {
    ClientOptions {
        protocols: strings(protocols),
        headers: pairs(headers),
        deflate,
        limits: Limits::default(),
    }
}

fn client_with(protocols: &[&str], limits: Limits) -> ClientHandshake {
    let options = ClientOptions {
        limits,
        ..options(protocols, None, &[])
    };
    ClientHandshake::with_seed("example.com", "/", &options, 1).unwrap()
}

fn client(protocols: &[&str]) -> ClientHandshake {
    client_with(protocols, Limits::default())
}

/// The key `client` sends, and its accept value.
const CLIENT_KEY: &str = "YRgw02QaaPlKaQ3MJdH0sA==";

fn accept() -> String {
    sign_key(CLIENT_KEY.as_bytes())
}

/// A 101 response with the right accept value and `extra` header lines.
fn switching(extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n{extra}\r\n",
        accept()
    )
    .into_bytes()
}

fn client_error(protocols: &[&str], response: &[u8]) -> HandshakeError {
    client(protocols).receive_data(response).unwrap_err()
}

// -- sign_key --------------------------------------------------------------------------

#[test]
fn sign_key_matches_the_rfc_example() {
    assert_eq!(
        sign_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn sign_key_matches_a_second_vector() {
    assert_eq!(
        sign_key(b"x3JJHMbDL1EzLkh9GBhXDw=="),
        "HSmrc0sMlYUkAGmm5OPpG2HaGWk="
    );
}

#[test]
fn sign_key_of_an_empty_key_hashes_the_guid_alone() {
    assert_eq!(sign_key(b""), "Kfh9QIsMVZcl6xEPYxPHzW8SZ8w=");
}

#[test]
fn limits_default_to_16384_bytes_and_128_headers() {
    let limits = Limits::default();
    assert_eq!(limits.max_header_size, 16384);
    assert_eq!(limits.max_headers, 128);
}

// -- client request --------------------------------------------------------------------

#[test]
fn client_request_matches_expected_bytes() {
    let options = options(
        &["chat", "superchat"],
        Some(DeflateConfig::default()),
        &[("User-Agent", "wschannel/0.1"), ("Cookie", "a=b")],
    );
    let hs = ClientHandshake::with_seed("example.com:8080", "/chat?x=1", &options, 42).unwrap();
    let expected: &[u8] = b"GET /chat?x=1 HTTP/1.1\r\n\
        Host: example.com:8080\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade\r\n\
        Sec-WebSocket-Key: oiQnImN3zIZ9Ua0/Ewrwig==\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
        User-Agent: wschannel/0.1\r\n\
        Cookie: a=b\r\n\
        \r\n";
    assert_eq!(
        String::from_utf8_lossy(hs.request()),
        String::from_utf8_lossy(expected)
    );
    assert_eq!(hs.key(), "oiQnImN3zIZ9Ua0/Ewrwig==");
}

#[test]
fn client_key_is_base64_of_16_random_bytes_new_for_each_handshake() {
    let hs = client(&[]);
    assert_eq!(BASE64.decode(hs.key()).unwrap().len(), 16);
    let a = ClientHandshake::new("h", "/", &ClientOptions::default()).unwrap();
    let b = ClientHandshake::new("h", "/", &ClientOptions::default()).unwrap();
    assert_eq!(BASE64.decode(a.key()).unwrap().len(), 16);
    assert_ne!(a.key(), b.key());
    let seeded = |seed| ClientHandshake::with_seed("h", "/", &ClientOptions::default(), seed);
    assert_eq!(seeded(42).unwrap().key(), seeded(42).unwrap().key());
    assert_ne!(seeded(42).unwrap().key(), seeded(43).unwrap().key());
}

#[test]
fn client_request_defaults_an_empty_resource_to_slash() {
    let hs = client(&[]);
    assert!(hs
        .request()
        .starts_with(b"GET / HTTP/1.1\r\nHost: example.com\r\n"));
    let hs = ClientHandshake::with_seed("h", "", &ClientOptions::default(), 1).unwrap();
    assert!(hs.request().starts_with(b"GET / HTTP/1.1\r\n"));
}

#[test]
fn client_request_without_protocols_or_extensions_has_neither_header() {
    let expected = format!(
        "GET / HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {CLIENT_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    assert_eq!(client(&[]).request(), expected.as_bytes());
}

#[test]
fn client_request_writes_a_user_host_once_in_place_of_the_default() {
    let options = options(&[], None, &[("X-A", "1"), ("host", "proxy.example:81")]);
    let hs = ClientHandshake::with_seed("example.com", "/", &options, 1).unwrap();
    let expected = format!(
        "GET / HTTP/1.1\r\nHost: proxy.example:81\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {CLIENT_KEY}\r\n\
         Sec-WebSocket-Version: 13\r\nX-A: 1\r\n\r\n"
    );
    assert_eq!(String::from_utf8_lossy(hs.request()), expected);
}

fn new_client_error(
    protocols: &[&str],
    deflate: Option<DeflateConfig>,
    headers: &[(&str, &str)],
) -> HandshakeError {
    ClientHandshake::new("example.com", "/", &options(protocols, deflate, headers)).unwrap_err()
}

#[test]
fn client_refuses_user_handshake_headers() {
    for name in [
        "Sec-WebSocket-Key",
        "sec-websocket-version",
        "UPGRADE",
        "Connection",
        "Sec-WebSocket-Protocol",
        "Sec-WebSocket-Extensions",
    ] {
        let err = new_client_error(&[], None, &[(name, "x")]);
        assert!(
            matches!(err, HandshakeError::ReservedHeader(_)),
            "{name}: {err:?}"
        );
        assert_eq!(err.status(), 0);
    }
    assert_eq!(
        new_client_error(&[], None, &[("sec-websocket-key", "x")]).to_string(),
        "header 'Sec-WebSocket-Key' is written by the handshake itself and cannot be given \
         as an extra header"
    );
}

#[test]
fn client_refuses_two_user_host_headers() {
    let err = new_client_error(&[], None, &[("Host", "a"), ("HOST", "b")]);
    assert_eq!(err, HandshakeError::DuplicateHeader("Host".into()));
}

#[test]
fn client_refuses_invalid_header_names() {
    for name in ["", "Bad Name", "Bad:Name", "Ünicode", "a\r\nb"] {
        let err = new_client_error(&[], None, &[(name, "x")]);
        assert_eq!(err, HandshakeError::InvalidHeaderName(name.into()));
    }
}

#[test]
fn client_refuses_header_values_with_cr_lf_or_nul() {
    for value in ["a\r\nX-Evil: 1", "a\nb", "a\rb", "a\0b"] {
        let err = new_client_error(&[], None, &[("X-A", value)]);
        assert_eq!(err, HandshakeError::InvalidHeaderValue("X-A".into()));
    }
    assert_eq!(
        new_client_error(&[], None, &[("X-A", "a\nb")]).to_string(),
        "invalid value for header 'X-A': it must not contain CR, LF or NUL"
    );
}

#[test]
fn client_refuses_an_invalid_deflate_configuration() {
    let config = DeflateConfig {
        client_max_window_bits: Some(16),
        ..DeflateConfig::default()
    };
    let err = new_client_error(&[], Some(config), &[]);
    assert!(
        matches!(err, HandshakeError::InvalidExtensionConfig(_)),
        "{err:?}"
    );
    assert_eq!(err.status(), 0);
}

#[test]
fn client_refuses_a_host_with_a_line_break() {
    let err = ClientHandshake::new("a\r\nb", "/", &ClientOptions::default()).unwrap_err();
    assert_eq!(err, HandshakeError::InvalidHeaderValue("Host".into()));
}

#[test]
fn client_refuses_invalid_protocols() {
    for protocol in ["", "two words", "a,b", "caf\u{e9}", "x\r\n"] {
        let err = new_client_error(&["ok", protocol], None, &[]);
        assert_eq!(err, HandshakeError::InvalidProtocol(protocol.into()));
    }
}

#[test]
fn client_refuses_a_resource_with_spaces_or_control_characters() {
    for resource in ["/a b", "/a\r\nX: 1", "/\t", "/\x7f"] {
        let err = ClientHandshake::new("h", resource, &ClientOptions::default()).unwrap_err();
        assert_eq!(err, HandshakeError::InvalidResource(resource.into()));
    }
}

// -- client response -------------------------------------------------------------------

#[test]
fn client_accepts_a_response_fed_one_byte_at_a_time() {
    let mut hs = client(&["chat"]);
    let response = switching("Sec-WebSocket-Protocol: chat\r\nServer: test\r\n");
    for (i, byte) in response.iter().enumerate() {
        let done = hs.receive_data(std::slice::from_ref(byte)).unwrap();
        assert_eq!(done, i + 1 == response.len(), "after byte {i}");
        if !done {
            assert_eq!(hs.status(), 0);
            assert_eq!(hs.headers(), []);
        }
    }
    assert_eq!(hs.status(), 101);
    assert_eq!(hs.protocol(), Some("chat"));
    assert_eq!(hs.extensions(), None);
    assert_eq!(hs.take_leftover(), b"");
    assert_eq!(
        hs.headers(),
        pairs(&[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", &accept()),
            ("Sec-WebSocket-Protocol", "chat"),
            ("Server", "test"),
        ])
    );
    // Frames after the head belong to the engine, not to the handshake.
    assert_eq!(hs.receive_data(b"\x81\x00"), Err(HandshakeError::Finished));
}

#[test]
fn client_keeps_bytes_after_the_head_as_leftover() {
    let mut hs = client(&[]);
    let mut response = switching("");
    response.extend_from_slice(b"\x81\x05hello\x88\x00");
    let split = 10;
    assert_eq!(hs.receive_data(&response[..split]), Ok(false));
    assert_eq!(hs.receive_data(&response[split..]), Ok(true));
    assert_eq!(hs.take_leftover(), b"\x81\x05hello\x88\x00");
    assert_eq!(hs.protocol(), None);
}

#[test]
fn client_accepts_a_bare_lf_response() {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: upgrade\n\
         Sec-WebSocket-Accept: {}\n\n",
        accept()
    );
    assert_eq!(client(&[]).receive_data(response.as_bytes()), Ok(true));
}

#[test]
fn client_refuses_data_after_a_failure() {
    let mut hs = client(&[]);
    assert!(hs.receive_data(b"HTTP/1.1 404 Not Found\r\n\r\n").is_err());
    assert_eq!(hs.receive_data(b"more"), Err(HandshakeError::Finished));
}

#[test]
fn client_rejects_status_404_with_status_and_headers() {
    let mut hs = client(&[]);
    let response = b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nX-Why: \xffno\r\n\r\nnot here";
    let err = hs.receive_data(response).unwrap_err();
    let headers = pairs(&[("Content-Length", "9"), ("X-Why", "\u{fffd}no")]);
    assert_eq!(
        err,
        HandshakeError::UnexpectedStatus {
            status: 404,
            reason: "Not Found".into(),
            headers: headers.clone(),
        }
    );
    assert_eq!(err.status(), 404);
    assert_eq!(
        err.to_string(),
        "server answered with status 404, not 101 Switching Protocols"
    );
    assert_eq!(hs.status(), 404);
    assert_eq!(hs.headers(), headers);
    assert_eq!(hs.take_leftover(), b"not here");
}

#[test]
fn client_rejects_status_200() {
    let err = client_error(&[], b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(err.status(), 200);
    assert!(matches!(
        err,
        HandshakeError::UnexpectedStatus { status: 200, .. }
    ));
}

#[test]
fn client_rejects_a_missing_accept() {
    let response =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          \r\n";
    let err = client_error(&[], response);
    assert_eq!(err, HandshakeError::MissingAccept);
    assert_eq!(err.status(), 101);
    assert_eq!(err.to_string(), "missing Sec-WebSocket-Accept header");
}

#[test]
fn client_rejects_a_wrong_accept() {
    let response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    let err = client_error(&[], response);
    assert_eq!(
        err.to_string(),
        format!(
            "Sec-WebSocket-Accept is 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=', expected '{}'",
            accept()
        )
    );
    assert_eq!(err.status(), 101);
}

#[test]
fn client_rejects_a_repeated_accept_even_with_the_right_value_twice() {
    let response = switching(&format!("Sec-WebSocket-Accept: {}\r\n", accept()));
    let err = client_error(&[], &response);
    assert_eq!(
        err,
        HandshakeError::InvalidResponse("more than one Sec-WebSocket-Accept header")
    );
    assert_eq!(err.status(), 101);
    assert_eq!(
        err.to_string(),
        "invalid 101 response: more than one Sec-WebSocket-Accept header"
    );
    let response = switching("Sec-WebSocket-Accept: x\r\n");
    assert_eq!(
        client_error(&[], &response),
        HandshakeError::InvalidResponse("more than one Sec-WebSocket-Accept header")
    );
}

#[test]
fn client_rejects_a_repeated_upgrade_even_with_websocket_twice() {
    for extra in ["Upgrade: websocket\r\n", "upgrade: h2c\r\n"] {
        let err = client_error(&[], &switching(extra));
        assert_eq!(
            err,
            HandshakeError::InvalidResponse("more than one Upgrade header"),
            "{extra}"
        );
        assert_eq!(err.status(), 101);
    }
}

#[test]
fn client_rejects_an_upgrade_that_lists_another_protocol() {
    for value in ["foo/1, websocket", "websocket, websocket", "websocket,h2c"] {
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: {value}\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept()
        );
        let err = client_error(&[], response.as_bytes());
        assert_eq!(err, HandshakeError::InvalidUpgrade(value.into()));
        assert_eq!(
            err.to_string(),
            format!("Upgrade header is '{value}', expected 'websocket'")
        );
    }
}

#[test]
fn client_rejects_a_101_with_transfer_encoding() {
    for extra in [
        "Transfer-Encoding: chunked\r\n",
        "transfer-encoding: identity\r\n",
        "Transfer-Encoding:\r\n",
    ] {
        let err = client_error(&[], &switching(extra));
        assert_eq!(
            err,
            HandshakeError::InvalidResponse(
                "Transfer-Encoding header, but a 101 response has no body"
            ),
            "{extra}"
        );
        assert_eq!(err.status(), 101);
    }
    let err = client_error(
        &[],
        &switching("Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"),
    );
    assert_eq!(
        err.to_string(),
        "invalid 101 response: Content-Length and Transfer-Encoding together"
    );
}

#[test]
fn client_rejects_a_101_with_a_content_length_other_than_a_single_0() {
    for (extra, reason) in [
        (
            "Content-Length: 5\r\n",
            "Content-Length is not 0, but a 101 response has no body",
        ),
        (
            "Content-Length: 0\r\nContent-Length: 0\r\n",
            "more than one Content-Length header",
        ),
        (
            "Content-Length: 0, 0\r\n",
            "Content-Length is not a decimal number",
        ),
        (
            "Content-Length: -0\r\n",
            "Content-Length is not a decimal number",
        ),
    ] {
        let mut response = switching(extra);
        response.extend_from_slice(b"\x81\x05hello");
        let err = client_error(&[], &response);
        assert_eq!(err, HandshakeError::InvalidResponse(reason), "{extra}");
    }
    // A single Content-Length: 0 frames no body: some servers send it with their 101.
    let mut hs = client(&[]);
    let mut response = switching("Content-Length: 0\r\n");
    response.extend_from_slice(b"\x81\x00");
    assert_eq!(hs.receive_data(&response), Ok(true));
    assert_eq!(hs.take_leftover(), b"\x81\x00");
}

#[test]
fn client_rejects_a_missing_upgrade() {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept()
    );
    let err = client_error(&[], response.as_bytes());
    assert_eq!(err, HandshakeError::MissingUpgrade);
    assert_eq!(err.to_string(), "missing Upgrade: websocket header");
}

#[test]
fn client_rejects_an_upgrade_without_the_websocket_token() {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept()
    );
    let err = client_error(&[], response.as_bytes());
    assert_eq!(err, HandshakeError::InvalidUpgrade("h2c".into()));
    assert_eq!(
        err.to_string(),
        "Upgrade header is 'h2c', expected 'websocket'"
    );
}

#[test]
fn client_rejects_a_missing_connection() {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        accept()
    );
    assert_eq!(
        client_error(&[], response.as_bytes()),
        HandshakeError::MissingConnection
    );
}

#[test]
fn client_rejects_a_connection_without_the_upgrade_token() {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive\r\n\
         Connection: upgrades\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept()
    );
    let err = client_error(&[], response.as_bytes());
    assert_eq!(
        err,
        HandshakeError::InvalidConnection("keep-alive, upgrades".into())
    );
}

#[test]
fn client_accepts_multi_valued_mixed_case_connection_and_a_mixed_case_upgrade() {
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n\
         Connection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept()
    );
    assert_eq!(client(&[]).receive_data(response.as_bytes()), Ok(true));
}

#[test]
fn client_accepts_an_offered_protocol() {
    let mut hs = client(&["a", "b"]);
    assert_eq!(
        hs.receive_data(&switching("Sec-WebSocket-Protocol: b\r\n")),
        Ok(true)
    );
    assert_eq!(hs.protocol(), Some("b"));
}

#[test]
fn client_rejects_an_unoffered_protocol() {
    let err = client_error(&["a", "b"], &switching("Sec-WebSocket-Protocol: p\r\n"));
    assert_eq!(err, HandshakeError::UnofferedProtocol("p".into()));
    assert_eq!(
        err.to_string(),
        "server selected subprotocol 'p', which the client did not offer"
    );
}

#[test]
fn client_rejects_a_protocol_when_none_was_offered() {
    let err = client_error(&[], &switching("Sec-WebSocket-Protocol: chat\r\n"));
    assert_eq!(err, HandshakeError::UnofferedProtocol("chat".into()));
}

#[test]
fn client_rejects_a_protocol_in_another_case() {
    let err = client_error(&["chat"], &switching("Sec-WebSocket-Protocol: Chat\r\n"));
    assert_eq!(err, HandshakeError::UnofferedProtocol("Chat".into()));
}

#[test]
fn client_rejects_two_protocols_on_one_line() {
    let err = client_error(&["a", "b"], &switching("Sec-WebSocket-Protocol: a, b\r\n"));
    assert_eq!(err, HandshakeError::MultipleProtocols("a, b".into()));
    assert_eq!(
        err.to_string(),
        "server selected more than one subprotocol: 'a, b'"
    );
}

#[test]
fn client_rejects_two_protocols_on_two_lines() {
    let response = switching("Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol: a\r\n");
    let err = client_error(&["a"], &response);
    assert_eq!(err, HandshakeError::MultipleProtocols("a, a".into()));
}

fn deflate_client() -> ClientHandshake {
    let options = options(&[], Some(DeflateConfig::default()), &[]);
    ClientHandshake::with_seed("example.com", "/", &options, 1).unwrap()
}

#[test]
fn client_agrees_on_the_deflate_parameters_of_the_answer() {
    let mut hs = deflate_client();
    let response = switching(
        "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; \
         client_max_window_bits=12\r\nX-Other: 1\r\n",
    );
    assert_eq!(hs.receive_data(&response), Ok(true));
    assert_eq!(
        hs.extensions(),
        Some("permessage-deflate; server_no_context_takeover; client_max_window_bits=12")
    );
    let params = hs.deflate().expect("compression agreed");
    assert!(params.server_no_context_takeover);
    assert_eq!(params.client_max_window_bits, 12);
}

#[test]
fn client_without_compression_when_the_server_declines_the_offer() {
    let mut hs = deflate_client();
    assert_eq!(hs.receive_data(&switching("")), Ok(true));
    assert_eq!((hs.extensions(), hs.deflate()), (None, None));
}

#[test]
fn client_rejects_extensions_it_did_not_offer() {
    // This check lived only in the Python binding: a Rust client accepted any extension.
    let mut hs = client(&[]);
    let response = switching("Sec-WebSocket-Extensions: permessage-deflate\r\n");
    let err = hs.receive_data(&response).unwrap_err();
    assert_eq!(
        err,
        HandshakeError::UnofferedExtension("permessage-deflate".into())
    );
    assert_eq!(err.status(), 101);
}

#[test]
fn client_rejects_an_answer_that_does_not_fit_its_deflate_offer() {
    for answer in [
        "x-foo",
        "permessage-deflate, x-foo",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; bogus",
        "permessage-deflate, permessage-deflate",
    ] {
        let mut hs = deflate_client();
        let response = switching(&format!("Sec-WebSocket-Extensions: {answer}\r\n"));
        let err = hs.receive_data(&response).unwrap_err();
        assert!(
            matches!(err, HandshakeError::InvalidExtension(_)),
            "{answer}: {err:?}"
        );
        assert_eq!(err.status(), 101);
        assert_eq!(hs.deflate(), None);
    }
}

#[test]
fn client_rejects_a_malformed_response() {
    let err = client_error(&[], b"HTTP/1.1 1O1 Switching\r\n\r\n");
    assert!(
        matches!(err, HandshakeError::MalformedResponse(_)),
        "{err:?}"
    );
    assert_eq!(err.status(), 0);
    assert_eq!(
        err.to_string(),
        "malformed HTTP response: invalid response status"
    );
}

#[test]
fn client_rejects_garbage_at_the_first_line_feed() {
    let mut hs = client(&[]);
    assert_eq!(hs.receive_data(b"SSH-2.0-OpenSSH"), Ok(false));
    let err = hs.receive_data(b"\r\n").unwrap_err();
    assert!(
        matches!(err, HandshakeError::MalformedResponse(_)),
        "{err:?}"
    );
}

#[test]
fn client_accepts_a_head_of_exactly_the_size_limit() {
    let response = switching("");
    let limits = Limits {
        max_header_size: response.len(),
        ..Limits::default()
    };
    let mut hs = client_with(&[], limits);
    let mut with_frame = response.clone();
    with_frame.extend_from_slice(b"\x81\x00");
    assert_eq!(hs.receive_data(&with_frame), Ok(true));
    assert_eq!(hs.take_leftover(), b"\x81\x00");
}

#[test]
fn client_rejects_a_head_one_byte_over_the_size_limit() {
    let response = switching("");
    let limits = Limits {
        max_header_size: response.len() - 1,
        ..Limits::default()
    };
    let err = client_with(&[], limits)
        .receive_data(&response)
        .unwrap_err();
    assert_eq!(
        err,
        HandshakeError::ResponseTooLarge {
            limit: response.len() - 1
        }
    );
    assert_eq!(err.status(), 0);
}

#[test]
fn client_rejects_an_endless_header_line_fed_in_pieces() {
    let mut hs = client(&[]);
    assert_eq!(
        hs.receive_data(b"HTTP/1.1 101 Switching Protocols\r\nX: "),
        Ok(false)
    );
    let chunk = [b'a'; 1000];
    let mut result = Ok(false);
    for _ in 0..17 {
        result = hs.receive_data(&chunk);
        if result.is_err() {
            break;
        }
    }
    let err = result.unwrap_err();
    assert_eq!(err, HandshakeError::ResponseTooLarge { limit: 16384 });
    assert_eq!(err.to_string(), "HTTP response head exceeds 16384 bytes");
}

#[test]
fn client_accepts_exactly_max_headers() {
    let limits = Limits {
        max_headers: 4,
        ..Limits::default()
    };
    let response = switching("X-Four: 4\r\n");
    assert_eq!(client_with(&[], limits).receive_data(&response), Ok(true));
}

#[test]
fn client_rejects_more_than_max_headers() {
    let limits = Limits {
        max_headers: 3,
        ..Limits::default()
    };
    let response = switching("X-Four: 4\r\n");
    let err = client_with(&[], limits)
        .receive_data(&response)
        .unwrap_err();
    assert_eq!(err, HandshakeError::TooManyResponseHeaders { limit: 3 });
    assert_eq!(err.to_string(), "HTTP response has more than 3 headers");
}

#[test]
fn client_rejects_too_many_headers_before_the_head_ends() {
    let limits = Limits {
        max_headers: 2,
        ..Limits::default()
    };
    let mut hs = client_with(&[], limits);
    let err = hs
        .receive_data(b"HTTP/1.1 101 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n")
        .unwrap_err();
    assert_eq!(err, HandshakeError::TooManyResponseHeaders { limit: 2 });
}

// -- server ----------------------------------------------------------------------------

const KEY: &str = "x3JJHMbDL1EzLkh9GBhXDw==";

/// A valid upgrade request with `extra` header lines.
fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
         {extra}\r\n"
    )
}

fn parse(request: &str) -> Request {
    ServerHandshake::new(Limits::default())
        .receive_data(request.as_bytes())
        .unwrap()
        .expect("a complete request")
}

/// `upgrade_request` with header `name` removed or its value replaced.
fn edited(name: &str, value: Option<&str>) -> String {
    let prefix = format!("{name}: ");
    upgrade_request("")
        .split_inclusive("\r\n")
        .filter_map(|line| match (line.starts_with(&prefix), value) {
            (false, _) => Some(line.to_owned()),
            (true, None) => None,
            (true, Some(v)) => Some(format!("{prefix}{v}\r\n")),
        })
        .collect()
}

fn origins() -> Vec<String> {
    strings(&["pub.dartlang.org", "GoOgLe.CoM"])
}

fn check(request: &str) -> Result<(), Rejection> {
    parse(request).check(Some(&origins()))
}

fn rejection(status: u16, message: &str) -> Result<(), Rejection> {
    Err(Rejection {
        status,
        message: message.into(),
        headers: Vec::new(),
    })
}

#[test]
fn server_parses_a_valid_upgrade_request() {
    let request = parse(&upgrade_request("Sec-WebSocket-Protocol: chat\r\n"));
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/chat");
    assert_eq!(request.version, 1);
    assert_eq!(request.header("sec-websocket-key"), Some(KEY));
    assert_eq!(request.key(), Some(KEY));
    assert_eq!(request.header("Origin"), None);
    assert_eq!(request.headers.len(), 6);
    assert_eq!(request.check(None), Ok(()));
}

#[test]
fn server_accepts_an_allowed_origin() {
    assert_eq!(
        check(&upgrade_request("Origin: pub.dartlang.org\r\n")),
        Ok(())
    );
}

#[test]
fn server_rejects_an_origin_not_in_the_list_with_403() {
    assert_eq!(
        check(&upgrade_request("Origin: dartlang.org\r\n")),
        rejection(403, "invalid origin \"dartlang.org\".")
    );
}

#[test]
fn server_accepts_a_request_without_origin() {
    assert_eq!(check(&upgrade_request("")), Ok(()));
}

#[test]
fn server_accepts_a_mixed_case_origin() {
    assert_eq!(check(&upgrade_request("Origin: gOoGle.com\r\n")), Ok(()));
}

#[test]
fn server_accepts_any_origin_without_a_list() {
    let request = parse(&upgrade_request("Origin: https://evil.example\r\n"));
    assert_eq!(request.check(None), Ok(()));
}

#[test]
fn server_accepts_connection_with_another_token() {
    let request = edited("Connection", Some("Other-Token, Upgrade"));
    assert_eq!(check(&request), Ok(()));
}

#[test]
fn server_accepts_repeated_mixed_case_connection_and_upgrade_lines() {
    let request = edited("Connection", Some("keep-alive")).replace(
        "Upgrade: websocket\r\n",
        "Upgrade: WEBSOCKET\r\nConnection: UPGRADE\r\n",
    );
    assert_eq!(check(&request), Ok(()));
}

#[test]
fn server_rejects_delete_with_404() {
    let request = upgrade_request("").replacen("GET", "DELETE", 1);
    assert_eq!(
        check(&request),
        rejection(404, "Only WebSocket connections are supported.")
    );
}

#[test]
fn server_rejects_a_missing_connection_with_404() {
    let request = edited("Connection", None);
    assert_eq!(
        check(&request),
        rejection(404, "Only WebSocket connections are supported.")
    );
}

#[test]
fn server_rejects_connection_without_upgrade_with_404() {
    let request = edited("Connection", Some("keep-alive"));
    assert_eq!(
        check(&request),
        rejection(404, "Only WebSocket connections are supported.")
    );
}

#[test]
fn server_rejects_upgrade_fblthp_with_404() {
    let request = edited("Upgrade", Some("fblthp"));
    assert_eq!(
        check(&request),
        rejection(404, "Only WebSocket connections are supported.")
    );
}

#[test]
fn server_rejects_a_missing_upgrade_with_404() {
    let request = edited("Upgrade", None);
    assert_eq!(
        check(&request),
        rejection(404, "Only WebSocket connections are supported.")
    );
}

#[test]
fn server_rejects_a_missing_version_with_400() {
    let request = edited("Sec-WebSocket-Version", None);
    assert_eq!(
        check(&request),
        rejection(400, "missing Sec-WebSocket-Version header.")
    );
}

#[test]
fn server_answers_426_for_version_15() {
    let request = edited("Sec-WebSocket-Version", Some("15"));
    assert_eq!(
        check(&request),
        Err(Rejection {
            status: 426,
            message: "unsupported Sec-WebSocket-Version \"15\".".into(),
            headers: pairs(&[("Sec-WebSocket-Version", "13")]),
        })
    );
}

#[test]
fn server_rejects_a_missing_key_with_400() {
    let request = edited("Sec-WebSocket-Key", None);
    assert_eq!(
        check(&request),
        rejection(400, "missing Sec-WebSocket-Key header.")
    );
}

#[test]
fn server_rejects_keys_that_are_not_16_bytes_of_base64_with_400() {
    for key in [
        "not base64!",
        "AAAAAAAAAAAAAAAAAAAA",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "x",
    ] {
        let request = edited("Sec-WebSocket-Key", Some(key));
        assert_eq!(
            check(&request),
            rejection(400, "invalid Sec-WebSocket-Key header."),
            "{key}"
        );
    }
}

#[test]
fn server_rejects_http_1_0_with_400() {
    let request = upgrade_request("").replacen("HTTP/1.1", "HTTP/1.0", 1);
    assert_eq!(
        check(&request),
        rejection(400, "unexpected HTTP version \"1.0\".")
    );
}

#[test]
fn server_rejects_a_missing_host_with_400() {
    let request = edited("Host", None);
    assert_eq!(check(&request), rejection(400, "missing Host header."));
}

#[test]
fn server_checks_the_method_before_the_version() {
    let request = edited("Sec-WebSocket-Version", None).replacen("GET", "POST", 1);
    assert_eq!(
        check(&request),
        rejection(404, "Only WebSocket connections are supported.")
    );
}

#[test]
fn server_checks_the_websocket_version_before_the_http_version() {
    let request = edited("Sec-WebSocket-Version", Some("8")).replacen("HTTP/1.1", "HTTP/1.0", 1);
    assert_eq!(check(&request).unwrap_err().status, 426);
}

#[test]
fn server_chooses_the_first_client_protocol_it_supports() {
    let request = parse(&upgrade_request(
        "Sec-WebSocket-Protocol: one, two, three\r\n",
    ));
    assert_eq!(
        request.offered_protocols(),
        strings(&["one", "two", "three"])
    );
    assert_eq!(
        request.choose_protocol(&strings(&["three", "two", "x"])),
        Some("two".into())
    );
}

#[test]
fn server_chooses_no_protocol_when_none_is_shared() {
    let request = parse(&upgrade_request("Sec-WebSocket-Protocol: one\r\n"));
    assert_eq!(request.choose_protocol(&strings(&["two"])), None);
    let request = parse(&upgrade_request(""));
    assert_eq!(request.choose_protocol(&strings(&["two"])), None);
}

#[test]
fn server_reads_tokens_and_extensions_across_repeated_lines() {
    let request = parse(&upgrade_request(
        "Sec-WebSocket-Protocol: one,, Two\r\nsec-websocket-protocol: three\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
         Sec-WebSocket-Extensions: x-foo\r\n",
    ));
    assert_eq!(
        request.tokens("SEC-WEBSOCKET-PROTOCOL"),
        strings(&["one", "Two", "three"])
    );
    assert_eq!(
        request
            .header_values("Sec-WebSocket-Protocol")
            .collect::<Vec<_>>(),
        ["one,, Two", "three"]
    );
    assert_eq!(
        request.offered_extensions().as_deref(),
        Some("permessage-deflate; client_max_window_bits, x-foo")
    );
    assert_eq!(parse(&upgrade_request("")).offered_extensions(), None);
}

#[test]
fn server_parses_a_request_fed_one_byte_at_a_time() {
    let mut bytes = upgrade_request("Origin: pub.dartlang.org\r\n").into_bytes();
    let head_len = bytes.len();
    bytes.extend_from_slice(b"\x81\x82");
    let mut server = ServerHandshake::new(Limits::default());
    let mut request = None;
    for (i, byte) in bytes[..head_len].iter().enumerate() {
        let result = server.receive_data(std::slice::from_ref(byte)).unwrap();
        assert_eq!(result.is_some(), i + 1 == head_len, "after byte {i}");
        request = result;
    }
    let mut request = request.unwrap();
    assert_eq!(request.check(Some(&origins())), Ok(()));
    assert_eq!(request.take_leftover(), b"");
    assert_eq!(server.receive_data(b"\x81"), Err(HandshakeError::Finished));
}

#[test]
fn server_keeps_bytes_after_the_head_as_leftover() {
    let mut bytes = upgrade_request("").into_bytes();
    bytes.extend_from_slice(b"\x81\x80abcd");
    let mut server = ServerHandshake::new(Limits::default());
    assert_eq!(server.receive_data(&bytes[..5]), Ok(None));
    let mut request = server.receive_data(&bytes[5..]).unwrap().unwrap();
    assert_eq!(request.take_leftover(), b"\x81\x80abcd");
    assert_eq!(request.take_leftover(), b"");
}

#[test]
fn server_answers_431_for_a_head_over_the_size_limit() {
    let bytes = upgrade_request("");
    let limits = Limits {
        max_header_size: bytes.len() - 1,
        ..Limits::default()
    };
    let err = ServerHandshake::new(limits)
        .receive_data(bytes.as_bytes())
        .unwrap_err();
    assert_eq!(
        err,
        HandshakeError::RequestTooLarge {
            limit: bytes.len() - 1
        }
    );
    assert_eq!(err.status(), 431);
    let limits = Limits {
        max_header_size: bytes.len(),
        ..Limits::default()
    };
    assert!(matches!(
        ServerHandshake::new(limits).receive_data(bytes.as_bytes()),
        Ok(Some(_))
    ));
}

#[test]
fn server_answers_431_for_a_head_without_end() {
    let mut server = ServerHandshake::new(Limits::default());
    let chunk = [b'a'; 4096];
    assert_eq!(server.receive_data(b"GET /"), Ok(None));
    for _ in 0..3 {
        assert_eq!(server.receive_data(&chunk), Ok(None));
    }
    let err = server.receive_data(&chunk).unwrap_err();
    assert_eq!(err.status(), 431);
    assert_eq!(err.to_string(), "HTTP request head exceeds 16384 bytes");
    assert_eq!(server.receive_data(b"\r\n"), Err(HandshakeError::Finished));
}

#[test]
fn server_answers_431_for_too_many_headers() {
    let limits = Limits {
        max_headers: 5,
        ..Limits::default()
    };
    let ok = ServerHandshake::new(limits).receive_data(upgrade_request("").as_bytes());
    assert!(matches!(ok, Ok(Some(_))));
    let err = ServerHandshake::new(limits)
        .receive_data(upgrade_request("Origin: x\r\n").as_bytes())
        .unwrap_err();
    assert_eq!(err, HandshakeError::TooManyRequestHeaders { limit: 5 });
    assert_eq!(err.status(), 431);
    assert_eq!(err.to_string(), "HTTP request has more than 5 headers");
}

#[test]
fn server_answers_400_for_a_malformed_request() {
    let err = ServerHandshake::new(Limits::default())
        .receive_data(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
        .unwrap_err();
    assert!(
        matches!(err, HandshakeError::MalformedRequest(_)),
        "{err:?}"
    );
    assert_eq!(err.status(), 400);
    assert_eq!(
        err.to_string(),
        "malformed HTTP request: invalid header name"
    );
}

/// The error `ServerHandshake::receive_data` gives for `request`.
fn parse_error(request: &[u8]) -> HandshakeError {
    ServerHandshake::new(Limits::default())
        .receive_data(request)
        .unwrap_err()
}

#[test]
fn server_answers_400_for_a_second_host_header() {
    for extra in ["Host: evil.example\r\n", "HOST: example.com\r\n"] {
        let err = parse_error(upgrade_request(extra).as_bytes());
        assert_eq!(
            err,
            HandshakeError::InvalidRequest("more than one Host header"),
            "{extra}"
        );
        assert_eq!(err.status(), 400);
        assert_eq!(
            err.to_string(),
            "invalid HTTP request: more than one Host header"
        );
    }
}

#[test]
fn server_answers_400_for_any_transfer_encoding() {
    for extra in [
        "Transfer-Encoding: chunked\r\n",
        "transfer-encoding: identity\r\n",
        "Transfer-Encoding:\r\n",
    ] {
        let mut bytes = upgrade_request(extra).into_bytes();
        bytes.extend_from_slice(b"5\r\n\x81\x80abc\r\n0\r\n\r\n");
        let err = parse_error(&bytes);
        assert_eq!(
            err,
            HandshakeError::InvalidRequest(
                "Transfer-Encoding header, but an upgrade request has no body"
            ),
            "{extra}"
        );
        assert_eq!(err.status(), 400);
    }
}

#[test]
fn server_answers_400_for_content_length_with_transfer_encoding() {
    for extra in [
        "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
    ] {
        let err = parse_error(upgrade_request(extra).as_bytes());
        assert_eq!(
            err,
            HandshakeError::InvalidRequest("Content-Length and Transfer-Encoding together"),
            "{extra}"
        );
        assert_eq!(err.status(), 400);
    }
}

#[test]
fn server_answers_400_for_a_content_length_other_than_a_single_0() {
    for (extra, reason) in [
        (
            "Content-Length: 6\r\n",
            "Content-Length is not 0, but an upgrade request has no body",
        ),
        (
            "content-length: 0001\r\n",
            "Content-Length is not 0, but an upgrade request has no body",
        ),
        (
            "Content-Length: 0\r\nContent-Length: 0\r\n",
            "more than one Content-Length header",
        ),
        (
            "Content-Length: 0\r\nContent-Length: 6\r\n",
            "more than one Content-Length header",
        ),
        (
            "Content-Length: 6, 6\r\n",
            "Content-Length is not a decimal number",
        ),
        (
            "Content-Length: +0\r\n",
            "Content-Length is not a decimal number",
        ),
        (
            "Content-Length: 0x0\r\n",
            "Content-Length is not a decimal number",
        ),
        (
            "Content-Length:\r\n",
            "Content-Length is not a decimal number",
        ),
        (
            "Content-Length: 0\u{a0}\r\n",
            "Content-Length is not a decimal number",
        ),
    ] {
        let mut bytes = upgrade_request(extra).into_bytes();
        bytes.extend_from_slice(b"\x81\x80abcd");
        let err = parse_error(&bytes);
        assert_eq!(err, HandshakeError::InvalidRequest(reason), "{extra}");
        assert_eq!(err.status(), 400);
    }
    // A single Content-Length of 0 frames no body: accepted, frames after it are kept.
    for zero in ["0", "00"] {
        let mut bytes = upgrade_request(&format!("Content-Length: {zero}\r\n")).into_bytes();
        bytes.extend_from_slice(b"\x81\x80abcd");
        let mut request = ServerHandshake::new(Limits::default())
            .receive_data(&bytes)
            .unwrap()
            .unwrap();
        assert_eq!(request.check(None), Ok(()));
        assert_eq!(request.take_leftover(), b"\x81\x80abcd");
    }
}

#[test]
fn server_answers_400_for_a_line_ending_in_lf_without_cr() {
    let bare = [
        upgrade_request("").replace("\r\n", "\n"),
        upgrade_request("X-A: 1\nTransfer-Encoding: chunked\r\n"),
        upgrade_request("").replacen("\r\n\r\n", "\r\n\n", 1),
        format!("\n{}", upgrade_request("")),
    ];
    for request in bare {
        let err = parse_error(request.as_bytes());
        assert_eq!(
            err,
            HandshakeError::MalformedRequest("invalid new line: LF without CR".into()),
            "{request:?}"
        );
        assert_eq!(err.status(), 400);
    }
    // An empty CRLF line before the request line is still skipped (RFC 9112 §2.2).
    let request = format!("\r\n{}", upgrade_request(""));
    assert!(matches!(
        ServerHandshake::new(Limits::default()).receive_data(request.as_bytes()),
        Ok(Some(_))
    ));
}

/// A pin, not a change: httparse already refuses these (RFC 9112 §5.1, §5.2), and a
/// request smuggled past a lenient reader in front depends on them being refused here.
#[test]
fn server_answers_400_for_space_before_a_colon_obs_fold_and_a_bare_cr() {
    for extra in [
        "Host : evil.example\r\n",
        "Transfer-Encoding\t: chunked\r\n",
        "X-A: 1\r\n Transfer-Encoding: chunked\r\n",
        "X-A: 1\r\n\tchunked\r\n",
        "X-A: 1\rTransfer-Encoding: chunked\r\n",
        "X-A: \x00\r\n",
    ] {
        let err = parse_error(upgrade_request(extra).as_bytes());
        assert!(
            matches!(err, HandshakeError::MalformedRequest(_)),
            "{extra:?}: {err:?}"
        );
        assert_eq!(err.status(), 400);
    }
}

#[test]
fn server_rejects_a_second_sec_websocket_key_with_400() {
    for extra in [
        format!("Sec-WebSocket-Key: {KEY}\r\n"),
        "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n".to_owned(),
    ] {
        assert_eq!(
            check(&upgrade_request(&extra)),
            rejection(400, "more than one Sec-WebSocket-Key header."),
            "{extra}"
        );
    }
}

#[test]
fn server_rejects_a_second_sec_websocket_version_with_400() {
    for extra in [
        "Sec-WebSocket-Version: 13\r\n",
        "Sec-WebSocket-Version: 8\r\n",
    ] {
        assert_eq!(
            check(&upgrade_request(extra)),
            rejection(400, "more than one Sec-WebSocket-Version header."),
            "{extra}"
        );
    }
}

#[test]
fn server_rejects_a_second_origin_with_400_with_or_without_a_list() {
    let request = parse(&upgrade_request(
        "Origin: pub.dartlang.org\r\nOrigin: https://evil.example\r\n",
    ));
    let refused = rejection(400, "more than one Origin header.");
    assert_eq!(request.check(Some(&origins())), refused);
    assert_eq!(request.check(None), refused);
}

#[test]
fn server_answers_400_for_a_non_http_first_line() {
    let err = ServerHandshake::new(Limits::default())
        .receive_data(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n")
        .unwrap_err();
    assert_eq!(err.status(), 400);
}

#[test]
fn server_maps_non_utf8_header_values_lossily() {
    let mut bytes = upgrade_request("X-Bin: ab\r\n").into_bytes();
    let pos = bytes.windows(8).position(|w| w == b"X-Bin: a").unwrap() + 8;
    bytes.insert(pos, 0xff);
    let request = ServerHandshake::new(Limits::default())
        .receive_data(&bytes)
        .unwrap()
        .unwrap();
    assert_eq!(request.header("x-bin"), Some("a\u{fffd}b"));
}

// -- responses -------------------------------------------------------------------------

#[test]
fn server_accept_response_matches_expected_bytes() {
    let response = accept_response("dGhlIHNhbXBsZSBub25jZQ==", None, None, &[]).unwrap();
    assert_eq!(
        String::from_utf8(response).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
}

#[test]
fn server_accept_response_with_protocol_extensions_and_headers_matches_expected_bytes() {
    let response = accept_response(
        "x3JJHMbDL1EzLkh9GBhXDw==",
        Some("chat"),
        Some("permessage-deflate; server_no_context_takeover"),
        &pairs(&[("Server", "wschannel"), ("Set-Cookie", "a=b")]),
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(response).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: HSmrc0sMlYUkAGmm5OPpG2HaGWk=\r\n\
         Sec-WebSocket-Protocol: chat\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\
         Server: wschannel\r\nSet-Cookie: a=b\r\n\r\n"
    );
}

#[test]
fn server_accept_response_is_accepted_by_the_client() {
    let options = options(&["two", "one"], Some(DeflateConfig::default()), &[]);
    let mut hs = ClientHandshake::with_seed("example.com", "/", &options, 1).unwrap();
    let request = parse(std::str::from_utf8(hs.request()).unwrap());
    assert_eq!(request.check(None), Ok(()));
    let protocol = request.choose_protocol(&strings(&["one", "two"]));
    let offered = request.offered_extensions();
    let (params, answer) =
        server_negotiate(&DeflateConfig::default(), offered.as_deref()).expect("agreed");
    let response = accept_response(
        request.key().unwrap(),
        protocol.as_deref(),
        Some(&answer),
        &[],
    )
    .unwrap();
    assert_eq!(hs.receive_data(&response), Ok(true));
    assert_eq!(hs.protocol(), Some("two"));
    assert_eq!(hs.extensions(), Some(answer.as_str()));
    assert_eq!(hs.deflate(), Some(params));
}

#[test]
fn server_accept_response_refuses_bad_input() {
    let err = |protocol, extensions, headers: &[(&str, &str)]| {
        accept_response(KEY, protocol, extensions, &pairs(headers)).unwrap_err()
    };
    assert_eq!(
        err(Some("a b"), None, &[]),
        HandshakeError::InvalidProtocol("a b".into())
    );
    assert_eq!(
        err(None, Some("x\r\n"), &[]),
        HandshakeError::InvalidHeaderValue("Sec-WebSocket-Extensions".into())
    );
    assert_eq!(
        err(None, None, &[("X", "1\r\nY: 2")]),
        HandshakeError::InvalidHeaderValue("X".into())
    );
    assert_eq!(
        err(None, None, &[("sec-websocket-accept", "x")]),
        HandshakeError::ReservedHeader("Sec-WebSocket-Accept".into())
    );
    assert_eq!(
        err(None, None, &[("a:b", "x")]),
        HandshakeError::InvalidHeaderName("a:b".into())
    );
}

#[test]
fn server_reject_response_matches_expected_bytes() {
    let response = reject_response(
        426,
        &pairs(&[("Sec-WebSocket-Version", "13")]),
        b"unsupported Sec-WebSocket-Version \"15\".",
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(response).unwrap(),
        "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n\
         Content-Length: 39\r\nConnection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         unsupported Sec-WebSocket-Version \"15\"."
    );
}

#[test]
fn server_reject_response_keeps_the_callers_content_type() {
    let response =
        reject_response(403, &pairs(&[("content-type", "application/json")]), b"{}").unwrap();
    assert_eq!(
        String::from_utf8(response).unwrap(),
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{}"
    );
}

#[test]
fn server_reject_response_with_an_empty_body_and_unknown_status() {
    let response = reject_response(499, &[], b"").unwrap();
    assert_eq!(
        String::from_utf8(response).unwrap(),
        "HTTP/1.1 499 Unknown\r\nContent-Length: 0\r\nConnection: close\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n"
    );
}

#[test]
fn server_reject_response_names_common_statuses() {
    for (status, reason) in [
        (400, "Bad Request"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (405, "Method Not Allowed"),
        (426, "Upgrade Required"),
        (429, "Too Many Requests"),
        (431, "Request Header Fields Too Large"),
        (500, "Internal Server Error"),
        (503, "Service Unavailable"),
    ] {
        let response = reject_response(status, &[], b"").unwrap();
        let line = format!("HTTP/1.1 {status} {reason}\r\n");
        assert!(response.starts_with(line.as_bytes()), "{status}");
    }
}

#[test]
fn server_reject_response_refuses_bad_input() {
    assert_eq!(
        reject_response(99, &[], b""),
        Err(HandshakeError::InvalidStatus(99))
    );
    assert_eq!(
        reject_response(1000, &[], b""),
        Err(HandshakeError::InvalidStatus(1000))
    );
    assert_eq!(
        reject_response(400, &pairs(&[("Content-Length", "5")]), b""),
        Err(HandshakeError::ReservedHeader("Content-Length".into()))
    );
    assert_eq!(
        reject_response(400, &pairs(&[("connection", "keep-alive")]), b""),
        Err(HandshakeError::ReservedHeader("Connection".into()))
    );
    assert_eq!(
        reject_response(400, &pairs(&[("X", "a\nb")]), b""),
        Err(HandshakeError::InvalidHeaderValue("X".into()))
    );
}

#[test]
fn server_rejection_round_trips_through_the_client() {
    let request = parse(&edited("Sec-WebSocket-Version", Some("15")));
    let rejection = request.check(None).unwrap_err();
    let response = reject_response(
        rejection.status,
        &rejection.headers,
        rejection.message.as_bytes(),
    )
    .unwrap();
    let mut hs = client(&[]);
    let err = hs.receive_data(&response).unwrap_err();
    assert_eq!(err.status(), 426);
    assert_eq!(
        hs.headers()[0],
        ("Sec-WebSocket-Version".to_owned(), "13".to_owned())
    );
    assert_eq!(hs.take_leftover(), rejection.message.as_bytes());
}
