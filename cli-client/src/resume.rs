//! Reconnecting without missing messages (PROTOCOL.md §10): the last
//! position seen in each stream, the `resume` frame sent after a reconnect,
//! and the backoff between attempts.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use protocol::{Positions, ServerFrame, StreamPosition};

/// The last position seen in every stream the connection reads.
#[derive(Default, Debug)]
pub struct Streams {
    last: Positions,
    /// The positions of the latest `welcome`, where a stream that could not
    /// be recovered starts again.
    welcome: Positions,
}

impl Streams {
    /// A `welcome` arrived with the positions of `streams`. Returns the
    /// positions to resume from: those seen before, for the streams this
    /// connection reads (nothing on the first connection). A stream not
    /// seen before starts at the welcome's position; one the connection no
    /// longer reads (a group left) is forgotten.
    pub fn welcomed(&mut self, streams: &Positions) -> Positions {
        self.last.retain(|name, _| streams.contains_key(name));
        let resume = self.last.clone();
        for (name, pos) in streams {
            self.last.entry(name.clone()).or_insert_with(|| pos.clone());
        }
        self.welcome = streams.clone();
        resume
    }

    /// Notes the position a frame carries (a message, or an ack placed in a
    /// stream). For the ack of a `resume`, returns the streams that could
    /// not be recovered, which start again from the welcome's position.
    pub fn saw(&mut self, frame: &ServerFrame) -> Vec<String> {
        match frame {
            ServerFrame::Message(m) => {
                if let (Some(s), Some(e), Some(q)) = (&m.stream, &m.epoch, m.seq) {
                    self.advance(s, e, q);
                }
                Vec::new()
            }
            ServerFrame::Ack {
                stream: Some(s),
                epoch: Some(e),
                seq: Some(q),
                ..
            } => {
                self.advance(s, e, *q);
                Vec::new()
            }
            ServerFrame::Ack {
                recovered: Some(recovered),
                ..
            } => {
                let lost: Vec<String> = recovered
                    .iter()
                    .filter(|(_, ok)| !**ok)
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in &lost {
                    self.restart(name);
                }
                lost
            }
            _ => Vec::new(),
        }
    }

    /// Where `stream` is now, if known.
    #[cfg(test)]
    pub fn position(&self, stream: &str) -> Option<&StreamPosition> {
        self.last.get(stream)
    }

    fn advance(&mut self, stream: &str, epoch: &str, seq: u64) {
        match self.last.get_mut(stream) {
            // Same numbering: only forward (an ack may trail a message).
            Some(p) if p.epoch == epoch => p.seq = p.seq.max(seq),
            // A new numbering (or a new stream): start from here.
            _ => {
                self.last.insert(
                    stream.to_owned(),
                    StreamPosition {
                        epoch: epoch.to_owned(),
                        seq,
                    },
                );
            }
        }
    }

    /// A stream that could not be recovered goes on from the welcome's
    /// position, unless a live message already moved it past that.
    fn restart(&mut self, stream: &str) {
        let Some(w) = self.welcome.get(stream) else {
            self.last.remove(stream);
            return;
        };
        let keep = self
            .last
            .get(stream)
            .is_some_and(|p| p.epoch == w.epoch && p.seq >= w.seq);
        if !keep {
            self.last.insert(stream.to_owned(), w.clone());
        }
    }
}

/// The line that reports a stream that could not be recovered.
pub fn lost_line(stream: &str) -> String {
    format!("stream {stream} could not be recovered; messages may be missing")
}

/// Exponential backoff with jitter: about 200 ms, doubling up to about 5 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

const FIRST: Duration = Duration::from_millis(200);
const CAP: Duration = Duration::from_secs(5);

impl Default for Backoff {
    fn default() -> Self {
        Self { next: FIRST }
    }
}

impl Backoff {
    /// The wait before the next attempt: the current step, give or take a
    /// quarter, at random.
    pub fn next_wait(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(CAP);
        let quarter = step.as_millis() as u64 / 4;
        let jitter = if quarter == 0 {
            0
        } else {
            random() % (2 * quarter + 1)
        };
        Duration::from_millis(step.as_millis() as u64 - quarter + jitter)
    }

    /// After a successful connection: start small again.
    pub fn reset(&mut self) {
        self.next = FIRST;
    }
}

/// A random number without a dependency: std seeds every `RandomState`
/// from the OS with a per-instance key.
fn random() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(epoch: &str, seq: u64) -> StreamPosition {
        StreamPosition {
            epoch: epoch.into(),
            seq,
        }
    }

    fn frame(json: &str) -> ServerFrame {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn positions_follow_welcome_messages_and_acks() {
        let mut s = Streams::default();
        let welcome: Positions = [("inbox".into(), pos("A", 3)), ("all".into(), pos("B", 0))]
            .into_iter()
            .collect();
        assert!(s.welcomed(&welcome).is_empty());
        assert_eq!(s.position("inbox"), Some(&pos("A", 3)));
        s.saw(&frame(
            r#"{"type":"message","id":"1","body":1,"ts":0,"stream":"inbox","epoch":"A","seq":4}"#,
        ));
        // An ack that trails does not move a stream back.
        s.saw(&frame(
            r#"{"type":"ack","id":"c","delivered":1,"stream":"inbox","epoch":"A","seq":2}"#,
        ));
        s.saw(&frame(
            r#"{"type":"ack","id":"j","stream":"group:g","epoch":"G","seq":7}"#,
        ));
        assert_eq!(s.position("inbox"), Some(&pos("A", 4)));
        assert_eq!(s.position("group:g"), Some(&pos("G", 7)));

        // Reconnect: resume what the new connection reads, from where we were.
        let welcome2: Positions = [
            ("inbox".into(), pos("A", 9)),
            ("all".into(), pos("C", 2)),
            ("group:h".into(), pos("H", 1)),
        ]
        .into_iter()
        .collect();
        let resume = s.welcomed(&welcome2);
        assert_eq!(
            resume,
            [("inbox".into(), pos("A", 4)), ("all".into(), pos("B", 0))]
                .into_iter()
                .collect()
        );
        assert_eq!(s.position("group:g"), None);
        assert_eq!(s.position("group:h"), Some(&pos("H", 1)));
        let lost = s.saw(&frame(
            r#"{"type":"ack","id":"r","recovered":{"inbox":true,"all":false}}"#,
        ));
        assert_eq!(lost, vec!["all".to_owned()]);
        assert_eq!(s.position("all"), Some(&pos("C", 2)));
        assert_eq!(s.position("inbox"), Some(&pos("A", 4)));
    }

    #[test]
    fn backoff_doubles_to_a_cap_with_jitter_and_resets() {
        let mut b = Backoff::default();
        let first = b.next_wait();
        assert!(first >= Duration::from_millis(150) && first <= Duration::from_millis(250));
        let waits: Vec<Duration> = (0..10).map(|_| b.next_wait()).collect();
        assert!(waits.iter().all(|w| *w <= CAP + CAP / 4));
        assert!(waits[9] >= CAP - CAP / 4);
        b.reset();
        assert!(b.next_wait() <= Duration::from_millis(250));
    }
}
