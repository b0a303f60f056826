//! `wshub-cli listen`: every received frame as one JSON line on stdout,
//! flushed at once, so `wshub-cli listen | jq` works.

use std::io::Write;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use crate::{Common, Failure, Outcome};

pub async fn run(common: &Common) -> Outcome {
    let mut conn = crate::connect::connect(common).await?;
    let mut out = std::io::stdout();
    // connect read the welcome; it is the first frame printed.
    let _ = writeln!(out, "{}", conn.welcome);
    let _ = out.flush();
    while let Some(msg) = conn.ws.next().await {
        match msg {
            Ok(Message::Text(t)) => {
                if writeln!(out, "{}", t.as_str())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return Ok(()); // stdout closed: the reader is gone
                }
            }
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                return match code {
                    1000 | 1001 => Ok(()),
                    _ => Err(Failure::server(format!(
                        "closed by the server: {code} {reason}"
                    ))),
                };
            }
            Ok(_) => {}
            Err(e) => return Err(Failure::connect(format!("connection lost: {e}"))),
        }
    }
    Ok(())
}
