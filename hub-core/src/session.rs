//! Who is on the other end of a connection, as decided at the upgrade from
//! the token (or, in dev mode, the `userId` parameter).

use std::time::Instant;

use protocol::{GroupId, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub user: UserId,
    /// The token's `groups` claim: joined at connect, and the groups this
    /// connection may join later even when they are not public.
    pub token_groups: Vec<GroupId>,
    /// When the token expires; `None` in dev mode without a token.
    pub expires_at: Option<Instant>,
}

impl Session {
    pub fn new(user: UserId) -> Self {
        Self {
            user,
            token_groups: Vec::new(),
            expires_at: None,
        }
    }
}
