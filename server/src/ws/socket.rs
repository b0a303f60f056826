//! One connection's TCP stream, with a single outgoing buffer for every
//! byte the server writes to it.
//!
//! tungstenite reads the client's frames through this type, and whatever
//! it writes itself (the pong to a client's ping, a close frame) lands in
//! the same buffer as our own frames, so nothing can interleave inside a
//! frame. Our frames are framed here directly: every server frame is an
//! unmasked, unfragmented text frame (or a ping), whose header is two to
//! ten bytes. Going through tungstenite's sink for them cost, per frame, a
//! `Frame` value, its formatting into tungstenite's buffer and, per call,
//! the registration of a waker proxy: a few percent of the server's time
//! in a large fan-out, where every recipient pays it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Which buffers are kept once everything in them is sent. One that held
/// a small frame or two (a welcome, a chat message now and then) is given
/// back: idle memory per connection is one of the server's promises, and
/// malloc's per-thread cache makes the next small one cheap. One that held
/// a batch is kept for the next batch, up to about one `WRITE_BUFFER`'s
/// worth; a larger one (a long replay, a big frame) is given back.
const KEEP_CAPACITY: std::ops::RangeInclusive<usize> = 1024..=32 * 1024;

#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    /// Bytes to write, from `sent` on.
    out: Vec<u8>,
    sent: usize,
}

impl Socket {
    pub fn new(stream: TcpStream) -> Socket {
        Socket {
            stream,
            out: Vec::new(),
            sent: 0,
        }
    }

    /// Ready once the socket has bytes to read (or an end or error to
    /// report); registers the task for that when it has not.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.stream.poll_read_ready(cx)
    }

    /// Bytes buffered and not yet taken by the socket.
    pub fn pending(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Appends one text frame carrying `payload` (RFC 6455 §5.2: FIN, text
    /// opcode, no mask, the shortest length form).
    pub fn put_text(&mut self, payload: &[u8]) {
        self.put_header(0x81, payload.len());
        self.out.extend_from_slice(payload);
    }

    /// Appends an empty ping.
    pub fn put_ping(&mut self) {
        self.put_header(0x89, 0);
    }

    fn put_header(&mut self, first: u8, len: usize) {
        // At most 10 header bytes; one allocation for a whole frame.
        self.out.reserve(10 + len);
        self.out.push(first);
        match len {
            n if n < 126 => self.out.push(n as u8),
            n if n <= usize::from(u16::MAX) => {
                self.out.push(126);
                self.out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                self.out.push(127);
                self.out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
    }

    /// Writes what is buffered while the socket takes it: ready when all of
    /// it is written, pending (with the task registered for writability)
    /// when the socket is full.
    pub fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.out[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Keep appends cheap: once most of the buffer is
                    // written, move the rest to its front.
                    if self.sent > self.out.len() / 2 {
                        self.out.drain(..self.sent);
                        self.sent = 0;
                    }
                    return Poll::Pending;
                }
            }
        }
        if !KEEP_CAPACITY.contains(&self.out.capacity()) {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

/// tungstenite's own writes: appended, never refused, so a frame it
/// writes is always whole and in order with ours; its flush sends.
impl AsyncWrite for Socket {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_send(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        std::task::ready!(self.poll_send(cx))?;
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    async fn pair() -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Socket::new(server), client)
    }

    #[tokio::test]
    async fn frames_of_every_length_form_arrive_as_rfc_6455_frames() {
        let (mut socket, mut client) = pair().await;
        let short = vec![b'a'; 125];
        let medium = vec![b'b'; 126];
        let long = vec![b'c'; 70_000];
        socket.put_text(&short);
        socket.put_ping();
        socket.put_text(&medium);
        socket.put_text(&long);
        let expected_len = (2 + 125) + 2 + (4 + 126) + (10 + 70_000);
        assert_eq!(socket.pending(), expected_len);
        let writing = async {
            std::future::poll_fn(|cx| socket.poll_send(cx))
                .await
                .unwrap();
            socket
        };
        let mut got = vec![0u8; expected_len];
        let (socket, read) = tokio::join!(writing, client.read_exact(&mut got));
        read.unwrap();
        assert_eq!(socket.pending(), 0);
        assert_eq!(&got[..2], &[0x81, 125]);
        assert_eq!(&got[2..127], &short[..]);
        assert_eq!(&got[127..129], &[0x89, 0]);
        assert_eq!(&got[129..133], &[0x81, 126, 0, 126]);
        assert_eq!(&got[133..259], &medium[..]);
        let mut head = vec![0x81, 127];
        head.extend_from_slice(&70_000u64.to_be_bytes());
        assert_eq!(&got[259..269], &head[..]);
        assert!(got[269..].iter().all(|&b| b == b'c'));
    }

    #[tokio::test]
    async fn only_a_batch_sized_buffer_is_kept_once_sent() {
        let (mut socket, mut client) = pair().await;
        for (payload, kept) in [
            (100, false),
            (*KEEP_CAPACITY.start(), true),
            (*KEEP_CAPACITY.end(), false),
        ] {
            socket.put_text(&vec![b'x'; payload]);
            let n = socket.pending();
            std::future::poll_fn(|cx| socket.poll_send(cx))
                .await
                .unwrap();
            let mut got = vec![0u8; n];
            client.read_exact(&mut got).await.unwrap();
            assert_eq!(socket.pending(), 0);
            assert_eq!(socket.out.capacity() > 0, kept, "{payload} bytes");
        }
    }
}
