//! hub-core: the rules of wshub with no network in sight. Registry (user →
//! connections), groups, routing, bounded per-connection queues, the
//! slow-consumer policy, who may do what, the rate limit and stats. The
//! server drives it; its tests drive it alone.
//!
//! Cut after centrifuge: `Node` is the public API and the only door in,
//! `Hub` the local maps, `Broker` the seam between nodes, `queue` the
//! per-connection writer queue, `rules` the permissions and caps.

pub mod broker;
pub mod disconnect;
pub mod frame;
pub mod hub;
pub mod node;
pub mod publication;
pub mod queue;
pub mod rate_limit;
pub mod rules;
pub mod session;
pub mod stats;

pub use broker::{Broker, MemoryBroker};
pub use disconnect::Disconnect;
pub use frame::Frame;
pub use hub::Hub;
pub use node::{now_millis, Admission, Connection, Delivery, Node, NodeConfig, UserPresence};
pub use publication::{Origin, Publication, Target};
pub use queue::ConnId;
pub use rate_limit::{RateDecision, RateLimiter};
pub use rules::{Refusal, Rules};
pub use session::Session;
pub use stats::{Stats, StatsSnapshot};
