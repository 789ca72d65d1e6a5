//! The connection state machine (stub while the engine is written).
pub use crate::frame::Role;
pub struct Connection;
pub enum Event {}
