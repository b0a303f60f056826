//! The stream hyper serves a connection over: a TCP stream that keeps back
//! the 101 response ending a WebSocket upgrade, so that it leaves in one
//! write with the welcome frame that follows it.
//!
//! Sent apart, the two were two segments per connect. On loopback a send
//! also runs the receiving side's work, and the client then needs two
//! reads: in the connect scenario `writev` held 29 % of the server's
//! samples. The 101 waits here until the connection's `Socket` takes it
//! over (`into_parts`) and writes it ahead of the welcome, and everything
//! else (a refusal, an API response) is written as it comes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How a 101 response's head starts, as hyper writes it.
const SWITCHING: &[u8] = b"HTTP/1.1 101 ";

#[derive(Debug)]
pub struct HeldUpgrade {
    stream: TcpStream,
    /// The 101 response and anything written after it, unsent.
    held: Vec<u8>,
}

impl HeldUpgrade {
    pub fn new(stream: TcpStream) -> HeldUpgrade {
        HeldUpgrade {
            stream,
            held: Vec::new(),
        }
    }

    /// The stream, and the bytes it still owes the client (the 101) to be
    /// written before anything else.
    pub fn into_parts(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.held)
    }
}

impl AsyncRead for HeldUpgrade {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for HeldUpgrade {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // hyper writes the 101 last (the connection is the upgrade's from
        // then on), and whole: its head in one buffer, as this stream does
        // not take vectored writes.
        if !self.held.is_empty() || buf.starts_with(SWITCHING) {
            self.held.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (HeldUpgrade, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (accepted, client) = tokio::join!(listener.accept(), client);
        (HeldUpgrade::new(accepted.unwrap().0), client.unwrap())
    }

    #[tokio::test]
    async fn a_refusal_goes_out_at_once_and_a_101_waits_with_what_follows_it() {
        let (mut server, mut client) = pair().await;
        let refusal = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n";
        server.write_all(refusal).await.unwrap();
        let mut got = vec![0; refusal.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, refusal);

        server
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            .await
            .unwrap();
        server.write_all(b"after").await.unwrap();
        server.flush().await.unwrap();
        let (_stream, held) = server.into_parts();
        assert_eq!(held, b"HTTP/1.1 101 Switching Protocols\r\n\r\nafter");
    }
}
