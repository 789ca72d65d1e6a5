//! The client side of the opening handshake on arbitrary bytes: `ClientHandshake` reading
//! and validating the server's answer (head parser, size limits, RFC 6455 §4.1 checks, the
//! extensions against the offer), and `client_accept` / `parse_params` on the extensions
//! it carries.
//!
//! The key comes from a fixed seed. The seeds carry the Sec-WebSocket-Accept of the key
//! AAAAAAAAAAAAAAAAAAAAAA== (written when the nonce was 16 zero bytes); the target puts the
//! accept of the seeded key in its place, so a seed still reaches the checks after it.
//!
//! Input: 4 configuration bytes, a chunk plan (see `Input::plan`), then the response.
//!   0: max_header_size = 64 * (b + 1); 1: max_headers = 1 + b % 64;
//!   2: deflate config flags (`deflate_config`), bit 4 offer permessage-deflate, bit 5 offer
//!      the subprotocols chat and superchat; 3: deflate window bits
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschannel::deflate::{client_accept, parse_params, DeflateConfig};
use wschannel::handshake::{sign_key, ClientHandshake, ClientOptions, HandshakeError, Limits};
use wschannel::Role;
use wschannel_fuzz::{check_params, deflate_config, header_has_token, header_values, Chunks, Input};

/// base64(SHA-1("AAAAAAAAAAAAAAAAAAAAAA==" + RFC 6455 GUID)), as the seeds carry it.
const SEED_ACCEPT: &[u8] = b"ICX+Yqv66kxgM0FcWaLWlFLwTAI=";

fn client(limits: Limits, protocols: &[String], deflate: Option<DeflateConfig>) -> ClientHandshake {
    let options = ClientOptions {
        protocols: protocols.to_vec(),
        headers: Vec::new(),
        deflate,
        limits,
    };
    ClientHandshake::with_seed("a.example", "/chat?x=1", &options, 0).expect("valid arguments")
}

/// `stream` with every copy of the seeds' accept value replaced by `accept` (as long).
fn with_accept(stream: &[u8], accept: &str) -> Vec<u8> {
    let mut out = stream.to_vec();
    let mut at = 0;
    while let Some(i) = out[at..]
        .windows(SEED_ACCEPT.len())
        .position(|w| w == SEED_ACCEPT)
    {
        out[at + i..at + i + SEED_ACCEPT.len()].copy_from_slice(accept.as_bytes());
        at += i + SEED_ACCEPT.len();
    }
    out
}

/// Feeds the pieces until the handshake gives a result; returns it with the bytes fed.
fn run<'a>(
    hs: &mut ClientHandshake,
    limits: Limits,
    pieces: impl Iterator<Item = &'a [u8]>,
) -> (Result<bool, HandshakeError>, usize) {
    let mut fed = 0;
    let mut result = Ok(false);
    for piece in pieces {
        result = hs.receive_data(piece);
        fed += piece.len();
        match &result {
            Ok(false) => assert!(fed <= limits.max_header_size, "{fed} bytes held"),
            Ok(true) => break,
            Err(HandshakeError::UnexpectedStatus { status, .. }) => {
                assert_ne!(*status, 101);
                break;
            }
            Err(_) => break,
        }
    }
    if !matches!(result, Ok(false)) {
        assert_eq!(hs.receive_data(b"\r\n"), Err(HandshakeError::Finished));
    }
    (result, fed)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let limits = input.limits();
    let (flags, bits) = (input.byte(), input.byte());
    let cfg = deflate_config(flags, bits);
    let offer = (flags & 0x10 != 0).then(|| cfg.clone());
    let protocols = if flags & 0x20 != 0 {
        vec!["chat".to_owned(), "superchat".to_owned()]
    } else {
        Vec::new()
    };
    let plan = input.plan();
    let mut hs = client(limits, &protocols, offer.clone());
    let accept = sign_key(hs.key().as_bytes());
    let stream = &with_accept(input.rest(), &accept)[..];

    let (result, fed) = run(&mut hs, limits, Chunks::new(stream, plan));
    let mut again = client(limits, &protocols, offer.clone());
    let (whole, _) = run(&mut again, limits, std::iter::once(stream));
    assert_eq!(
        result == Ok(true),
        whole == Ok(true),
        "{result:?} vs {whole:?}"
    );

    if hs.status() != 0 {
        // Whatever the status, the extension header goes through the negotiation parsers.
        let values = header_values(hs.headers(), "Sec-WebSocket-Extensions");
        let joined = (!values.is_empty()).then(|| values.join(", "));
        let agreed = client_accept(&cfg, joined.as_deref());
        if let Ok(Some(params)) = agreed {
            check_params(&cfg, params, Role::Client);
            assert!(parse_params(joined.as_deref().unwrap_or("")).is_ok());
        }
        if result == Ok(true) {
            // The handshake agreed with the offer exactly as client_accept does.
            match &offer {
                Some(_) => assert_eq!(Ok(hs.deflate()), agreed),
                None => assert_eq!((joined, hs.deflate()), (None, None)),
            }
        }
        let leftover = hs.take_leftover();
        assert!(stream[..fed].ends_with(&leftover));
    }
    if result != Ok(true) {
        return;
    }
    assert_eq!(
        (hs.status(), hs.headers()),
        (again.status(), again.headers())
    );
    assert_eq!(hs.status(), 101);
    let headers = hs.headers();
    assert!(headers.len() <= limits.max_headers);
    assert!(header_has_token(headers, "Upgrade", "websocket"));
    assert!(header_has_token(headers, "Connection", "upgrade"));
    assert_eq!(header_values(headers, "Sec-WebSocket-Accept"), [accept.as_str()]);
    let selected: Vec<&str> = header_values(headers, "Sec-WebSocket-Protocol")
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    match hs.protocol() {
        None => assert!(selected.is_empty()),
        Some(p) => {
            assert_eq!(selected, [p]);
            assert!(protocols.iter().any(|o| o == p));
        }
    }
});
