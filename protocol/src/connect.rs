//! The query of `GET /ws` (PROTOCOL.md §2, §10): `token`, `userId` and
//! `resume`, read the way the server reads them. Pure parsing, so the fuzz
//! targets can feed it anything.

use crate::ids::{IdError, UserId};

/// What the `/ws` query carries. Parameters are percent-decoded; the last
/// one of a name wins; other parameters are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectQuery {
    /// The connection token; an empty `token=` counts as absent (so an
    /// `Authorization` header can still carry it).
    pub token: Option<String>,
    /// `userId`, when present: it must equal the token's `sub`.
    pub user_id: Option<UserId>,
    /// `resume=1`: hold delivery until the client's first frame.
    pub resume: bool,
}

impl ConnectQuery {
    /// Reads the query string of a `/ws` request (without the `?`). A
    /// `userId` that is not a valid id is an error (400).
    pub fn parse(query: Option<&str>) -> Result<ConnectQuery, IdError> {
        let mut token = None;
        let mut user_param = None;
        let mut resume = false;
        if let Some(q) = query {
            for (k, v) in form_urlencoded::parse(q.as_bytes()) {
                match &*k {
                    "token" if !v.is_empty() => token = Some(v.into_owned()),
                    "userId" => user_param = Some(v.into_owned()),
                    "resume" => resume = v == "1",
                    _ => {}
                }
            }
        }
        let user_id = user_param.as_deref().map(UserId::new).transpose()?;
        Ok(ConnectQuery {
            token,
            user_id,
            resume,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_token_user_and_resume() {
        let q = ConnectQuery::parse(Some("userId=42&token=T&resume=1")).unwrap();
        assert_eq!(q.token.as_deref(), Some("T"));
        assert_eq!(q.user_id.as_ref().map(|u| u.as_str()), Some("42"));
        assert!(q.resume);
        assert_eq!(ConnectQuery::parse(None).unwrap(), ConnectQuery::default());
        let q = ConnectQuery::parse(Some("token=&resume=true&x=y")).unwrap();
        assert_eq!((q.token, q.resume), (None, false));
        let q = ConnectQuery::parse(Some("token=a%2Bb&token=")).unwrap();
        assert_eq!(q.token.as_deref(), Some("a+b"));
        assert!(ConnectQuery::parse(Some("userId=a%20b")).is_err());
        assert!(ConnectQuery::parse(Some("userId=")).is_err());
    }
}
