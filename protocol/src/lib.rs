//! The wshub wire contract as Rust types: every frame of PROTOCOL.md §3–4,
//! the error codes and bodies of §5, the API bodies of §6 and the token
//! claims of §1, and the parsers of what a request carries (API routes and
//! bodies, the `/ws` query). Plain serde, nothing async, shared by server
//! and clients.

pub mod api;
pub mod body;
pub mod client_frame;
pub mod connect;
pub mod error;
pub mod ids;
pub mod server_frame;
pub mod stream;
pub mod token;

pub use body::Body;
pub use client_frame::{ClientFrame, FrameError};
pub use error::{ErrorBody, ErrorCode};
pub use ids::{CorrelationId, GroupId, IdError, UserId};
pub use server_frame::{Message, ServerFrame};
pub use stream::{Placement, Positions, StreamPosition};
pub use token::Claims;
