//! zlib's C functions from zlib-rs, exported by this shared library (see Cargo.toml).
pub use libz_rs_sys::*;
