//! How a connection's life ended: closed by us for a typed reason of the
//! contract (`Disconnect`), or ended by the client or the network.

use hub_core::Disconnect;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// We close, with this reason and its close code.
    Closed(Disconnect),
    /// The client sent a close frame.
    ClientClosed,
    /// The TCP connection ended without a closing handshake.
    ClientVanished,
    /// The client broke the WebSocket protocol.
    ProtocolError,
    /// Reading or writing the socket failed.
    SocketError,
}

impl Ended {
    /// The `reason` in the connection's close log line.
    pub fn reason(self) -> &'static str {
        match self {
            Ended::Closed(d) => d.reason(),
            Ended::ClientClosed => "client closed",
            Ended::ClientVanished => "client went away without closing",
            Ended::ProtocolError => "protocol error",
            Ended::SocketError => "socket error",
        }
    }
}
