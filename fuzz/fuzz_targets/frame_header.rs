//! `Header::parse` on arbitrary bytes: it agrees with the model's own header parser, takes
//! exactly `header_len` bytes, and a parsed header encodes and parses back to itself.
//! Then `OutFrame` (with masking from the input) writes frames that parse back to their
//! payload, whichever of its writers is used.
#![no_main]

use wschannel::frame::{header_len, Header, OpCode, OutFrame, MAX_HEADER_LEN};
use libfuzzer_sys::fuzz_target;
use wschannel_fuzz::model::{parse_frame, parse_header};

fuzz_target!(|data: &[u8]| {
    let parsed = Header::parse(data);
    let reference = parse_header(data);
    match (parsed, reference) {
        (None, None) => {
            if data.len() >= 2 {
                assert!(data.len() < header_len([data[0], data[1]]));
            }
        }
        (Some((h, used)), Some(r)) => {
            assert_eq!(used, header_len([data[0], data[1]]));
            assert_eq!(used, r.size);
            let same = (h.fin, h.rsv1, h.rsv2, h.rsv3, h.opcode, h.mask, h.len)
                == (r.fin, r.rsv1, r.rsv2, r.rsv3, r.opcode, r.key, r.len);
            assert!(same, "Header::parse {h:?}, reference {r:?}");

            let mut out = [0u8; MAX_HEADER_LEN];
            let n = h.encode(&mut out);
            assert!(n <= used, "the encoding is the shortest one");
            assert_eq!(n, header_len([out[0], out[1]]));
            assert_eq!(Header::parse(&out[..n]), Some((h, n)));
            // Only the length may be written differently (a longer form than needed).
            assert_eq!(out[0], data[0]);
            assert_eq!(out[1] & 0x80, data[1] & 0x80);
        }
        (p, r) => panic!("Header::parse {p:?}, reference {r:?}"),
    }

    // An outgoing frame: opcode and key from the first bytes, the rest as payload.
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let opcodes = [
        OpCode::Text,
        OpCode::Binary,
        OpCode::Ping,
        OpCode::Pong,
        OpCode::Close,
    ];
    let opcode = opcodes[usize::from(pick & 7) % opcodes.len()];
    let (key, payload) = if pick & 0x80 != 0 && rest.len() >= 4 {
        (Some([rest[0], rest[1], rest[2], rest[3]]), &rest[4..])
    } else {
        (None, rest)
    };
    let frame = OutFrame::new(opcode, pick & 0x40 != 0, payload, key);
    let wire = frame.to_vec();
    assert_eq!(wire.len(), frame.len());
    let (h, body, used) = parse_frame(&wire).expect("a whole frame");
    assert_eq!(used, wire.len());
    assert_eq!(
        (h.fin, h.rsv1, h.opcode, h.key),
        (true, pick & 0x40 != 0, opcode as u8, key)
    );
    assert_eq!(body, payload);
    let mut written = vec![0xa5; frame.len()];
    frame.write_to(&mut written);
    assert_eq!(written, wire);
    let mut appended = vec![7u8];
    frame.append_to(&mut appended);
    assert_eq!(&appended[1..], &wire[..]);
    if let Some((head, body)) = frame.unmasked_parts() {
        assert!(key.is_none());
        assert_eq!([head, body].concat(), wire);
    }
});
