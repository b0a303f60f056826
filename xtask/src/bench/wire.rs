//! What the load side puts on the wire and stamps it with: client frames
//! and the wall-clock send time, shared by the connection setup
//! (`load.rs`), the run loop (`receiver.rs`) and the API pusher
//! (`scenarios.rs`), so all of them agree on the clock.

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock nanoseconds: the send time carried in message bodies. It
/// has to be the wall clock, because the kernel's receive timestamps it is
/// compared with are.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A client text frame, masked with a zero key (RFC 6455 requires a mask,
/// any key will do, and a zero key leaves the payload as it is).
pub(crate) fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(payload.len() + 14);
    f.push(0x81);
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= usize::from(u16::MAX) => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_use_the_shortest_form() {
        let short = masked_text_frame(b"hi");
        assert_eq!(short[..2], [0x81, 0x80 | 2]);
        assert_eq!(short[2..6], [0, 0, 0, 0]);
        assert_eq!(&short[6..], b"hi");
        let mid = masked_text_frame(&[b'x'; 300]);
        assert_eq!(mid[..4], [0x81, 0x80 | 126, 0x01, 0x2c]);
        assert_eq!(mid.len(), 4 + 4 + 300);
        let long = masked_text_frame(&vec![b'x'; 70_000]);
        assert_eq!(long[1], 0x80 | 127);
        assert_eq!(long[2..10], 70_000u64.to_be_bytes());
    }
}
