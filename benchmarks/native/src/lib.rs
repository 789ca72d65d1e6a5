//! Shared by the anchor servers and the load generator.

pub mod tls;
