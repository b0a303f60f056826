//! What every request and connection handler shares, behind one `Arc`.

use std::sync::Arc;

use hub_core::Node;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::TokenVerifier;
use crate::config::Config;
use crate::metrics::Metrics;

pub type SharedState = Arc<State>;

#[derive(Debug)]
pub struct State {
    pub config: Config,
    pub node: Node,
    pub tokens: TokenVerifier,
    pub metrics: Metrics,
    /// Cancelled when shutdown starts (SIGINT/SIGTERM).
    pub shutdown: CancellationToken,
    /// Tracks WebSocket connection tasks, so shutdown can wait for them.
    pub connections: TaskTracker,
    pub ws_config: WebSocketConfig,
}

impl State {
    pub fn new(config: Config, shutdown: CancellationToken) -> SharedState {
        let node = Node::new(hub_core::NodeConfig {
            queue_capacity: config.queue.get(),
        });
        let tokens = TokenVerifier::new(config.secret.as_deref());
        let ws_config = crate::ws::connection::websocket_config(config.max_frame.get());
        let metrics = Metrics::new(node.clone());
        Arc::new(State {
            config,
            node,
            tokens,
            metrics,
            shutdown,
            connections: TaskTracker::new(),
            ws_config,
        })
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}
