//! Stream names (PROTOCOL.md §10). A connection names its own inbox plain
//! `inbox`, because only its owner reads it; so a wire name is relative to
//! its reader, parsing takes the reader, and the typed name always says
//! whose inbox it is.

use std::fmt;

use protocol::{GroupId, IdError, UserId};

/// One stream of §10: a user's inbox, a group, or the broadcast stream.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamName {
    /// Messages to the user and the user's own sent direct messages.
    Inbox(UserId),
    /// Messages published or pushed to the group.
    Group(GroupId),
    /// Broadcasts.
    All,
}

/// Wire prefix of a group stream; what follows it is the group id.
const GROUP_PREFIX: &str = "group:";

impl StreamName {
    /// The stream a connection of `reader` means by `wire`: `inbox` is the
    /// reader's own inbox (no wire name reaches anyone else's), `group:{id}`
    /// a group, `all` the broadcasts. Whether the reader may read it is the
    /// caller's question (membership is not known here).
    pub fn parse(wire: &str, reader: &UserId) -> Result<StreamName, StreamNameError> {
        match wire {
            "inbox" => Ok(StreamName::Inbox(reader.clone())),
            "all" => Ok(StreamName::All),
            _ => match wire.strip_prefix(GROUP_PREFIX) {
                // Group ids may hold `:` themselves: everything after the
                // first prefix is the id.
                Some(id) => GroupId::new(id)
                    .map(StreamName::Group)
                    .map_err(StreamNameError::BadGroup),
                None => Err(StreamNameError::Unknown),
            },
        }
    }

    /// A number for this stream, the same for every call in this process
    /// and different for different streams but with negligible odds: what a
    /// frame's `Tag` carries instead of the name. Seeded at random once per
    /// process, so names cannot be picked to collide.
    ///
    /// Under one numbering (`epoch`): a stream renumbered (forgotten after
    /// its ttl, or lost with a cluster's store) has another key, so what a
    /// connection marked as had in the old numbering (`Connection::cover`)
    /// never hides a message of the new one.
    pub fn key_at(&self, epoch: &super::Epoch) -> u64 {
        use std::hash::BuildHasher;
        static SEED: std::sync::OnceLock<foldhash::quality::RandomState> =
            std::sync::OnceLock::new();
        SEED.get_or_init(Default::default)
            .hash_one((self, epoch.as_str()))
    }

    /// True when this is `user`'s inbox.
    pub fn is_inbox_of(&self, user: &UserId) -> bool {
        matches!(self, StreamName::Inbox(owner) if owner == user)
    }
}

/// The wire name, as the stream's readers see it: every inbox is `inbox`,
/// since its owner is its only reader.
impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamName::Inbox(_) => f.write_str("inbox"),
            StreamName::Group(g) => write!(f, "{GROUP_PREFIX}{g}"),
            StreamName::All => f.write_str("all"),
        }
    }
}

/// Unlike the wire name, says whose inbox: logs and test failures need it.
impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamName::Inbox(u) => write!(f, "inbox({u})"),
            other => write!(f, "{other}"),
        }
    }
}

/// Why a wire name names no stream. A `resume` answers `false` for it
/// rather than an error (§10: `recovered` names every stream the frame named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamNameError {
    /// Not `inbox`, `all` or `group:{id}`.
    Unknown,
    /// `group:` followed by something that is not a group id.
    BadGroup(IdError),
}

impl fmt::Display for StreamNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamNameError::Unknown => f.write_str("unknown stream name"),
            StreamNameError::BadGroup(e) => write!(f, "bad group in stream name: {e}"),
        }
    }
}

impl std::error::Error for StreamNameError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(s: &str) -> UserId {
        UserId::new(s).expect("valid test id")
    }

    #[test]
    fn inbox_is_the_readers_own() {
        let me = user("42");
        let name = StreamName::parse("inbox", &me).expect("inbox parses");
        assert_eq!(name, StreamName::Inbox(me.clone()));
        assert!(name.is_inbox_of(&me));
        assert!(!name.is_inbox_of(&user("7")));
        assert_eq!(name.to_string(), "inbox");
    }

    #[test]
    fn group_and_all_round_trip() {
        let me = user("42");
        for wire in ["all", "group:g1", "group:a:b", "group:x@y.z-_"] {
            let name = StreamName::parse(wire, &me).expect("valid wire name");
            assert_eq!(name.to_string(), wire);
            assert_eq!(StreamName::parse(&name.to_string(), &me), Ok(name));
        }
        assert_eq!(
            StreamName::parse("group:a:b", &me),
            Ok(StreamName::Group(GroupId::new("a:b").expect("valid id")))
        );
    }

    #[test]
    fn anything_else_is_no_stream() {
        let me = user("42");
        for wire in ["", "Inbox", "inbox:42", "ALL", "groups:g", "group", "g1"] {
            assert_eq!(
                StreamName::parse(wire, &me),
                Err(StreamNameError::Unknown),
                "{wire:?}"
            );
        }
        assert_eq!(
            StreamName::parse("group:", &me),
            Err(StreamNameError::BadGroup(IdError::Empty))
        );
        assert_eq!(
            StreamName::parse("group:a b", &me),
            Err(StreamNameError::BadGroup(IdError::BadChar))
        );
        let long = format!("group:{}", "x".repeat(129));
        assert_eq!(
            StreamName::parse(&long, &me),
            Err(StreamNameError::BadGroup(IdError::TooLong))
        );
    }

    #[test]
    fn debug_names_the_owner() {
        assert_eq!(format!("{:?}", StreamName::Inbox(user("42"))), "inbox(42)");
        assert_eq!(format!("{:?}", StreamName::All), "all");
    }
}
