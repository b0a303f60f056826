//! Epochs are derived, not stored, so a stream nobody has written to costs
//! nothing, yet reports now the epoch its first message will carry.
//!
//! A stream's epoch is a keyed hash of (its name, its incarnation number),
//! under a key drawn at random when the process starts: opaque, short, and
//! different after a restart. Incarnation numbers come from a fixed-size
//! table of maxima (a count-min sketch that keeps maxima instead of sums):
//! when a stream is forgotten, the cells of its name are raised above its
//! incarnation, so the next incarnation of that name gets a larger number
//! and a new epoch, with nothing kept per name. The cost of keeping nothing
//! per name: a name whose cells were all raised by other forgotten names
//! sees its epoch change while it has no messages. A resume from the old
//! seq-0 position then answers `false` though nothing was missed. That is
//! safe (nothing is ever recovered wrongly) and rare: with 4 rows of 16384
//! cells, the number of every name moves about once per W·ln W ≈ 160 000
//! forgotten streams.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use super::StreamName;

/// Characters in an epoch.
pub const EPOCH_LEN: usize = 8;

/// URL- and JSON-safe, so an epoch never needs escaping anywhere.
const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A stream's epoch: 8 alphanumeric characters (about 47 bits), inline and
/// `Copy`, so a position costs no allocation on every append and ack.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch([u8; EPOCH_LEN]);

impl Epoch {
    fn from_hash(mut h: u64) -> Epoch {
        let mut out = [0u8; EPOCH_LEN];
        for b in &mut out {
            *b = ALPHABET[(h % 62) as usize];
            h /= 62;
        }
        Epoch(out)
    }

    /// An epoch as a client sends it back. `None` for anything this hub
    /// never hands out: such a position matches no stream, which a resume
    /// answers `false`.
    pub fn parse(s: &str) -> Option<Epoch> {
        let bytes: [u8; EPOCH_LEN] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_alphanumeric)
            .then_some(Epoch(bytes))
    }

    pub fn as_str(&self) -> &str {
        // ASCII by construction (`from_hash`, `parse`).
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl PartialEq<str> for Epoch {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

/// The per-process key of epochs. SipHash with random keys (std's
/// `RandomState`), so epochs neither repeat across restarts nor reveal
/// anything about each other.
#[derive(Debug, Default)]
pub(super) struct EpochKeys(std::hash::RandomState);

impl EpochKeys {
    pub(super) fn epoch(&self, name: &StreamName, incarnation: u32) -> Epoch {
        Epoch::from_hash(self.0.hash_one((name, incarnation)))
    }
}

const ROWS: usize = 4;
const WIDTH_BITS: u32 = 14;
const WIDTH: usize = 1 << WIDTH_BITS;

/// The incarnation number of every name, kept in `ROWS × WIDTH` cells
/// (256 KiB) whatever the number of streams. The number of a name is the
/// least of its cells; cells only grow. Atomic cells, so one table serves
/// every shard: the reads and raises for one name all happen under that
/// name's shard lock, which orders them, and raises by other names only
/// make numbers larger, which is always safe.
pub(super) struct Incarnations(Box<[AtomicU32]>);

impl Default for Incarnations {
    fn default() -> Self {
        Incarnations((0..ROWS * WIDTH).map(|_| AtomicU32::new(0)).collect())
    }
}

impl fmt::Debug for Incarnations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incarnations")
            .field("cells", &self.0.len())
            .finish()
    }
}

impl Incarnations {
    /// `h` is a hash of the name; each row takes its own 14 bits of it.
    fn cells(&self, h: u64) -> impl Iterator<Item = &AtomicU32> {
        (0..ROWS).map(move |row| {
            let column = (h >> (row as u32 * WIDTH_BITS)) as usize & (WIDTH - 1);
            &self.0[row * WIDTH + column]
        })
    }

    /// The incarnation number a new stream of this name gets now.
    pub(super) fn current(&self, h: u64) -> u32 {
        self.cells(h).map(|c| c.load(Relaxed)).min().unwrap_or(0)
    }

    /// A stream of incarnation `incarnation` was forgotten: every later
    /// stream of that name numbers above it. Saturates at `u32::MAX`, four
    /// billion incarnations of one name, which no process lives to see.
    pub(super) fn retire(&self, h: u64, incarnation: u32) {
        let next = incarnation.saturating_add(1);
        for cell in self.cells(h) {
            cell.fetch_max(next, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_short_alphanumeric_and_parse_back() {
        for h in [0, 1, 61, 62, u64::MAX, 0x1234_5678_9abc_def0] {
            let e = Epoch::from_hash(h);
            assert_eq!(e.as_str().len(), EPOCH_LEN);
            assert!(e.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
            assert_eq!(Epoch::parse(e.as_str()), Some(e));
            assert!(e == *e.as_str());
        }
    }

    #[test]
    fn anything_else_is_no_epoch() {
        for s in ["", "abc", "abcdefghi", "abcdefg-", "abcdéfg", "abcdefg\n"] {
            assert_eq!(Epoch::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn epochs_depend_on_name_incarnation_and_process_key() {
        let keys = EpochKeys::default();
        let other_process = EpochKeys::default();
        let g = StreamName::All;
        assert_eq!(keys.epoch(&g, 0), keys.epoch(&g, 0));
        assert_ne!(keys.epoch(&g, 0), keys.epoch(&g, 1));
        assert_ne!(keys.epoch(&g, 0), other_process.epoch(&g, 0));
        let inbox = StreamName::Inbox(protocol::UserId::new("all").expect("valid id"));
        assert_ne!(keys.epoch(&g, 0), keys.epoch(&inbox, 0));
    }

    #[test]
    fn a_retired_incarnation_is_never_handed_out_again() {
        let inc = Incarnations::default();
        let h = 0xdead_beef_cafe_f00d;
        assert_eq!(inc.current(h), 0);
        for k in 0..100 {
            assert_eq!(inc.current(h), k);
            inc.retire(h, k);
            assert_eq!(inc.current(h), k + 1);
        }
        // Retiring an older incarnation again never lowers the number.
        inc.retire(h, 3);
        assert_eq!(inc.current(h), 100);
    }

    #[test]
    fn one_shared_cell_does_not_move_a_name() {
        let inc = Incarnations::default();
        let h: u64 = 0x0001_0002_0003_0004;
        // Same column as `h` in row 0 only.
        let neighbour = h
            ^ (0x3fff << WIDTH_BITS)
            ^ (0x3fff << (2 * WIDTH_BITS))
            ^ (0x3fff << (3 * WIDTH_BITS));
        inc.retire(neighbour, 0);
        assert_eq!(inc.current(neighbour), 1);
        assert_eq!(inc.current(h), 0);
    }
}
