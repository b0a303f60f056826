//! Who may do what (PROTOCOL.md §1, §3, §5): joining a group, publishing to
//! it, and the caps on connections and groups per user. Pure decisions over
//! values the caller passes in, so each rule is tested on its own; `Node`
//! applies them.

use protocol::{ErrorCode, GroupId};

use crate::session::Session;

/// The permission settings of a node.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Dev mode (`--insecure-dev`): any user may join any group. Default off.
    pub open: bool,
    /// `--public-group` prefixes: groups any user may join. Default none.
    pub public_groups: Vec<String>,
}

/// Why something a client or backend asked for was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `publish` to a group the user is not in.
    NotAMember(GroupId),
    /// `join` of a group that is neither in the token nor public.
    MayNotJoin(GroupId),
    /// The user is already in `--max-user-groups` groups.
    TooManyGroups { max: usize },
    /// The user already holds `--max-user-connections` connections.
    TooManyConnections { max: usize },
}

impl Refusal {
    /// The contract's error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::NotAMember(_) | Refusal::MayNotJoin(_) => ErrorCode::Forbidden,
            Refusal::TooManyGroups { .. } => ErrorCode::LimitExceeded,
            Refusal::TooManyConnections { .. } => ErrorCode::RateLimited,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::NotAMember(g) => format!("not a member of group {g}"),
            Refusal::MayNotJoin(g) => {
                format!("may not join group {g}: not in the token and not public")
            }
            Refusal::TooManyGroups { max } => format!("a user may belong to at most {max} groups"),
            Refusal::TooManyConnections { max } => {
                format!("a user may hold at most {max} connections")
            }
        }
    }
}

impl Rules {
    /// Whether `group` matches a `--public-group` prefix.
    pub fn is_public(&self, group: &GroupId) -> bool {
        self.public_groups
            .iter()
            .any(|p| !p.is_empty() && group.as_str().starts_with(p.as_str()))
    }

    /// May the connection of `session` join `group`? A member may always
    /// join again (joins are idempotent).
    pub fn may_join(
        &self,
        session: &Session,
        group: &GroupId,
        is_member: bool,
    ) -> Result<(), Refusal> {
        if self.open || is_member || session.token_groups.contains(group) || self.is_public(group) {
            Ok(())
        } else {
            Err(Refusal::MayNotJoin(group.clone()))
        }
    }

    /// May a user publish to `group`? Only its members may.
    pub fn may_publish(&self, group: &GroupId, is_member: bool) -> Result<(), Refusal> {
        if is_member {
            Ok(())
        } else {
            Err(Refusal::NotAMember(group.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::UserId;

    fn g(s: &str) -> GroupId {
        GroupId::new(s).unwrap()
    }

    fn session(groups: &[&str]) -> Session {
        Session {
            token_groups: groups.iter().map(|s| g(s)).collect(),
            ..Session::new(UserId::new("u").unwrap())
        }
    }

    #[test]
    fn joining_needs_the_token_a_public_prefix_or_dev_mode() {
        let rules = Rules {
            open: false,
            public_groups: vec!["lobby".into(), String::new()],
        };
        let s = session(&["team"]);
        assert_eq!(rules.may_join(&s, &g("team"), false), Ok(()));
        assert_eq!(rules.may_join(&s, &g("lobby-2"), false), Ok(()));
        assert_eq!(rules.may_join(&s, &g("secret"), true), Ok(()));
        // An empty prefix would make every group public; it is ignored.
        let refused = rules.may_join(&s, &g("secret"), false).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::Forbidden);
        let open = Rules {
            open: true,
            ..Rules::default()
        };
        assert_eq!(open.may_join(&s, &g("secret"), false), Ok(()));
    }

    #[test]
    fn only_members_publish() {
        let rules = Rules::default();
        assert_eq!(rules.may_publish(&g("x"), true), Ok(()));
        let refused = rules.may_publish(&g("x"), false).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::Forbidden);
        assert_eq!(refused.message(), "not a member of group x");
    }

    #[test]
    fn caps_have_their_own_codes() {
        assert_eq!(
            Refusal::TooManyGroups { max: 2 }.code(),
            ErrorCode::LimitExceeded
        );
        assert_eq!(
            Refusal::TooManyConnections { max: 2 }.code(),
            ErrorCode::RateLimited
        );
    }
}
