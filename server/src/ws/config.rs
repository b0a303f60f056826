//! How tungstenite is set up for every connection: buffer sizes chosen for
//! many small, mostly idle connections.

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use super::socket::Socket;

/// One accepted WebSocket, straight on the TCP stream (hyper's upgrade is
/// unwrapped, so no boxed IO sits under every read and write). tungstenite
/// reads it; the writer frames and writes what the server sends (see
/// `socket.rs`).
pub type Ws = WebSocketStream<Socket>;

/// Initial read buffer per connection. Chat frames are small and an idle
/// connection should cost little (tungstenite's default is 128 KiB, eagerly
/// allocated and zero-filled): 2 KiB holds a typical frame in one read, and
/// tungstenite grows the buffer on demand for a larger one, up to
/// `--max-frame`.
const READ_BUFFER: usize = 2 * 1024;
/// Bytes of frames the writer gathers before it writes to the socket. It
/// is also about the most it buffers beyond what the socket has taken:
/// the rest waits in the connection's bounded queue (see `writer.rs`).
/// tungstenite's own buffer holds only its pongs and close frames, and it
/// hands them to the same socket buffer at once.
pub const WRITE_BUFFER: usize = 16 * 1024;

/// The kernel's send buffer for every WebSocket, instead of Linux's
/// autotuning, which lets one socket buffer up to `tcp_wmem`'s maximum
/// (4 MiB by default). A fixed, modest buffer keeps what waits for a slow
/// client in its bounded queue, where the slow-consumer policy sees it,
/// rather than in kernel memory that no policy bounds; it keeps a ping from
/// queueing behind megabytes; and it makes the server behave the same on
/// every host. 128 KiB (the kernel doubles it) still holds a burst of over
/// a thousand chat frames per connection.
pub const SEND_BUFFER: usize = 128 * 1024;

pub fn websocket_config(max_frame: usize) -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.read_buffer_size = READ_BUFFER;
    c.write_buffer_size = WRITE_BUFFER;
    c.max_frame_size = Some(max_frame);
    c.max_message_size = Some(max_frame);
    c
}
