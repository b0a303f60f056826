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
///
/// A message frame also carries where it sits in its stream (`Tag`), so a
/// connection merging a replay with live delivery can tell which queued
/// frames it has already sent without parsing JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    bytes: Bytes,
    tag: Option<Tag>,
}

/// A frame's stream (by `StreamName::key`) and seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tag {
    pub stream: u64,
    pub seq: u64,
}

impl Frame {
    /// Serialises a frame. The only place hub-core encodes JSON.
    pub fn encode(frame: &ServerFrame) -> Frame {
        Frame {
            bytes: Bytes::from(frame.to_json()),
            tag: None,
        }
    }

    /// Serialises a message frame without copying the message.
    pub fn encode_message(message: &protocol::Message) -> Frame {
        Frame {
            bytes: Bytes::from(ServerFrame::message_json(message)),
            tag: None,
        }
    }

    /// A frame that arrived from another node, as the bytes it encoded
    /// there; `None` when they are not UTF-8 (checked once per message, not
    /// per recipient).
    pub fn from_shared(bytes: Bytes) -> Option<Frame> {
        std::str::from_utf8(&bytes).ok()?;
        Some(Frame { bytes, tag: None })
    }

    /// The same frame, marked as message `seq` of stream `stream`.
    pub fn tagged(mut self, tag: Tag) -> Frame {
        self.tag = Some(tag);
        self
    }

    pub fn tag(&self) -> Option<Tag> {
        self.tag
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The shared bytes (not a copy of them).
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    pub fn as_str(&self) -> &str {
        // Built only from `String`s in `encode`, or checked in `from_shared`.
        std::str::from_utf8(&self.bytes).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}
