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

/// The `"pad"` every push's body carries (about 100 bytes in all).
const PUSH_PAD: usize = 64;

/// The message body of a push: its send time `t` (wall-clock ns, read
/// back by the receivers) and `pad` bytes of padding.
fn push_inner(t: u64, pad: usize) -> String {
    format!(r#"{{"t":{t},"pad":"{}"}}"#, "x".repeat(pad))
}

/// The frame wshub writes to a member of `group` for message number `n`
/// (the `n`th message the process and the group stream have numbered, both
/// from 1) carrying `body`, as `protocol::ServerFrame::message_json`
/// encodes it: the node id is 16 hex digits, the epoch 8 characters, `ts`
/// milliseconds.
pub(crate) fn wshub_group_frame(node: u64, n: u64, group: &str, body: &str, ts_ms: u64) -> String {
    format!(
        r#"{{"type":"message","id":"{node:016x}-{n}","group":"{group}","body":{body},"ts":{ts_ms},"stream":"group:{group}","epoch":"AbCd1234","seq":{n}}}"#
    )
}

/// The request body of push number `n` (from 1) to `group`, sent at `t`
/// (wall-clock ns): `{"body":{"t":..,"pad":".."}}`.
///
/// wshub wraps the body in its envelope; a baseline (`like_wshub`) sends
/// the request body as it came. So a baseline's body is padded to look the
/// same to the load as wshub's frame for the unpadded push
/// (`wshub_group_frame` with the same `n` and a send time in `ts`): a
/// leading `"lead"` field puts its `"t":` at the same byte as in wshub's
/// frame, where the load's search for it stops (`receiver::find_t`), and
/// the pad makes it exactly as long, header included. The load then does
/// the same work per frame whichever server it reads. With pushes in
/// flight together wshub may number them in another order; the frames
/// then differ only where the number gains a digit (push 10, 100, ...),
/// by a byte or two on those few pushes.
pub(crate) fn push_body(t: u64, group: &str, n: u64, like_wshub: bool) -> String {
    let inner = push_inner(t, PUSH_PAD);
    if !like_wshub {
        return format!(r#"{{"body":{inner}}}"#);
    }
    let wshub = wshub_group_frame(0, n, group, &inner, t / 1_000_000);
    let padded = |lead: usize, pad: usize| {
        format!(
            r#"{{"lead":"{}","body":{}}}"#,
            "x".repeat(lead),
            push_inner(t, pad)
        )
    };
    let lead = stamp_at(&wshub).saturating_sub(stamp_at(&padded(0, 0)));
    let pad = wshub.len().saturating_sub(padded(lead, 0).len());
    padded(lead, pad)
}

/// Where the `"t":` of a push's body is in `frame`.
fn stamp_at(frame: &str) -> usize {
    frame.find(r#""t":"#).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wshub_frame_is_spelled_as_the_server_writes_it() {
        // The frame issue 13 quotes from a running wshub.
        let frame = wshub_group_frame(0x1a2b3c4d5e6f7a8b, 123, "bench", "<body>", 1764655589123);
        assert_eq!(
            frame,
            r#"{"type":"message","id":"1a2b3c4d5e6f7a8b-123","group":"bench","body":<body>,"ts":1764655589123,"stream":"group:bench","epoch":"AbCd1234","seq":123}"#
        );
    }

    #[test]
    fn a_baseline_push_is_padded_to_wshubs_frame_length() {
        let t = 1_764_655_589_123_456_789;
        let plain = push_body(t, "bench", 7, false);
        assert_eq!(plain.len(), 107);
        for n in [1, 9, 10, 99, 100, 12_345] {
            let inner = push_inner(t, PUSH_PAD);
            let wshub = wshub_group_frame(u64::MAX, n, "bench", &inner, t / 1_000_000);
            let padded = push_body(t, "bench", n, true);
            assert_eq!(padded.len(), wshub.len(), "push {n}");
            assert_eq!(stamp_at(&padded), stamp_at(&wshub), "push {n}");
            assert!(stamp_at(&padded) > 50, "push {n}");
            let v: serde_json::Value = serde_json::from_str(&padded).unwrap();
            assert_eq!(v["body"]["t"], t);
        }
        // About 230 bytes: a frame header of 4 bytes either way.
        assert!((126..=u16::MAX as usize).contains(&push_body(t, "bench", 1, true).len()));
    }

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
