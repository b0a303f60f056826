//! The HTTP side of the listener: the router, the server API for backends,
//! the chat page, and the response helpers they share.

pub mod api;
pub mod page;
pub mod response;
pub mod router;
