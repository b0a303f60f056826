//! The HTTP side of the listener: the router, the server API for backends,
//! the chat page, and the response helpers they share.

pub mod api;
pub mod page;
pub mod response;
pub mod router;

use std::time::Duration;

/// How long a client has to send a request's head, and then its body
/// (PROTOCOL.md §6).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
