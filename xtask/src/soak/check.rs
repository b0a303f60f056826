//! The exactly-once checker of one client on one stream (PROTOCOL.md §10).
//!
//! A [`Seg`] is what the client has of a stream: the epoch, the last seq
//! it holds with nothing missing below it, the seqs it skipped (holes: a
//! message arrived past them), and the seqs of its own sends and publishes
//! whose acks came before the messages below them (a cluster server holds
//! an ack until its message came back over pub/sub, but for at most 2 s,
//! so on a failing link an ack can still overtake another publisher's
//! message on its way through Redis). A
//! replay of the client's own message after a resume is not a duplicate:
//! live, that message only came back as the ack.

use std::collections::BTreeSet;

/// Most holes one segment records (a bug could open millions).
const MAX_HOLES: usize = 10_000;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Seg {
    pub epoch: String,
    pub last: u64,
    pub holes: BTreeSet<u64>,
    pub ahead: BTreeSet<u64>,
    /// While a resume's replay runs: the client's own acked seqs past the
    /// position it resumed from. The replay sends them as messages (the new
    /// connection is not their sender), possibly after the seqs below them
    /// have already carried `last` past them (`absorb`): not duplicates.
    pub replaying: BTreeSet<u64>,
}

/// What one frame did to a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The next seq (or an own message replayed): fine.
    InOrder,
    /// Past the next seq: the seqs between are now holes.
    Skipped(u64),
    /// Fills a hole: it came out of order.
    OutOfOrder,
    /// At or below the last seq and not a hole: a duplicate.
    Duplicate,
    /// Another epoch than the segment's.
    OtherEpoch,
}

impl Seg {
    pub fn at(epoch: &str, seq: u64) -> Self {
        Seg {
            epoch: epoch.to_owned(),
            last: seq,
            ..Seg::default()
        }
    }

    fn absorb(&mut self) {
        while self.ahead.remove(&(self.last + 1)) {
            self.last += 1;
        }
    }

    /// A `message` frame of this stream.
    pub fn message(&mut self, epoch: &str, seq: u64) -> Seen {
        if epoch != self.epoch {
            return Seen::OtherEpoch;
        }
        if seq <= self.last {
            return if self.holes.remove(&seq) {
                Seen::OutOfOrder
            } else if self.replaying.remove(&seq) {
                Seen::InOrder
            } else {
                Seen::Duplicate
            };
        }
        self.replaying.remove(&seq);
        if self.ahead.remove(&seq) {
            // Our own message, replayed after a resume; whatever is below it
            // and missing is still to come (or a hole when something past
            // it comes).
            if seq == self.last + 1 {
                self.last = seq;
                self.absorb();
                return Seen::InOrder;
            }
        }
        let mut skipped = 0;
        for s in self.last + 1..seq {
            if !self.ahead.remove(&s) {
                skipped += 1;
                if self.holes.len() < MAX_HOLES {
                    self.holes.insert(s);
                }
            }
        }
        self.last = seq;
        self.absorb();
        if skipped == 0 {
            Seen::InOrder
        } else {
            Seen::Skipped(skipped)
        }
    }

    /// A resume from `last` is on its way: own seqs acked past it may come
    /// back in its replay.
    pub fn resuming(&mut self) {
        self.replaying = self.ahead.clone();
    }

    /// The resume's ack came: its replay is over.
    pub fn resumed(&mut self) {
        self.replaying.clear();
    }

    /// The ack of the client's own send or publish, placed at `seq`.
    /// False when it cannot be (another epoch, or a seq already received).
    pub fn own(&mut self, epoch: &str, seq: u64) -> bool {
        if epoch != self.epoch {
            return false;
        }
        if seq <= self.last {
            return self.holes.remove(&seq);
        }
        self.ahead.insert(seq);
        self.absorb();
        true
    }

    /// Seqs up to `top` the client never got: holes, and what lies between
    /// its last seq and `top` that is not its own.
    pub fn missing_to(&self, top: u64) -> u64 {
        let tail = (self.last + 1..=top)
            .filter(|s| !self.ahead.contains(s))
            .count() as u64;
        self.holes.len() as u64 + tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_messages_and_own_acks_advance() {
        let mut s = Seg::at("E", 4);
        assert_eq!(s.message("E", 5), Seen::InOrder);
        assert!(s.own("E", 6));
        assert_eq!(s.last, 6);
        assert_eq!(s.message("E", 7), Seen::InOrder);
        assert_eq!(s.missing_to(7), 0);
    }

    #[test]
    fn an_ack_may_overtake_the_message_below_it() {
        let mut s = Seg::at("E", 0);
        assert!(s.own("E", 2));
        assert_eq!(s.last, 0);
        assert_eq!(s.message("E", 1), Seen::InOrder);
        assert_eq!(s.last, 2);
        assert_eq!(s.message("E", 3), Seen::InOrder);
        // And a message past an own ack that is still ahead skips nothing.
        assert!(s.own("E", 5));
        assert_eq!(s.message("E", 6), Seen::Skipped(1));
        assert_eq!(s.holes, BTreeSet::from([4]));
        assert_eq!(s.missing_to(6), 1);
    }

    #[test]
    fn duplicates_gaps_and_reorders_are_told_apart() {
        let mut s = Seg::at("E", 0);
        assert_eq!(s.message("E", 1), Seen::InOrder);
        assert_eq!(s.message("E", 1), Seen::Duplicate);
        assert_eq!(s.message("E", 4), Seen::Skipped(2));
        assert_eq!(s.message("E", 2), Seen::OutOfOrder);
        assert_eq!(s.message("E", 2), Seen::Duplicate);
        assert_eq!(s.message("X", 5), Seen::OtherEpoch);
        // 3 never came; 5 and 6 are missing at the end too.
        assert_eq!(s.missing_to(6), 3);
        // An ack for a seq already received cannot be placed.
        assert!(!s.own("E", 1));
    }

    #[test]
    fn an_own_message_replayed_after_a_resume_is_not_a_duplicate() {
        let mut s = Seg::at("E", 3);
        assert!(s.own("E", 5));
        // The socket drops; the resume from 3 replays 4 and 5. After 4 the
        // ack of 5 has carried `last` to 5: the replayed 5 is no repeat.
        s.resuming();
        assert_eq!(s.message("E", 4), Seen::InOrder);
        assert_eq!(s.last, 5);
        assert_eq!(s.message("E", 5), Seen::InOrder);
        s.resumed();
        // Once the replay is over, it would be.
        assert_eq!(s.message("E", 5), Seen::Duplicate);
        let mut t = Seg::at("E", 3);
        assert!(t.own("E", 4));
        assert_eq!(t.last, 4);
        // Replayed again only if resumed from below it: then it is a repeat.
        assert_eq!(t.message("E", 4), Seen::Duplicate);
    }
}
