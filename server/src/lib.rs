//! The parts of the server that read untrusted bytes and need the server's
//! own dependencies (jsonwebtoken, hyper's header types), as a library so
//! the fuzz targets (`xtask/fuzz`) can call them. The binary (`main.rs`)
//! uses these same modules; everything else stays inside it.

pub mod auth;
pub mod handshake;
