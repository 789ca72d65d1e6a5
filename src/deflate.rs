//! Placeholder with the agreed API; replaced by the real permessage-deflate module.
#![allow(dead_code, unused_variables)]
use crate::frame::Role;

#[derive(Clone, Debug, Default)]
pub struct DeflateConfig {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: Option<u8>,
    pub client_max_window_bits: Option<u8>,
    pub level: u32,
}
impl DeflateConfig {
    pub fn validate(&self) -> Result<(), NegotiationError> {
        Ok(())
    }
}
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateParams {
    pub server_no_context_takeover: bool,
    pub client_no_context_takeover: bool,
    pub server_max_window_bits: u8,
    pub client_max_window_bits: u8,
}
#[derive(Debug, thiserror::Error)]
pub enum NegotiationError {
    #[error("bad")]
    Bad,
}
#[derive(Debug)]
pub enum DecompressError {
    TooBig,
    Corrupt,
}
pub fn client_offer(cfg: &DeflateConfig) -> String {
    todo!()
}
pub fn client_accept(
    cfg: &DeflateConfig,
    response: Option<&str>,
) -> Result<Option<DeflateParams>, NegotiationError> {
    todo!()
}
pub fn server_negotiate(
    cfg: &DeflateConfig,
    request: Option<&str>,
) -> Option<(DeflateParams, String)> {
    todo!()
}
pub fn parse_params(response: &str) -> Result<DeflateParams, NegotiationError> {
    todo!()
}
pub struct PerMessageDeflate;
impl PerMessageDeflate {
    pub fn new(role: Role, params: DeflateParams, level: u32) -> Self {
        todo!()
    }
    pub fn compress(&mut self, message: &[u8], out: &mut Vec<u8>) {
        todo!()
    }
    pub fn decompress(
        &mut self,
        fragment: &[u8],
        fin: bool,
        max_size: Option<usize>,
        out: &mut Vec<u8>,
    ) -> Result<(), DecompressError> {
        todo!()
    }
}
