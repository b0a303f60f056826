//! A small WebSocket client for the hub's JSON frames: connect and read the
//! welcome, send JSON, receive JSON (pings are answered by tungstenite and
//! skipped), read to the server's close; and refused upgrades as HTTP.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::LIMIT;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Client {
    /// The socket itself, for what the helpers do not cover (raw frames,
    /// pipelining with `feed`, a client-initiated close).
    pub ws: Ws,
    /// The server's first frame.
    pub welcome: Value,
}

impl Client {
    /// Upgrades at `url` and reads the welcome frame.
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("no upgrade in time")
            .unwrap_or_else(|e| panic!("upgrade at {url}: {e}"));
        Client::after_upgrade(ws).await
    }

    /// Tries an upgrade that may be accepted or refused: the client (its
    /// welcome read) or the refusal's HTTP status and JSON error body. A
    /// dropped connection or any other failure fails the test, since the
    /// contract answers every upgrade one way or the other.
    pub async fn try_connect<R>(request: R) -> Result<Client, (u16, Value)>
    where
        R: IntoClientRequest + Unpin,
    {
        let attempt = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("no answer to the upgrade in time");
        match attempt {
            Ok((ws, _)) => Ok(Client::after_upgrade(ws).await),
            Err(tungstenite::Error::Http(res)) => Err(http_refusal(&res)),
            Err(e) => panic!("the upgrade got no answer: {e}"),
        }
    }

    /// Wraps a socket upgraded some other way (own headers, own TCP
    /// socket) and reads the welcome frame.
    pub async fn after_upgrade(ws: Ws) -> Client {
        let mut c = Client {
            ws,
            welcome: Value::Null,
        };
        let welcome = c.recv().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        c.welcome = welcome;
        c
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next text frame as JSON. Pings and pongs are skipped (reading
    /// lets tungstenite answer pings); anything else fails the test.
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(LIMIT, self.ws.next())
                .await
                .expect("no frame in time")
                .expect("stream ended")
                .expect("read error");
            match msg {
                Message::Text(t) => return serde_json::from_str(&t).expect("JSON frame"),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Sends `v` and returns the next frame.
    pub async fn request(&mut self, v: Value) -> Value {
        self.send(v).await;
        self.recv().await
    }

    /// Reads until the server's close frame; returns its code and reason
    /// (1005 and "" when it carried none) and the text frames before it.
    pub async fn until_close(&mut self) -> (u16, String, Vec<Value>) {
        let mut before = Vec::new();
        loop {
            let next = tokio::time::timeout(LIMIT, self.ws.next())
                .await
                .expect("no close in time");
            match next {
                Some(Ok(Message::Close(frame))) => {
                    // Reading on sends tungstenite's close reply, which
                    // completes the handshake the server waits for.
                    let _ = tokio::time::timeout(LIMIT, self.ws.next()).await;
                    return match frame {
                        Some(CloseFrame { code, reason }) => {
                            (u16::from(code), reason.to_string(), before)
                        }
                        None => (1005, String::new(), before),
                    };
                }
                Some(Ok(Message::Text(t))) => {
                    before.push(serde_json::from_str(&t).expect("JSON frame"))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
                None => panic!("stream ended without a close frame"),
            }
        }
    }
}

/// Tries an upgrade that should be refused; returns the HTTP status and the
/// JSON error body.
pub async fn refused(request: tungstenite::handshake::client::Request) -> (u16, Value) {
    let attempt = tokio::time::timeout(LIMIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("no answer to the upgrade in time");
    match attempt {
        Ok(_) => panic!("upgrade was accepted"),
        Err(tungstenite::Error::Http(res)) => http_refusal(&res),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// The status and JSON error body of a refused upgrade.
fn http_refusal(res: &tungstenite::http::Response<Option<Vec<u8>>>) -> (u16, Value) {
    let status = res.status().as_u16();
    let body = res.body().clone().unwrap_or_default();
    let v = serde_json::from_slice(&body).unwrap_or_else(|_| {
        panic!(
            "{status} error body is not JSON: {:?}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, v)
}
