//! What every request and connection handler shares, behind one `Arc`.

use std::sync::Arc;

use hub_core::Node;
use tokio::sync::Semaphore;
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
    /// `--max-connections`: one permit per open WebSocket, held by its task
    /// (so the count is exact, upgrades in flight included). `None`: no cap.
    pub connection_slots: Option<Arc<Semaphore>>,
}

impl State {
    pub fn new(config: Config, shutdown: CancellationToken) -> SharedState {
        let node = Node::new(config.node_config());
        let connection_slots =
            (config.max_connections > 0).then(|| Arc::new(Semaphore::new(config.max_connections)));
        let tokens = TokenVerifier::new(config.secret.as_deref());
        let ws_config = crate::ws::config::websocket_config(config.max_frame.get());
        let metrics = Metrics::new(node.clone());
        Arc::new(State {
            config,
            node,
            tokens,
            metrics,
            shutdown,
            connections: TaskTracker::new(),
            ws_config,
            connection_slots,
        })
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}
