//! Cluster mode (PROTOCOL.md §11, `--redis URL`): hub-core's seams —
//! broker, membership, presence — on one Redis server, so that many
//! `wshub-server` processes form one hub.
//!
//! How it is cut (after centrifuge's Redis engine, and where it differs,
//! why):
//! - `wire`: the key and channel names, and what travels on a channel.
//! - `scripts`: every multi-step update is one Lua script, so it is atomic
//!   and costs one round trip; a group push is one script whatever the
//!   group's size.
//! - `backplane`: `RedisBackplane` implements the seams with commands on
//!   one connection manager (which reconnects on its own).
//! - `batch`: direct pushes go to Redis several to a script call when
//!   they queue up, which halves Redis's work per message at a high rate.
//! - `subscriber`: the one pub/sub connection, never the command one. It
//!   routes by interest: a process is subscribed to a user's channel while
//!   it holds a connection of that user, and to a group's channel while it
//!   holds a connection of a member; it resubscribes after a reconnect.
//! - `heartbeat`: presence with a heartbeat and a TTL, so a process that
//!   dies leaves it within seconds; it also notices an outage, a Redis that
//!   came back without its data, and brings the process back to service.
//!
//! Every process, the sender's included, delivers a channel's messages as
//! pub/sub hands them over, so every process sees one order per channel.

pub mod backplane;
pub mod batch;
pub mod heartbeat;
pub mod scripts;
pub mod subscriber;
pub mod wire;
