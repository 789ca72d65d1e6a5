//! Where masking keys (RFC 6455 §5.3) and handshake nonces (§4.1) come from: a CSPRNG seeded
//! once from the operating system, or from a number for tests. Private, so that no type of
//! the generator's crate is part of the engine's API.

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

/// A connection's source of masking keys.
pub(crate) struct Random(StdRng);

impl Random {
    /// Seeded from the operating system.
    pub(crate) fn from_os() -> Self {
        Random(StdRng::from_os_rng())
    }

    /// The same sequence for the same seed.
    pub(crate) fn seeded(seed: u64) -> Self {
        Random(StdRng::seed_from_u64(seed))
    }

    /// A fresh masking key.
    pub(crate) fn mask_key(&mut self) -> [u8; 4] {
        let mut key = [0; 4];
        self.0.fill_bytes(&mut key);
        key
    }

    fn nonce(&mut self) -> [u8; 16] {
        let mut nonce = [0; 16];
        self.0.fill_bytes(&mut nonce);
        nonce
    }
}

/// A `Sec-WebSocket-Key` nonce from the operating system's random source.
pub(crate) fn os_nonce() -> [u8; 16] {
    Random::from_os().nonce()
}

/// The nonce a generator seeded with `seed` gives first.
pub(crate) fn seeded_nonce(seed: u64) -> [u8; 16] {
    Random::seeded(seed).nonce()
}
