//! An encoded server frame, shared by every queue it is pushed to.
//!
//! A message is serialised once, where it is routed (`Node::send`,
//! `Node::publish`, `Node::push`), and each recipient's
//! queue gets a clone of the same `Bytes`: a reference-count increment, not a
//! copy. The server hands those bytes to the socket writer unchanged.

use bytes::Bytes;
use protocol::ServerFrame;

/// UTF-8 JSON text of one server frame.
///
/// A clone is one reference-count increment on the shared bytes, and
/// `into_bytes` hands that same reference on: a delivery costs one
/// increment and one decrement of the count, nothing more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame(Bytes);

impl Frame {
    /// Serialises a frame. The only place hub-core encodes JSON.
    pub fn encode(frame: &ServerFrame) -> Frame {
        Frame(Bytes::from(frame.to_json()))
    }

    /// A frame that arrived from another node, as the bytes it encoded
    /// there; `None` when they are not UTF-8 (checked once per message, not
    /// per recipient).
    pub fn from_shared(bytes: Bytes) -> Option<Frame> {
        std::str::from_utf8(&bytes).ok()?;
        Some(Frame(bytes))
    }

    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// The shared bytes (not a copy of them).
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn as_str(&self) -> &str {
        // Built only from `String`s in `encode`.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
