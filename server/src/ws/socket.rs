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

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The largest buffer kept once everything in it is sent: about one
/// `WRITE_BUFFER`'s worth, for the next batch. A larger one (a long
/// replay, a big frame) is given back. A connection that only ever gets
/// the server's own frames (welcome, pings, replies) has no buffer at all:
/// those are written at once (`send_text_now`).
const MAX_KEEP: usize = 32 * 1024;

#[derive(Debug)]
pub struct Socket {
    stream: TcpStream,
    /// What the client is owed before any frame: the upgrade's 101
    /// (`held_upgrade.rs`). It goes out in the same write as the first
    /// frame and is then let go; in `out` it would stay as the buffer an
    /// idle connection keeps. Only ever set while `out` is empty.
    preamble: Vec<u8>,
    /// Bytes to write, from `sent` on.
    out: Vec<u8>,
    sent: usize,
}

impl Socket {
    /// A socket that still owes the client `preamble`.
    pub fn new(stream: TcpStream, preamble: Vec<u8>) -> Socket {
        Socket {
            stream,
            preamble,
            out: Vec::new(),
            sent: 0,
        }
    }

    /// Moves the preamble into the buffer, ahead of whatever is appended
    /// next (anything but `send_now` takes this path, and none comes
    /// before the welcome, so it is for safety only).
    fn buffer_preamble(&mut self) {
        if !self.preamble.is_empty() {
            let preamble = std::mem::take(&mut self.preamble);
            self.out.splice(0..0, preamble);
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
        self.buffer_preamble();
        let (head, n) = header(TEXT, payload.len());
        // One allocation for the whole frame when the buffer must grow.
        self.out.reserve(n + payload.len());
        self.out.extend_from_slice(&head[..n]);
        self.out.extend_from_slice(payload);
    }

    /// Writes one text frame at once when nothing is buffered ahead of it,
    /// and buffers only what the socket does not take. For the server's
    /// own frames: most connections get little else (a welcome, then
    /// pings), and so never need a buffer.
    pub fn send_text_now(&mut self, payload: &[u8]) {
        self.send_now(TEXT, payload);
    }

    /// `send_text_now` for an empty ping.
    pub fn send_ping_now(&mut self) {
        self.send_now(PING, &[]);
    }

    fn send_now(&mut self, first: u8, payload: &[u8]) {
        let (head, n) = header(first, payload.len());
        let preamble = std::mem::take(&mut self.preamble);
        let parts = [&preamble[..], &head[..n], payload];
        let mut written = if self.pending() > 0 {
            0
        } else {
            let slices = parts.map(IoSlice::new);
            // Not ready or refused: all of it waits for `poll_send`, which
            // reports a socket error.
            self.stream.try_write_vectored(&slices).unwrap_or(0)
        };
        // What the socket did not take, in order.
        for part in parts {
            let skip = written.min(part.len());
            written -= skip;
            self.out.extend_from_slice(&part[skip..]);
        }
    }

    /// Writes what is buffered while the socket takes it: ready when all of
    /// it is written, pending (with the task registered for writability)
    /// when the socket is full.
    pub fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.buffer_preamble();
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
        if self.out.capacity() > MAX_KEEP {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

const TEXT: u8 = 0x81;
const PING: u8 = 0x89;

/// A frame header for a payload of `len` bytes, and how many of its bytes
/// are used.
fn header(first: u8, len: usize) -> ([u8; 10], usize) {
    let mut head = [0u8; 10];
    head[0] = first;
    let n = match len {
        n if n < 126 => {
            head[1] = n as u8;
            2
        }
        n if n <= usize::from(u16::MAX) => {
            head[1] = 126;
            head[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            4
        }
        n => {
            head[1] = 127;
            head[2..10].copy_from_slice(&(n as u64).to_be_bytes());
            10
        }
    };
    (head, n)
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
        self.buffer_preamble();
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
        (Socket::new(server, Vec::new()), client)
    }

    #[tokio::test]
    async fn frames_of_every_length_form_arrive_as_rfc_6455_frames() {
        let (mut socket, mut client) = pair().await;
        let short = vec![b'a'; 125];
        let medium = vec![b'b'; 126];
        let long = vec![b'c'; 70_000];
        socket.put_text(&short);
        // Behind a buffered frame, so buffered too.
        socket.send_ping_now();
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
    async fn a_batch_sized_buffer_is_kept_once_sent_and_a_larger_one_given_back() {
        let (mut socket, mut client) = pair().await;
        for (payload, kept) in [(100, true), (MAX_KEEP - 10, true), (MAX_KEEP, false)] {
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

    #[tokio::test]
    async fn frames_sent_now_to_a_willing_socket_need_no_buffer() {
        let (mut socket, mut client) = pair().await;
        socket.stream.writable().await.unwrap();
        socket.send_text_now(b"welcome");
        socket.send_ping_now();
        assert_eq!((socket.pending(), socket.out.capacity()), (0, 0));
        let mut got = [0u8; 11];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x81\x07welcome\x89\x00");
    }

    #[tokio::test]
    async fn a_preamble_goes_out_with_the_first_frame_and_leaves_no_buffer() {
        let (server, mut client) = pair().await;
        let mut socket = Socket::new(server.stream, b"HTTP/1.1 101 x\r\n\r\n".to_vec());
        socket.stream.writable().await.unwrap();
        socket.send_text_now(b"welcome");
        assert_eq!((socket.pending(), socket.out.capacity()), (0, 0));
        assert!(socket.preamble.is_empty());
        let mut got = [0u8; 27];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"HTTP/1.1 101 x\r\n\r\n\x81\x07welcome");

        // Anything else first (tungstenite's write, a batch) puts it ahead
        // in the buffer.
        let (server, mut client) = pair().await;
        let mut socket = Socket::new(server.stream, b"101".to_vec());
        socket.put_text(b"q");
        std::future::poll_fn(|cx| socket.poll_send(cx))
            .await
            .unwrap();
        let mut got = [0u8; 6];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"101\x81\x01q");
    }

    #[tokio::test]
    async fn what_a_full_socket_does_not_take_now_is_sent_later_in_order() {
        let (mut socket, mut client) = pair().await;
        // Fill the kernel's buffers so that a frame sent now is cut short.
        let chunk = vec![b'f'; 64 * 1024];
        let mut filled = 0;
        while let Ok(n) = socket.stream.try_write(&chunk) {
            filled += n;
        }
        let big = vec![b'g'; 100_000];
        socket.send_text_now(&big);
        socket.send_text_now(b"last");
        assert!(socket.pending() > 0);
        let writing = async {
            std::future::poll_fn(|cx| socket.poll_send(cx))
                .await
                .unwrap();
        };
        let mut got = vec![0u8; filled + 10 + big.len() + 6];
        let ((), read) = tokio::join!(writing, client.read_exact(&mut got));
        read.unwrap();
        assert!(got[..filled].iter().all(|&b| b == b'f'));
        let mut head = vec![0x81, 127];
        head.extend_from_slice(&100_000u64.to_be_bytes());
        assert_eq!(&got[filled..filled + 10], &head[..]);
        assert!(got[filled + 10..filled + 10 + big.len()]
            .iter()
            .all(|&b| b == b'g'));
        assert_eq!(&got[filled + 10 + big.len()..], b"\x81\x04last");
    }
}
