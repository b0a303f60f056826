//! The WebSocket side: the upgrade (every refusal happens there), and one
//! connection's life after it: the loop, what each client frame does, and
//! the writer.

pub mod config;
pub mod connection;
pub mod dispatch;
pub mod ended;
pub mod held_upgrade;
pub mod socket;
pub mod upgrade;
pub mod writer;
