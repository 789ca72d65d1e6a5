//! The server side of the opening handshake on arbitrary bytes: `ServerHandshake`
//! (request head parser, size limits), `Request::check` (what makes an upgrade acceptable),
//! `server_negotiate` (permessage-deflate offers) and the answers built from a request.
//!
//! Input: 4 configuration bytes, a chunk plan (see `Input::plan`), then the request.
//!   0: max_header_size = 64 * (b + 1); 1: max_headers = 1 + b % 64;
//!   2: deflate config flags (`deflate_config`), bit 4 allow only origin https://a.example;
//!   3: deflate window bits
#![no_main]

use wschannel::deflate::{parse_params, server_negotiate};
use wschannel::handshake::{
    accept_response, reject_response, sign_key, HandshakeError, Limits, Request, ServerHandshake,
};
use wschannel::Role;
use libfuzzer_sys::fuzz_target;
use wschannel_fuzz::{
    base64_decode, check_params, deflate_config, header_has_token, header_values, Chunks, Input,
};

/// Feeds the pieces until the handshake gives a result; returns it with the bytes fed.
fn run<'a>(
    limits: Limits,
    pieces: impl Iterator<Item = &'a [u8]>,
) -> (Result<Option<Request>, HandshakeError>, usize) {
    let mut hs = ServerHandshake::new(limits);
    let mut fed = 0;
    let mut result = Ok(None);
    for piece in pieces {
        result = hs.receive_data(piece);
        fed += piece.len();
        match &result {
            Ok(None) => assert!(fed <= limits.max_header_size, "{fed} bytes held"),
            Ok(Some(_)) => break,
            Err(e) => {
                assert!(matches!(e.status(), 400 | 431), "{e:?}");
                break;
            }
        }
    }
    if !matches!(result, Ok(None)) {
        assert_eq!(hs.receive_data(b"\r\n"), Err(HandshakeError::Finished));
    }
    (result, fed)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let limits = input.limits();
    let (flags, bits) = (input.byte(), input.byte());
    let cfg = deflate_config(flags, bits);
    let origins = ["https://A.example".to_owned()];
    let allowed = (flags & 0x10 != 0).then_some(&origins[..]);
    let plan = input.plan();
    let stream = input.rest();

    let (chunked, fed) = run(limits, Chunks::new(stream, plan));
    let (whole, _) = run(limits, std::iter::once(stream));
    let (Ok(Some(mut request)), Ok(Some(mut again))) = (chunked, whole) else {
        return;
    };
    let leftover = request.take_leftover();
    again.take_leftover();
    assert_eq!(request, again, "the result depends on the chunking");
    assert!(stream[..fed].ends_with(&leftover));
    let head = fed - leftover.len();
    assert!(head <= limits.max_header_size && stream[head - 1] == b'\n');
    assert!(request.headers.len() <= limits.max_headers);
    for (name, value) in &request.headers {
        assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':'));
        assert!(!value.contains(['\r', '\n', '\0']), "{value:?}");
    }

    // Extension negotiation, whether or not the request is an acceptable upgrade.
    let offer = request.offered_extensions();
    let negotiated = server_negotiate(&cfg, offer.as_deref());
    if let Some((params, answer)) = &negotiated {
        assert_eq!(parse_params(answer).as_ref(), Ok(params));
        check_params(&cfg, *params, Role::Server);
    }

    match request.check(allowed) {
        Ok(()) => {
            assert_eq!(request.method, "GET");
            assert_eq!(request.version, 1);
            assert!(header_has_token(&request.headers, "Connection", "upgrade"));
            assert!(header_has_token(&request.headers, "Upgrade", "websocket"));
            assert_eq!(
                header_values(&request.headers, "Sec-WebSocket-Version")[0],
                "13"
            );
            let key = request.key().expect("a key");
            assert_eq!(base64_decode(key).map(|k| k.len()), Some(16), "key {key:?}");
            assert!(!header_values(&request.headers, "Host").is_empty());
            if let (Some(allowed), Some(origin)) = (allowed, request.header("Origin")) {
                assert!(allowed.iter().any(|a| a.eq_ignore_ascii_case(origin)));
            }
            let supported = ["chat".to_owned(), "superchat".to_owned()];
            let protocol = request.choose_protocol(&supported);
            if let Some(p) = &protocol {
                assert!(supported.contains(p) && request.offered_protocols().contains(p));
            }
            let answer = negotiated.as_ref().map(|(_, a)| a.as_str());
            let response = accept_response(key, protocol.as_deref(), answer, &[])
                .expect("an answer to an accepted request");
            let accept = format!("\r\nSec-WebSocket-Accept: {}\r\n", sign_key(key.as_bytes()));
            let text = String::from_utf8(response).expect("ASCII");
            assert!(text.starts_with("HTTP/1.1 101 ") && text.contains(&accept));
            assert!(text.ends_with("\r\n\r\n") && text.matches("\r\n\r\n").count() == 1);
        }
        Err(rejection) => {
            assert!(
                matches!(rejection.status, 400 | 403 | 404 | 426),
                "{rejection:?}"
            );
            reject_response(
                rejection.status,
                &rejection.headers,
                rejection.message.as_bytes(),
            )
            .expect("a rejection can be sent");
        }
    }
});
