//! The two baselines `xtask bench` measures wshub against, run as their own
//! processes (`xtask baseline --kind hub|raw`) under the same load:
//!
//! - `hub`: a minimal hub. One tokio broadcast channel for the group,
//!   tokio-tungstenite with its defaults, no auth, no envelope: a push's
//!   request body goes to every socket verbatim.
//! - `raw`: the raw limit. Each push is framed once as a WebSocket text
//!   frame and the same bytes are written straight to every socket.

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Which baseline a process serves (the module doc describes both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// The minimal hub.
    Hub,
    /// The raw limit.
    Raw,
}

#[derive(Debug, Clone, clap::Args)]
pub struct BaselineArgs {
    #[arg(long, value_enum)]
    pub kind: Kind,
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

pub fn run(args: BaselineArgs) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: BaselineArgs) -> anyhow::Result<()> {
    let raw = args.kind == Kind::Raw;
    let listener = TcpListener::bind(args.listen).await?;
    eprintln!("listening on {}", listener.local_addr()?);
    let (tx, _) = broadcast::channel::<Bytes>(4096);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let tx = tx.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, tx, raw).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    tx: broadcast::Sender<Bytes>,
    raw: bool,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/ws" {
        let key = req
            .headers()
            .get("sec-websocket-key")
            .map(|k| derive_accept_key(k.as_bytes()))
            .unwrap_or_default();
        let rx = tx.subscribe();
        let on_upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
                return;
            };
            let stream = parts.io.into_inner();
            if raw {
                raw_writer(stream, rx).await;
            } else {
                let ws = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
                hub_connection(ws, rx).await;
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-accept", key)
            .body(Full::default())
            .unwrap_or_default();
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let payload = if raw { frame_text(&body) } else { body };
    let delivered = tx.send(payload).unwrap_or(0);
    Response::new(Full::new(Bytes::from(format!(
        r#"{{"id":"0","delivered":{delivered}}}"#
    ))))
}

async fn hub_connection(mut ws: WebSocketStream<TcpStream>, mut rx: broadcast::Receiver<Bytes>) {
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(body) => {
                    let Ok(text) = tokio_tungstenite::tungstenite::Utf8Bytes::try_from(body) else { continue };
                    if ws.send(Message::Text(text)).await.is_err() { return; }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            },
            m = ws.next() => if !matches!(m, Some(Ok(_))) { return },
        }
    }
}

async fn raw_writer(mut stream: TcpStream, mut rx: broadcast::Receiver<Bytes>) {
    let (mut read, mut write) = stream.split();
    let mut sink = [0u8; 512];
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(frame) => if write.write_all(&frame).await.is_err() { return },
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            },
            n = tokio::io::AsyncReadExt::read(&mut read, &mut sink) => if !matches!(n, Ok(n) if n > 0) { return },
        }
    }
}

/// An unmasked server text frame around `payload` (RFC 6455 §5.2).
fn frame_text(payload: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x81);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= u16::MAX as usize => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    Bytes::from(f)
}
