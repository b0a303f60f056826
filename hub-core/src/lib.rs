//! hub-core: the rules of wshub with no network in sight. Registry (user →
//! connections), groups, routing, bounded per-connection queues, the
//! slow-consumer policy, the rate limit and stats. The server drives it; its
//! tests drive it alone.
//!
//! Cut after centrifuge: `Node` is the public API, `Hub` the local maps,
//! `Broker` the seam between nodes, `queue` the per-connection writer queue.

pub mod broker;
pub mod disconnect;
pub mod frame;
pub mod hub;
pub mod node;
pub mod queue;
pub mod rate_limit;
pub mod stats;

pub use broker::{Broker, MemoryBroker, Origin, Publication, Target};
pub use disconnect::Disconnect;
pub use frame::Frame;
pub use hub::Hub;
pub use node::{now_millis, Connection, Delivery, Node, NodeConfig};
pub use queue::{ConnId, ConnSignal};
pub use rate_limit::{RateDecision, RateLimiter};
pub use stats::{Stats, StatsSnapshot};
