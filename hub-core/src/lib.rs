//! hub-core: the rules of wshub with no network in sight. Registry (user →
//! connections), groups, routing, bounded per-connection queues, the
//! slow-consumer policy, who may do what, the rate limit and stats. The
//! server drives it; its tests drive it alone.
//!
//! Cut after centrifuge: `Node` is the public API and the only door in,
//! `Hub` the local maps, `backplane` the seams between nodes (broker,
//! membership, presence), `queue` the per-connection writer queue, `rules`
//! the permissions and caps.

pub mod backplane;
pub mod disconnect;
mod fanout;
pub mod frame;
pub mod history;
pub mod hub;
pub mod idempotency;
pub mod node;
pub mod publication;
pub mod queue;
pub mod rate_limit;
pub mod rules;
pub mod session;
pub mod stats;

pub use backplane::{
    BoxFuture, Broker, Control, Inbound, Local, Membership, Presence, Topic, Unavailable,
};
pub use disconnect::Disconnect;
pub use frame::{Frame, Tag};
pub use history::{
    Epoch, History, HistoryConfig, Position, Recovery, ResetReason, StreamEntry, StreamName,
    Streams,
};
pub use hub::Hub;
pub use node::{
    now_millis, placement, Admission, Backplane, Connection, Delivery, Node, NodeConfig, NodeError,
    Resumed, UserPresence,
};
pub use publication::{encode_at, Origin, Placed, Publication, Published, Target};
pub use queue::{ConnId, NodeId};
pub use rate_limit::{RateDecision, RateLimiter};
pub use rules::{Refusal, Rules};
pub use session::Session;
pub use stats::{Stats, StatsSnapshot};
