//! `wshub-cli token`: mints a connection token the server accepts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use protocol::{Claims, GroupId, UserId};

use crate::{Common, Failure, Outcome};

pub fn run(common: &Common, user: &str, groups: &[String], ttl: &str) -> Outcome {
    let secret = common
        .secret
        .as_deref()
        .ok_or_else(|| Failure::usage("token needs --secret (or WSHUB_SECRET)"))?;
    let ttl = parse_ttl(ttl)
        .ok_or_else(|| Failure::usage(format!("bad --ttl {ttl:?}: use 90s, 30m, 1h or 7d")))?;
    println!("{}", mint(secret, user, groups, ttl)?);
    Ok(())
}

pub fn mint(secret: &str, user: &str, groups: &[String], ttl: Duration) -> Result<String, Failure> {
    let sub =
        UserId::new(user).map_err(|e| Failure::usage(format!("bad user id {user:?}: {e}")))?;
    let groups = groups
        .iter()
        .filter(|g| !g.is_empty())
        .map(|g| GroupId::new(g).map_err(|e| Failure::usage(format!("bad group id {g:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = Claims {
        sub,
        exp: now + ttl.as_secs(),
        groups,
        nbf: None,
        iat: Some(now),
    };
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| Failure::usage(format!("cannot sign the token: {e}")))
}

/// `90s`, `30m`, `1h`, `7d`, or plain seconds.
pub fn parse_ttl(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60)?,
        "h" => n.checked_mul(3600)?,
        "d" => n.checked_mul(86_400)?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_ttl("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_ttl("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_ttl("0"), None);
        assert_eq!(parse_ttl("1w"), None);
        assert_eq!(parse_ttl("h"), None);
    }
}
