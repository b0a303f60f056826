//! Dev-only helpers shared by the server's and the CLI's integration tests
//! and by `cargo xtask e2e`: the real `wshub-server` binary on a free port
//! with its log captured, connection tokens, a small WebSocket client, a
//! minimal HTTP/1.1 client, and a private real `redis-server` for cluster
//! mode ([`redis`]). Everything talks over real sockets; every wait is on a
//! signal (a log line, a frame, a close, an exit) and [`LIMIT`] only bounds a
//! broken run.
//!
//! Failures panic with what was expected and what came instead: these are
//! test helpers, and a panic is how a test fails.

use std::time::Duration;

mod http;
pub mod redis;
mod server;
mod token;
mod ws;

pub use http::{http, raw_request, request, Response};
pub use redis::{RedisBuilder, RedisServer};
pub use server::{listening_addr, server_bin, silent_connect, Server, ServerBuilder};
pub use token::{now, sign, token};
pub use ws::{refused, Client, Ws};

/// The secret `Server::start` gives the server and `token` signs with.
pub const SECRET: &str = "test-secret-which-is-long-enough";
/// The API key `Server::start` gives the server and `Server::api` sends.
pub const API_KEY: &str = "test-api-key";
/// Bound on any single wait; a healthy run never gets near it.
/// Receive buffer of `Server::silent_client`.
pub const SILENT_RCVBUF: u32 = 4 * 1024;

pub const LIMIT: Duration = Duration::from_secs(20);

/// A frame without the stream placement of §10 (`stream`, `epoch`,
/// `seq`): for tests about something else that compare whole frames.
pub fn unplaced(frame: &serde_json::Value) -> serde_json::Value {
    let mut f = frame.clone();
    if let Some(o) = f.as_object_mut() {
        for k in ["stream", "epoch", "seq"] {
            o.remove(k);
        }
    }
    f
}
