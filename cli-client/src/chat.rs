//! `wshub-cli chat`: an interactive chat in the terminal.
//!
//! Incoming messages are printed above the line being typed, which is
//! redrawn as it was (`terminal.rs`). When the connection drops the client
//! says so, reconnects with exponential backoff and resumes its streams
//! (PROTOCOL.md §10): missed messages are shown as they are replayed, and a
//! stream that could not be recovered is reported.

use futures_util::SinkExt;
use protocol::{Body, ClientFrame, CorrelationId, GroupId, ServerFrame, UserId};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::connect::{connect_resuming, ws_url, Connected};
use crate::resume::{lost_line, Backoff, Streams};
use crate::terminal::{self, Input, Screen};
use crate::{Common, Failure, Outcome};

const HELP: &str = "\
  @user text     send text to a user (all their devices)
  #group text    publish to a group you are in
  /join group    join a group
  /leave group   leave a group
  /help          this help
  /quit          leave (also Ctrl-D)";

pub async fn run(common: &Common) -> Outcome {
    ws_url(common)?; // say who you are before anything starts
    let (screen, mut lines, _raw_mode) = terminal::start();
    screen.say("wshub chat. /help for commands.".into());
    let mut backoff = Backoff::default();
    let mut streams = Streams::default();
    // After the first connection, every connection resumes the streams.
    let mut resume = false;
    loop {
        // Connecting can take a while; /quit still ends it.
        let attempt = {
            let attempt = connect_resuming(common, &mut streams, resume);
            tokio::pin!(attempt);
            loop {
                tokio::select! {
                    result = &mut attempt => break result,
                    input = lines.recv() => if offline(input, &screen) { return Ok(()) },
                }
            }
        };
        let wait = match attempt {
            Ok(conn) => {
                backoff.reset();
                let groups = if conn.groups.is_empty() {
                    "none".to_owned()
                } else {
                    conn.groups.join(", ")
                };
                screen.say(format!("* connected as {} (groups: {groups})", conn.user));
                resume = true;
                match session(conn, &mut lines, &screen, &mut streams).await {
                    SessionEnd::Quit => return Ok(()),
                    SessionEnd::Final(f) => return Err(f),
                    SessionEnd::Lost(why) => {
                        let wait = backoff.next_wait();
                        screen.say(format!(
                            "* disconnected: {why}; reconnecting in {:.1} s",
                            wait.as_secs_f64()
                        ));
                        wait
                    }
                }
            }
            Err(f) if f.refused || f.code == 2 => return Err(f),
            Err(f) => {
                let wait = backoff.next_wait();
                screen.say(format!(
                    "* {}; retrying in {:.1} s",
                    f.message,
                    wait.as_secs_f64()
                ));
                wait
            }
        };
        // Wait out the backoff, but let /quit end it.
        let wait = tokio::time::sleep(wait);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                _ = &mut wait => break,
                input = lines.recv() => if offline(input, &screen) { return Ok(()) },
            }
        }
    }
}

/// What the user typed while not connected; true when they quit.
fn offline(input: Option<Input>, screen: &Screen) -> bool {
    match input {
        None | Some(Input::Quit) => true,
        Some(Input::Line(l)) if l.trim() == "/quit" || l.trim() == "/exit" => true,
        Some(Input::Line(l)) if l.trim().is_empty() => false,
        Some(Input::Line(_)) => {
            screen.say("* not connected; message not sent".into());
            false
        }
    }
}

/// The error a connection silent past its idle limit ends with.
fn idle() -> tokio_tungstenite::tungstenite::Error {
    tokio_tungstenite::tungstenite::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no sign of life from the server",
    ))
}

enum SessionEnd {
    /// The user left (/quit, Ctrl-D, Ctrl-C).
    Quit,
    /// Closed with 1008 (kicked, token expired): reconnecting cannot help.
    Final(Failure),
    /// Dropped: reconnect and resume.
    Lost(String),
}

async fn session(
    mut conn: Connected,
    lines: &mut mpsc::UnboundedReceiver<Input>,
    screen: &Screen,
    streams: &mut Streams,
) -> SessionEnd {
    let me = conn.user.clone();
    let mut next_id = 0u64;
    loop {
        tokio::select! {
            msg = conn.next() => match msg.unwrap_or_else(|_| Some(Err(idle()))) {
                Some(Ok(Message::Text(t))) => {
                    let Ok(frame) = serde_json::from_str::<ServerFrame>(&t) else { continue };
                    let lost = streams.saw(&frame);
                    if let Some(line) = render(frame, &me) {
                        screen.say(line);
                    }
                    for stream in lost {
                        screen.say(format!("* {}", lost_line(&stream)));
                    }
                }
                Some(Ok(Message::Close(f))) => {
                    let code = f.as_ref().map(|f| u16::from(f.code));
                    let why = f.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_else(|| "closed".into());
                    let why = format!("server closed the connection ({})", why.trim_end());
                    return if code == Some(1008) {
                        SessionEnd::Final(Failure::server(why))
                    } else {
                        SessionEnd::Lost(why)
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return SessionEnd::Lost(e.to_string()),
                None => return SessionEnd::Lost("connection ended".into()),
            },
            input = lines.recv() => {
                let line = match input {
                    None | Some(Input::Quit) => {
                        let _ = conn.ws.close(None).await;
                        return SessionEnd::Quit;
                    }
                    Some(Input::Line(l)) => l,
                };
                match command(line.trim(), &mut next_id) {
                    Command::Quit => {
                        let _ = conn.ws.close(None).await;
                        return SessionEnd::Quit;
                    }
                    Command::Say(text) => screen.say(text),
                    Command::Send(frame) => {
                        let Ok(text) = serde_json::to_string(&frame) else { continue };
                        if let Err(e) = conn.ws.send(Message::text(text)).await {
                            return SessionEnd::Lost(e.to_string());
                        }
                    }
                    Command::Nothing => {}
                }
            }
        }
    }
}

enum Command {
    Send(ClientFrame),
    Say(String),
    Quit,
    Nothing,
}

fn command(line: &str, next_id: &mut u64) -> Command {
    let mut id = || {
        *next_id += 1;
        CorrelationId::new(&format!("chat-{next_id}")).ok()
    };
    let split = |rest: &str| {
        let (a, b) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        (a.to_owned(), b.trim().to_owned())
    };
    if line.is_empty() {
        return Command::Nothing;
    }
    // `@user text` sends, `#group text` publishes.
    if let Some(sigil) = line.chars().next().filter(|c| matches!(c, '@' | '#')) {
        let (name, text) = split(&line[1..]);
        let kind = if sigil == '@' { "user" } else { "group" };
        if text.is_empty() {
            return Command::Say(format!("* usage: {sigil}{kind} text"));
        }
        let body = Body::from_value(&serde_json::Value::String(text));
        let frame = if sigil == '@' {
            UserId::new(&name).map(|to| ClientFrame::Send { to, body, id: id() })
        } else {
            GroupId::new(&name).map(|group| ClientFrame::Publish {
                group,
                body,
                id: id(),
            })
        };
        return match frame {
            Ok(frame) => Command::Send(frame),
            Err(e) => Command::Say(format!("* bad {kind} id {name:?}: {e}")),
        };
    }
    let (cmd, arg) = split(line);
    match cmd.as_str() {
        "/quit" | "/exit" => Command::Quit,
        "/help" => Command::Say(HELP.into()),
        "/join" | "/leave" => match GroupId::new(&arg) {
            Ok(group) if cmd == "/join" => Command::Send(ClientFrame::Join { group, id: id() }),
            Ok(group) => Command::Send(ClientFrame::Leave { group, id: id() }),
            Err(_) => Command::Say(format!("* usage: {cmd} group")),
        },
        _ => Command::Say("* type @user text, #group text, or /help".into()),
    }
}

/// One incoming frame as a line of the chat, or nothing (acks of sends).
fn render(frame: ServerFrame, me: &str) -> Option<String> {
    match frame {
        ServerFrame::Message(m) => {
            let body = match m.body.to_value() {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            let time = clock(m.ts);
            let from = m
                .from
                .as_ref()
                .map_or("(server)".to_owned(), ToString::to_string);
            Some(match (&m.group, &m.to) {
                (Some(g), _) => format!("[{time}] {from} #{g}: {body}"),
                (None, Some(to)) if to.as_str() == me => format!("[{time}] {from}: {body}"),
                (None, Some(to)) => format!("[{time}] {from} → {to}: {body}"),
                (None, None) => format!("[{time}] {from} (everyone): {body}"),
            })
        }
        ServerFrame::Error { code, message, .. } => Some(format!("! {code}: {message}")),
        ServerFrame::Ack {
            delivered: Some(0), ..
        } => Some("* delivered to no one (offline or empty group)".into()),
        ServerFrame::Ack {
            id,
            delivered: None,
            recovered: None,
            ..
        } => Some(format!("* ok ({id})")),
        _ => None,
    }
}

/// `HH:MM:SS` (UTC) of a millisecond timestamp.
fn clock(ts_ms: u64) -> String {
    let s = ts_ms / 1000;
    format!("{:02}:{:02}:{:02}", (s / 3600) % 24, (s / 60) % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        let mut n = 0;
        assert!(
            matches!(command("@bob hi there", &mut n), Command::Send(ClientFrame::Send { ref to, .. }) if to.as_str() == "bob")
        );
        assert!(matches!(
            command("#team hello", &mut n),
            Command::Send(ClientFrame::Publish { .. })
        ));
        assert!(matches!(
            command("/join g", &mut n),
            Command::Send(ClientFrame::Join { .. })
        ));
        assert!(matches!(
            command("/leave g", &mut n),
            Command::Send(ClientFrame::Leave { .. })
        ));
        assert!(matches!(command("/quit", &mut n), Command::Quit));
        assert!(matches!(command("@bob", &mut n), Command::Say(_)));
        assert!(matches!(command("hello", &mut n), Command::Say(_)));
        assert_eq!(clock(3_723_000), "01:02:03");
    }

    #[test]
    fn messages_render_with_time_and_sender() {
        let direct =
            r#"{"type":"message","id":"1","from":"alice","to":"me","body":"hi","ts":3723000}"#;
        let render = |t: &str, me: &str| render(serde_json::from_str(t).unwrap(), me);
        assert_eq!(render(direct, "me").unwrap(), "[01:02:03] alice: hi");
        let group = r#"{"type":"message","id":"1","group":"promo","body":{"a":1},"ts":0}"#;
        assert_eq!(
            render(group, "me").unwrap(),
            "[00:00:00] (server) #promo: {\"a\":1}"
        );
        let err = r#"{"type":"error","code":"forbidden","message":"no"}"#;
        assert_eq!(render(err, "me").unwrap(), "! forbidden: no");
    }
}
