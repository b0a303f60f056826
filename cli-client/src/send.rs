//! `wshub-cli send` and `publish`: one frame, wait for its ack, exit 0; or
//! exit 1 with the server's error code and message on stderr.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use protocol::{Body, ClientFrame, CorrelationId, GroupId, ServerFrame, UserId};
use tokio_tungstenite::tungstenite::Message;

use crate::{Common, Failure, Outcome};

const ID: &str = "cli-1";

pub async fn send(common: &Common, to: &str, body: &str) -> Outcome {
    let to = UserId::new(to).map_err(|e| Failure::usage(format!("bad --to {to:?}: {e}")))?;
    let frame = ClientFrame::Send {
        to,
        body: Body::from_cli_arg(body),
        id: Some(id()?),
    };
    one_frame(common, frame).await
}

pub async fn publish(common: &Common, group: &str, body: &str) -> Outcome {
    let group =
        GroupId::new(group).map_err(|e| Failure::usage(format!("bad --group {group:?}: {e}")))?;
    let frame = ClientFrame::Publish {
        group,
        body: Body::from_cli_arg(body),
        id: Some(id()?),
    };
    one_frame(common, frame).await
}

fn id() -> Result<CorrelationId, Failure> {
    // A constant id is fine: one frame per connection.
    CorrelationId::new(ID).map_err(|e| Failure::usage(e.to_string()))
}

async fn one_frame(common: &Common, frame: ClientFrame) -> Outcome {
    let mut conn = crate::connect::connect(common).await?;
    let text = serde_json::to_string(&frame).map_err(|e| Failure::usage(e.to_string()))?;
    conn.ws
        .send(Message::text(text))
        .await
        .map_err(|e| Failure::connect(format!("connection lost: {e}")))?;
    let wait = async {
        while let Some(msg) = conn.ws.next().await {
            let Ok(Message::Text(t)) = msg else {
                if let Ok(Message::Close(f)) = msg {
                    let why = f
                        .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                        .unwrap_or_default();
                    return Err(Failure::server(format!(
                        "closed by the server before the ack: {why}"
                    )));
                }
                continue;
            };
            match serde_json::from_str::<ServerFrame>(&t) {
                Ok(ServerFrame::Ack { id, .. }) if id.as_str() == ID => {
                    println!("{t}");
                    return Ok(());
                }
                Ok(ServerFrame::Error { code, message, .. }) => {
                    return Err(Failure::server(format!("{code}: {message}")));
                }
                _ => {} // messages that arrived meanwhile
            }
        }
        Err(Failure::connect("connection lost before the ack"))
    };
    let result = tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| Err(Failure::server("no ack within 30 s")));
    let _ = conn.ws.close(None).await;
    result
}
