//! The seam fan-out crosses: a `Broker` carries each publication to every
//! node of a cluster, this one included.
//!
//! With one node, `MemoryBroker` hands the publication straight to the local
//! hub. A broker for a cluster publishes the same encoded frame to the other
//! nodes as well, and each of them hands what arrives to its own hub; nothing
//! above this trait changes.

use crate::hub::Hub;
use crate::publication::Publication;

pub trait Broker: Send + Sync + 'static {
    /// Carries `publication` to every node and returns how many connections
    /// of this node it was queued to, counted as PROTOCOL.md's `delivered`.
    fn publish(&self, publication: &Publication, local: &Hub) -> usize;
}

/// The single-node broker: delivery is a function call.
#[derive(Debug, Default)]
pub struct MemoryBroker;

impl Broker for MemoryBroker {
    fn publish(&self, publication: &Publication, local: &Hub) -> usize {
        local.deliver(publication)
    }
}
