//! Opening a connection: which identity to present, and turning every way
//! that can fail into one line a user can act on.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use protocol::{ClientFrame, CorrelationId, ErrorBody, ServerFrame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::resume::Streams;
use crate::{Common, Failure};

/// The correlation id of the `resume` frame a reconnect sends.
pub const RESUME_ID: &str = "resume";

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connected client and its welcome frame.
pub struct Connected {
    pub ws: Ws,
    pub user: String,
    pub groups: Vec<String>,
    /// The welcome frame as the server sent it.
    pub welcome: String,
    /// The server pings every `heartbeat` seconds: a connection silent for
    /// three intervals is dead even if TCP has not noticed.
    pub idle_limit: Option<Duration>,
    /// The positions to resume from (taken when the resume is sent).
    resume: Option<protocol::Positions>,
}

/// The URL to open, with the identity in its query.
pub fn ws_url(common: &Common) -> Result<String, Failure> {
    let url = common.url.trim();
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(Failure::usage(format!(
            "invalid --url {url:?}: expected ws://HOST:PORT/ws"
        )));
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    if let Some(token) = &common.token {
        return Ok(format!("{url}{sep}token={token}"));
    }
    match (&common.secret, &common.user) {
        (Some(secret), Some(user)) => {
            let token = crate::token::mint(secret, user, &[], Duration::from_secs(3600))?;
            Ok(format!("{url}{sep}token={token}"))
        }
        (None, Some(user)) => Ok(format!("{url}{sep}userId={user}")),
        _ => Err(Failure::usage(
            "say who you are: --token T, or --as USER with --secret S (or --as USER alone against a dev-mode server)",
        )),
    }
}

pub async fn connect(common: &Common) -> Result<Connected, Failure> {
    open(common, None).await
}

/// Connects and keeps `streams` up to date: the welcome's positions on the
/// first connection; after a drop (`resume`), connects with `resume=1` and
/// sends the positions seen so far as the first frame, so the server
/// replays what was missed (PROTOCOL.md §10).
pub async fn connect_resuming(
    common: &Common,
    streams: &mut Streams,
    resume: bool,
) -> Result<Connected, Failure> {
    let mut conn = open(common, Some((streams, resume))).await?;
    if resume {
        let positions = conn.resume.take().unwrap_or_default();
        let frame = ClientFrame::Resume {
            positions,
            id: CorrelationId::new(RESUME_ID).ok(),
        };
        let text = serde_json::to_string(&frame).map_err(|e| Failure::usage(e.to_string()))?;
        conn.ws
            .send(Message::text(text))
            .await
            .map_err(|e| Failure::connect(format!("connection lost: {e}")))?;
    }
    Ok(conn)
}

async fn open(
    common: &Common,
    streams: Option<(&mut Streams, bool)>,
) -> Result<Connected, Failure> {
    let mut url = ws_url(common)?;
    if matches!(streams, Some((_, true))) {
        url.push_str(if url.contains('?') { "&" } else { "?" });
        url.push_str("resume=1");
    }
    let shown = common.url.trim();
    // Bounded, so a reconnect to a server that accepts but never answers
    // is tried again rather than waited on for ever.
    let handshake = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url.as_str()),
    );
    let (mut ws, _) = match handshake.await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => return Err(explain(shown, e)),
        Err(_) => {
            return Err(Failure::connect(format!(
                "{shown} did not answer the upgrade within 10 s"
            )))
        }
    };
    // The first frame is the welcome.
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
    match first {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ServerFrame>(&t) {
            Ok(ServerFrame::Welcome {
                user,
                groups,
                streams: positions,
                heartbeat,
                ..
            }) => Ok(Connected {
                idle_limit: (heartbeat > 0)
                    .then(|| Duration::from_secs(heartbeat.saturating_mul(3))),
                ws,
                user: user.to_string(),
                groups: groups.iter().map(ToString::to_string).collect(),
                welcome: t.to_string(),
                resume: streams.map(|(s, _)| s.welcomed(&positions)),
            }),
            _ => Err(Failure::connect(format!(
                "{shown} did not greet like a wshub server"
            ))),
        },
        _ => Err(Failure::connect(format!(
            "{shown} closed the connection before its welcome"
        ))),
    }
}

fn explain(url: &str, e: tungstenite::Error) -> Failure {
    use tungstenite::Error;
    match e {
        Error::Url(e) => Failure::usage(format!("invalid --url {url:?}: {e}")),
        Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => Failure::connect(
            format!("cannot connect to {url}: connection refused (is the server running?)"),
        ),
        Error::Io(io) => Failure::connect(format!("cannot connect to {url}: {io}")),
        Error::Http(res) => {
            let status = res.status();
            let detail = res
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<ErrorBody>(b).ok())
                .map(|b| format!("{}: {}", b.error.code, b.error.message))
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
            let mut f = Failure::connect(format!(
                "server refused the connection ({}): {detail}",
                status.as_u16()
            ));
            f.refused = matches!(status.as_u16(), 400 | 401 | 403);
            f
        }
        other => Failure::connect(format!("cannot connect to {url}: {other}")),
    }
}

impl Connected {
    /// The next frame, or `Err` when the connection has been silent past
    /// its idle limit.
    pub async fn next(
        &mut self,
    ) -> Result<Option<Result<Message, tungstenite::Error>>, tokio::time::error::Elapsed> {
        match self.idle_limit {
            Some(limit) => tokio::time::timeout(limit, self.ws.next()).await,
            None => Ok(self.ws.next().await),
        }
    }
}
