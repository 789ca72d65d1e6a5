//! RFC 6455 §5 framing: frame headers, opcodes, length encodings.

/// Which end of the connection this engine plays (RFC 6455 §5.1: clients mask, servers don't).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}
