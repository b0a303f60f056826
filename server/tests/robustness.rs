//! Hostile bytes on real sockets: garbage instead of HTTP, broken WebSocket
//! framing after the upgrade. The offending socket is dropped; the server and
//! everyone else carry on.

use serde_json::json;
use test_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upgrades a raw TCP socket by hand and reads past the welcome frame.
async fn raw_upgraded(s: &Server) -> TcpStream {
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    let t = token("raw", &[], 60);
    let req = format!(
        "GET /ws?token={t} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    // Read the 101 head and the welcome frame that follows it.
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("\"welcome\"") {
        let n = tokio::time::timeout(LIMIT, tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed during the upgrade");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101"));
    tcp
}

/// Reads until the server closes the socket (EOF or reset).
async fn until_dropped(tcp: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(LIMIT, tcp.read(&mut buf))
            .await
            .expect("not dropped")
        {
            Ok(0) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

#[tokio::test]
async fn garbage_and_broken_frames_drop_only_their_socket() {
    let s = Server::start(&[]).await;
    let mut bystander = s.client("bystander", &[]).await;

    // Not HTTP at all.
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"\x00\x01\x02 not http at all \xff\xfe\r\n\r\n")
        .await
        .unwrap();
    until_dropped(&mut tcp).await;

    let cases: [(&str, &[u8]); 4] = [
        // A client frame must be masked.
        ("unmasked text frame", b"\x81\x05hello"),
        // Opcode 3 is reserved.
        ("reserved opcode", b"\x83\x80\x00\x00\x00\x00"),
        // RSV bits without a negotiated extension.
        ("reserved bits", b"\xf1\x80\x00\x00\x00\x00"),
        // A control frame may not be fragmented.
        ("fragmented ping", b"\x09\x80\x00\x00\x00\x00"),
    ];
    for (what, bytes) in cases {
        let mut tcp = raw_upgraded(&s).await;
        tcp.write_all(bytes).await.unwrap();
        until_dropped(&mut tcp).await;
        // The rest of the server is unaffected.
        let pong = bystander.request(json!({"type":"ping","id":what})).await;
        assert_eq!(pong, json!({"type":"pong","id":what}), "{what}");
    }
    let (status, _) = http(s.addr, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200);
    // Every broken socket is gone from the registry.
    s.wait_log_n("user=raw", 8).await; // 4 opened, 4 closed
    let (_, user) = s.api("GET", "/api/v1/users/raw", None).await;
    assert_eq!(user["connections"], 0);
}
