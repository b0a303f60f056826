//! Why the server closes a connection: one typed value per reason, with the
//! WebSocket close code and reason text it goes out with (PROTOCOL.md §5).

/// A reason to close one connection. A new one goes into `Disconnect::ALL`
/// as well, in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// Its outbound queue was full when a message arrived (1013).
    SlowConsumer,
    /// Removed through the server API (1008).
    Kicked,
    /// Its token expired while connected (1008).
    TokenExpired,
    /// Kept sending past the rate limit (1008).
    RateLimited,
    /// Sent a frame over `--max-frame` (1009).
    TooLarge,
    /// Sent a text frame that is not UTF-8 (1007, RFC 6455 §8.1: the
    /// frame cannot be read past, so the connection cannot stay).
    NotUtf8,
    /// Showed no sign of life for two heartbeat intervals (1001).
    HeartbeatTimeout,
    /// The server is shutting down (1001).
    Shutdown,
}

impl Disconnect {
    /// Every reason, each at its own `as usize`: a queue keeps its close
    /// reason as that number in one byte (queue.rs).
    pub(crate) const ALL: [Disconnect; 8] = [
        Disconnect::SlowConsumer,
        Disconnect::Kicked,
        Disconnect::TokenExpired,
        Disconnect::RateLimited,
        Disconnect::TooLarge,
        Disconnect::NotUtf8,
        Disconnect::HeartbeatTimeout,
        Disconnect::Shutdown,
    ];

    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            Disconnect::SlowConsumer => 1013,
            Disconnect::Kicked | Disconnect::TokenExpired | Disconnect::RateLimited => 1008,
            Disconnect::TooLarge => 1009,
            Disconnect::NotUtf8 => 1007,
            Disconnect::HeartbeatTimeout | Disconnect::Shutdown => 1001,
        }
    }

    /// The close reason text (also the `reason` in logs).
    pub fn reason(self) -> &'static str {
        match self {
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::Kicked => "kicked",
            Disconnect::TokenExpired => "token expired",
            Disconnect::RateLimited => "rate_limited",
            Disconnect::TooLarge => "too_large",
            Disconnect::NotUtf8 => "invalid UTF-8",
            Disconnect::HeartbeatTimeout => "heartbeat timeout",
            Disconnect::Shutdown => "server shutting down",
        }
    }
}
