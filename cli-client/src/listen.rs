//! `wshub-cli listen`: every received frame as one JSON line on stdout,
//! flushed at once, so `wshub-cli listen | jq` works.
//!
//! When the connection drops, `listen` reconnects with backoff and resumes
//! its streams (PROTOCOL.md §10): the welcome of the new connection, the
//! replayed messages and the ack of the resume are printed like any frame,
//! and a stream that could not be recovered is named on stderr. With
//! `--no-reconnect` a drop ends it with exit code 3.

use std::io::Write;

use protocol::ServerFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::connect::{connect_resuming, Connected};
use crate::resume::{lost_line, Backoff, Streams};
use crate::{Common, Failure, Outcome};

/// How one connection ended.
enum End {
    /// Nobody reads stdout any more.
    ReaderGone,
    /// The server closed it in a way a reconnect cannot mend (1008).
    Final(Failure),
    /// It dropped; a reconnect may resume.
    Lost(String),
}

pub async fn run(common: &Common, reconnect: bool) -> Outcome {
    let mut streams = Streams::default();
    let mut backoff = Backoff::default();
    // A first connection that fails is an error, not something to wait out.
    let mut conn = connect_resuming(common, &mut streams, false).await?;
    loop {
        let why = match pump(&mut conn, &mut streams).await {
            End::ReaderGone => return Ok(()),
            // With --no-reconnect every end of the connection is the same
            // end to a script (§9: exit 3), a kick included.
            End::Final(f) if reconnect => return Err(f),
            End::Final(f) => f.message,
            End::Lost(why) => why,
        };
        if !reconnect {
            return Err(Failure::connect(format!("connection lost: {why}")));
        }
        eprintln!("wshub-cli: connection lost: {why}; reconnecting");
        conn = loop {
            tokio::time::sleep(backoff.next_wait()).await;
            match connect_resuming(common, &mut streams, true).await {
                Ok(c) => break c,
                // Refused at the upgrade (401/403) or unusable arguments:
                // trying again cannot help.
                Err(f) if f.refused || f.code == 2 => return Err(f),
                Err(_) => {}
            }
        };
        backoff.reset();
    }
}

/// Prints the welcome, then every frame, until the connection ends.
async fn pump(conn: &mut Connected, streams: &mut Streams) -> End {
    let mut out = std::io::stdout();
    if print(&mut out, &conn.welcome).is_err() {
        return End::ReaderGone;
    }
    loop {
        let Ok(msg) = conn.next().await else {
            return End::Lost("no sign of life from the server".into());
        };
        let Some(msg) = msg else { break };
        match msg {
            Ok(Message::Text(t)) => {
                let lost = match serde_json::from_str::<ServerFrame>(t.as_str()) {
                    Ok(frame) => streams.saw(&frame),
                    Err(_) => Vec::new(),
                };
                if print(&mut out, t.as_str()).is_err() {
                    return End::ReaderGone;
                }
                for stream in lost {
                    eprintln!("wshub-cli: {}", lost_line(&stream));
                }
            }
            Ok(Message::Close(frame)) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.to_string())
                });
                let why = format!("closed by the server: {code} {reason}");
                return if code == 1008 {
                    End::Final(Failure::server(why.trim_end()))
                } else {
                    End::Lost(why.trim_end().to_owned())
                };
            }
            Ok(_) => {}
            Err(e) => return End::Lost(e.to_string()),
        }
    }
    End::Lost("connection ended".into())
}

fn print(out: &mut std::io::Stdout, line: &str) -> std::io::Result<()> {
    writeln!(out, "{line}")?;
    out.flush()
}
