//! What every request and connection handler shares, behind one `Arc`.

use std::sync::Arc;

use hub_core::{Backplane, Node, NodeId};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::TokenVerifier;
use crate::cluster::backplane::RedisBackplane;
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
    /// Stops the cluster backplane's tasks (pub/sub, heartbeat): cancelled
    /// once shutdown has closed every connection, not before, so that a
    /// frame finishing meanwhile finds its connection closed and answers
    /// without a position (`ws/connection.rs`), instead of reporting one
    /// whose earlier messages the stopped subscriber never delivered.
    pub broker_stop: CancellationToken,
    /// Tracks WebSocket connection tasks, so shutdown can wait for them.
    pub connections: TaskTracker,
    pub ws_config: WebSocketConfig,
    /// `--max-connections`: one permit per open WebSocket, held by its task
    /// (so the count is exact, upgrades in flight included). `None`: no cap.
    pub connection_slots: Option<Arc<Semaphore>>,
    /// Cluster mode's backplane (`--redis`); `None` on one process.
    pub cluster: Option<Arc<RedisBackplane>>,
}

impl State {
    /// Builds the shared state; in cluster mode also starts the
    /// backplane's background tasks (they end with `broker_stop`).
    pub fn new(config: Config, shutdown: CancellationToken) -> anyhow::Result<SharedState> {
        let broker_stop = CancellationToken::new();
        let (node, cluster) = match &config.redis {
            None => (Node::new(config.node_config()), None),
            Some(url) => {
                // TCP_NODELAY: every command is small and waited on, and
                // Nagle's algorithm would hold one behind the reply to the
                // one before (redis-rs leaves it off by default).
                let info = redis::IntoConnectionInfo::into_connection_info(url.as_str())
                    .map_err(|e| anyhow::anyhow!("bad --redis URL: {e}"))?;
                let info =
                    info.set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
                let client = redis::Client::open(info)
                    .map_err(|e| anyhow::anyhow!("bad --redis URL: {e}"))?;
                let id = NodeId::random();
                let mut made = None;
                let mut failed = None;
                let node = Node::with_backplane(config.node_config(), id, |hub| {
                    let local = Arc::new(hub_core::Local::new(
                        hub.clone(),
                        Default::default(),
                        Default::default(),
                    ));
                    let settings = config.node_config();
                    match RedisBackplane::new(
                        id,
                        client,
                        hub,
                        settings.history,
                        settings.idempotency_window,
                    ) {
                        Ok(bp) => {
                            let bp = Arc::new(bp);
                            made = Some(bp.clone());
                            Backplane {
                                broker: bp.clone(),
                                membership: bp.clone(),
                                presence: bp,
                            }
                        }
                        Err(e) => {
                            failed = Some(e);
                            Backplane {
                                broker: local.clone(),
                                membership: local.clone(),
                                presence: local,
                            }
                        }
                    }
                });
                if let Some(e) = failed {
                    anyhow::bail!("cannot use --redis {url}: {e}");
                }
                if let Some(bp) = &made {
                    crate::cluster::heartbeat::start(bp, &broker_stop);
                }
                (node, made)
            }
        };
        let connection_slots =
            (config.max_connections > 0).then(|| Arc::new(Semaphore::new(config.max_connections)));
        let tokens = TokenVerifier::new(config.secret.as_deref());
        let ws_config = crate::ws::config::websocket_config(config.max_frame.get());
        let metrics = Metrics::new(node.clone());
        Ok(Arc::new(State {
            config,
            node,
            tokens,
            metrics,
            shutdown,
            broker_stop,
            connections: TaskTracker::new(),
            ws_config,
            connection_slots,
            cluster,
        }))
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }
}
