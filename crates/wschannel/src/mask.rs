//! Payload masking (RFC 6455 §5.3): XOR with a 4-byte key, word at a time.

use std::mem::MaybeUninit;

/// XORs `data` in place with `mask`, starting `offset` bytes into the key's cycle.
///
/// Masking is its own inverse, so this both masks and unmasks. The bulk runs eight bytes
/// at a time on a rotated 64-bit key (the compiler vectorises the loop); the ends go
/// byte by byte.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let key = rotate(mask, offset);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().expect("chunk of 8")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i & 3];
    }
}

/// Writes `src` XORed with `mask` (from `offset` into the key's cycle) to `dst`, which must
/// be as long: one pass over the bytes, where a copy and then [`apply_mask`] take two.
pub(crate) fn copy_masked(dst: &mut [MaybeUninit<u8>], src: &[u8], mask: [u8; 4], offset: usize) {
    assert_eq!(dst.len(), src.len(), "copy_masked needs equal lengths");
    let key = rotate(mask, offset);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut out = dst.chunks_exact_mut(8);
    let mut input = src.chunks_exact(8);
    for (o, i) in (&mut out).zip(&mut input) {
        let word = u64::from_ne_bytes(i.try_into().expect("chunk of 8")) ^ wide;
        for (slot, byte) in o.iter_mut().zip(word.to_ne_bytes()) {
            slot.write(byte);
        }
    }
    let tail = input.remainder();
    for (i, slot) in out.into_remainder().iter_mut().enumerate() {
        slot.write(tail[i] ^ key[i & 3]);
    }
}

/// Appends `src` to `dst`, XORed with `mask` from `offset` into the key's cycle.
pub fn extend_masked(dst: &mut Vec<u8>, src: &[u8], mask: [u8; 4], offset: usize) {
    dst.reserve(src.len());
    let start = dst.len();
    copy_masked(
        &mut dst.spare_capacity_mut()[..src.len()],
        src,
        mask,
        offset,
    );
    // SAFETY: copy_masked initialised the `src.len()` bytes after the old length.
    unsafe { dst.set_len(start + src.len()) };
}

/// The reference implementation: one byte at a time.
#[cfg(test)]
fn apply_mask_bytewise(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= mask[(offset + i) & 3];
    }
}

fn rotate(mask: [u8; 4], offset: usize) -> [u8; 4] {
    let mut key = mask;
    key.rotate_left(offset & 3);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_matches_rfc_example() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn fast_mask_equals_bytewise_at_every_alignment_and_offset() {
        let source: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        let mask = [0x12, 0x34, 0x56, 0x78];
        for start in 0..16 {
            for len in [0, 1, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 200] {
                for offset in 0..4 {
                    let mut fast = source.clone();
                    let mut slow = source.clone();
                    apply_mask(&mut fast[start..start + len], mask, offset);
                    apply_mask_bytewise(&mut slow[start..start + len], mask, offset);
                    assert_eq!(fast, slow, "start {start} len {len} offset {offset}");
                }
            }
        }
    }

    #[test]
    fn mask_twice_restores_the_payload() {
        let original: Vec<u8> = (0..=255).collect();
        let mut data = original.clone();
        apply_mask(&mut data, [1, 2, 3, 4], 2);
        assert_ne!(data, original);
        apply_mask(&mut data, [1, 2, 3, 4], 2);
        assert_eq!(data, original);
    }

    #[test]
    fn extend_masked_appends_masked_bytes() {
        let mut dst = b"ab".to_vec();
        extend_masked(&mut dst, &[0, 0, 0, 0, 0], [1, 2, 3, 4], 1);
        assert_eq!(dst, [b'a', b'b', 2, 3, 4, 1, 2]);
    }

    #[test]
    fn copy_masked_equals_copy_then_mask_at_every_length_and_offset() {
        let source: Vec<u8> = (0..300u32).map(|i| (i * 13 + 5) as u8).collect();
        let mask = [0x9a, 0x01, 0xfe, 0x42];
        for len in [0, 1, 3, 7, 8, 9, 15, 16, 17, 64, 65, 299] {
            for offset in 0..8 {
                let mut expected = source[..len].to_vec();
                apply_mask_bytewise(&mut expected, mask, offset);
                let mut out = Vec::new();
                extend_masked(&mut out, &source[..len], mask, offset);
                assert_eq!(out, expected, "len {len}, offset {offset}");
            }
        }
    }
}
