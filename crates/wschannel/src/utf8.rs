//! UTF-8 validation of text messages that fails fast (RFC 6455 §8.1).
//!
//! A text message may arrive in pieces; an invalid byte sequence must fail the connection
//! as soon as it arrives, not when the message ends.

/// Validates a growing buffer incrementally, remembering how far it is known to be valid.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    checked: usize,
}

/// The text is not UTF-8 (or ends inside a character when the message is complete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Utf8Validator {
    /// Checks the bytes of `text` added since the last call. `complete` says the message
    /// has ended, so an unfinished character at the end is an error.
    pub fn check(&mut self, text: &[u8], complete: bool) -> Result<(), InvalidUtf8> {
        match simdutf8::compat::from_utf8(&text[self.checked..]) {
            Ok(_) => {
                self.checked = text.len();
                Ok(())
            }
            Err(e) if e.error_len().is_none() && !complete => {
                self.checked += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Starts over for a new message.
    pub fn reset(&mut self) {
        self.checked = 0;
    }
}

/// Validates a complete piece of text, such as a close reason.
pub fn validate(bytes: &[u8]) -> Result<&str, InvalidUtf8> {
    simdutf8::basic::from_utf8(bytes).map_err(|_| InvalidUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(pieces: &[&[u8]]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::default();
        let mut text = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            text.extend_from_slice(piece);
            v.check(&text, i + 1 == pieces.len())?;
        }
        Ok(())
    }

    #[test]
    fn validator_accepts_a_character_split_across_pieces() {
        let snow = "κόσμε".as_bytes();
        for cut in 0..=snow.len() {
            assert_eq!(feed(&[&snow[..cut], &snow[cut..]]), Ok(()), "cut at {cut}");
        }
    }

    #[test]
    fn validator_rejects_an_unfinished_character_at_the_end() {
        assert_eq!(feed(&[b"ab\xce"]), Err(InvalidUtf8));
    }

    #[test]
    fn validator_fails_fast_on_an_invalid_byte_before_the_end() {
        let mut v = Utf8Validator::default();
        assert_eq!(v.check(b"ab\xff", false), Err(InvalidUtf8));
    }

    #[test]
    fn validator_fails_fast_on_a_prefix_that_cannot_be_completed() {
        // U+110000 and above is not Unicode: F4 90 can never start a valid character.
        let mut v = Utf8Validator::default();
        assert_eq!(v.check(b"\xf4\x90", false), Err(InvalidUtf8));
        // A surrogate half (ED A0) is invalid as well.
        let mut v = Utf8Validator::default();
        assert_eq!(v.check(b"\xed\xa0", false), Err(InvalidUtf8));
    }

    #[test]
    fn validate_checks_a_whole_reason() {
        assert_eq!(validate("ok ✓".as_bytes()), Ok("ok ✓"));
        assert_eq!(validate(b"\xc0\xaf"), Err(InvalidUtf8));
    }
}
