//! The WebSocket side: the upgrade (every refusal happens there), and one
//! connection's life after it.

pub mod connection;
pub mod upgrade;
