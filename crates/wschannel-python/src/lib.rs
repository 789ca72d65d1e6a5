//! The Python binding of the `wschannel` engine: the `wschannel._wschannel` module.

use wschannel_engine::{deflate, engine, frame, handshake, session};

mod python;
