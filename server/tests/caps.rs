//! PROTOCOL.md §2 and §5, the caps from outside: open WebSockets per process
//! (`--max-connections`, 503), per user (`--max-user-connections`, 429) and
//! groups per user (`--max-user-groups`, `limit_exceeded` / 409 / 401); that
//! each cap is checked after the 400, 401 and 403 refusals; that a place
//! freed by a close or a leave can be taken again; and the issue-10 probe
//! (thousands of upgrades with one token, a thousand public groups) scaled
//! down against the defaults.

use serde_json::{json, Value};
use test_support::*;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Closes `c` from the client side and waits until the server has logged
/// that connection of `user` closed: the signal that its place is free.
async fn close_and_wait(s: &Server, mut c: Client, user: &str) {
    // The space after the id keeps user `a` from matching user `ab`.
    let needle = format!("connection closed user={user} ");
    let earlier = s.logs().iter().filter(|l| l.contains(&needle)).count();
    c.ws.close(None).await.expect("send a close frame");
    s.wait_log_n(&needle, earlier + 1).await;
}

/// An upgrade that must be refused; returns the status and the error code.
async fn refusal(url: &str) -> (u16, String) {
    let (status, body) = refused(url.into_client_request().unwrap()).await;
    assert!(body["error"]["message"].is_string(), "{status} {body}");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code)
}

/// Whether `frame` is the plain ack of a `join` or `leave` with `id`.
fn joined(frame: &Value, id: &str) -> bool {
    test_support::unplaced(frame) == json!({"type":"ack","id":id})
}

async fn groups_of(s: &Server, user: &str) -> Value {
    let (status, body) = s.api("GET", &format!("/api/v1/users/{user}"), None).await;
    assert_eq!(status, 200, "{body}");
    body["groups"].clone()
}

#[tokio::test]
async fn past_max_connections_an_upgrade_is_503_until_one_closes() {
    let s = Server::start(&["--max-connections", "2"]).await;
    let a = s.client("a", &[]).await;
    let _b = s.client("b", &[]).await;
    // A third user, so that only the process-wide cap can refuse it.
    let t = token("c", &[], 3600);
    let url = s.ws_url(&format!("token={t}"));
    assert_eq!(refusal(&url).await, (503, "unavailable".into()));

    // At the cap, the refusals that come before it keep their own answers.
    let (status, body) = http(s.addr, "GET", &format!("/ws?token={t}"), None, None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad_request"))
    );
    assert_eq!(
        refusal(&s.ws_url("token=garbage")).await,
        (401, "unauthorized".into())
    );
    assert_eq!(
        refusal(&s.ws_url(&format!("userId=someone-else&token={t}"))).await,
        (403, "forbidden".into())
    );

    // A close frees a place, and the refusals above took none. The close's
    // log line is the signal: a 503 below means the server logged the
    // connection closed while it still held its place.
    close_and_wait(&s, a, "a").await;
    let mut c = Client::connect(&url).await;
    assert_eq!(c.welcome["user"], "c");
    assert_eq!(
        c.request(json!({"type":"ping","id":"p"})).await,
        json!({"type":"pong","id":"p"})
    );
    // And the cap holds again once it is taken.
    assert_eq!(
        refusal(&s.ws_url(&format!("token={}", token("d", &[], 3600)))).await,
        (503, "unavailable".into())
    );
}

#[tokio::test]
async fn past_max_user_connections_the_user_is_429_and_others_are_not() {
    let s = Server::start(&["--max-user-connections", "2"]).await;
    let first = s.client("u", &[]).await;
    let _second = s.client("u", &[]).await;
    let t = token("u", &[], 3600);
    let url = s.ws_url(&format!("token={t}"));
    assert_eq!(refusal(&url).await, (429, "rate_limited".into()));

    // The cap is per user: another user connects as usual.
    let mut v = s.client("v", &[]).await;
    assert_eq!(
        v.request(json!({"type":"ping","id":"v"})).await,
        json!({"type":"pong","id":"v"})
    );

    // A bad token or a userId that is not the token's is answered as such,
    // not with the cap's 429: the cap comes last.
    assert_eq!(
        refusal(&s.ws_url("userId=u&token=garbage")).await,
        (401, "unauthorized".into())
    );
    assert_eq!(
        refusal(&s.ws_url(&format!("userId=w&token={t}"))).await,
        (403, "forbidden".into())
    );

    // The refused upgrades took no place: one close, one new connection.
    close_and_wait(&s, first, "u").await;
    let again = Client::connect(&url).await;
    assert_eq!(again.welcome["user"], "u");
    assert_eq!(refusal(&url).await, (429, "rate_limited".into()));
    let (_, user) = s.api("GET", "/api/v1/users/u", None).await;
    assert_eq!(user["connections"], 2);
}

#[tokio::test]
async fn by_default_one_token_opens_64_connections_and_no_more() {
    // Issue 10's probe opened 2,000 upgrades with one token and every one
    // was accepted. Seventy in a row show the default cap of 64.
    const TRIED: usize = 70;
    let s = Server::start(&[]).await;
    let url = s.ws_url(&format!("token={}", token("probe", &[], 3600)));
    let mut held = Vec::new();
    let mut outcomes = Vec::new();
    for _ in 0..TRIED {
        match Client::try_connect(url.as_str()).await {
            Ok(c) => {
                held.push(c);
                outcomes.push((101, "welcome".to_owned()));
            }
            Err((status, body)) => outcomes.push((
                status,
                body["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )),
        }
    }
    // One after the other, so exactly the first 64 get in.
    let accepted = outcomes.iter().take_while(|(st, _)| *st == 101).count();
    assert_eq!(accepted, 64, "{outcomes:?}");
    assert!(
        outcomes[accepted..]
            .iter()
            .all(|(st, code)| (*st, code.as_str()) == (429, "rate_limited")),
        "{outcomes:?}"
    );
    let (_, user) = s.api("GET", "/api/v1/users/probe", None).await;
    assert_eq!(user["connections"], held.len());
}

#[tokio::test]
async fn past_max_user_groups_a_join_is_limit_exceeded_until_a_leave() {
    let s = Server::start(&["--max-user-groups", "3", "--public-group", "pub."]).await;
    let mut c = s.client("u", &[]).await;
    for g in ["pub.1", "pub.2", "pub.3"] {
        let ack = c.request(json!({"type":"join","group":g,"id":g})).await;
        assert!(joined(&ack, g), "{ack}");
    }

    // One more is refused, with the frame's id; the connection stays.
    let e = c
        .request(json!({"type":"join","group":"pub.4","id":"j4"}))
        .await;
    assert_eq!(
        (&e["type"], &e["code"], &e["id"]),
        (&json!("error"), &json!("limit_exceeded"), &json!("j4")),
        "{e}"
    );
    // Without an id there is no ack, but the refusal is still sent.
    c.send(json!({"type":"join","group":"pub.4"})).await;
    let e = c.recv().await;
    assert_eq!(
        (&e["type"], &e["code"]),
        (&json!("error"), &json!("limit_exceeded"))
    );
    // Joining a group the user is in already is no new membership: acked.
    let ack = c
        .request(json!({"type":"join","group":"pub.2","id":"again"}))
        .await;
    assert!(joined(&ack, "again"), "{ack}");
    assert_eq!(groups_of(&s, "u").await, json!(["pub.1", "pub.2", "pub.3"]));

    // The API's join meets the same cap, for any group (the API may add a
    // user to a group that is not public), and is still idempotent.
    let (status, body) = s.api("PUT", "/api/v1/groups/team/members/u", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("limit_exceeded"))
    );
    let (status, _) = s.api("PUT", "/api/v1/groups/pub.1/members/u", None).await;
    assert_eq!(status, 200);

    // A leave makes room, by frame or by the API.
    let ack = c
        .request(json!({"type":"leave","group":"pub.1","id":"l1"}))
        .await;
    assert!(joined(&ack, "l1"), "{ack}");
    let ack = c
        .request(json!({"type":"join","group":"pub.4","id":"j4"}))
        .await;
    assert!(joined(&ack, "j4"), "{ack}");
    let (status, _) = s
        .api("DELETE", "/api/v1/groups/pub.2/members/u", None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = s.api("PUT", "/api/v1/groups/team/members/u", None).await;
    assert_eq!((status, &body["joined"]), (200, &json!(true)));
    assert_eq!(groups_of(&s, "u").await, json!(["pub.3", "pub.4", "team"]));
}

#[tokio::test]
async fn a_token_listing_more_groups_than_the_cap_is_401() {
    let s = Server::start(&["--max-user-groups", "3"]).await;
    let four = token("t", &["g1", "g2", "g3", "g4"], 3600);
    assert_eq!(
        refusal(&s.ws_url(&format!("token={four}"))).await,
        (401, "unauthorized".into())
    );
    // It is a refusal of the token, so it comes before the 403 of a userId
    // that differs from `sub`.
    assert_eq!(
        refusal(&s.ws_url(&format!("userId=other&token={four}"))).await,
        (401, "unauthorized".into())
    );

    // At the cap exactly is fine: welcome lists them, sorted.
    let three = token("t", &["g3", "g1", "g2"], 3600);
    let c = Client::connect(&s.ws_url(&format!("token={three}"))).await;
    assert_eq!(c.welcome["groups"], json!(["g1", "g2", "g3"]));
}

/// §2: a token is answered 101 or 401 whatever its claims hold. At the
/// default cap a token may list 1,024 groups of 128 bytes, about 176 KiB;
/// one with 1,100 such groups is refused for them with 401, not turned
/// away for the size of its request head. (Sent as `Authorization:
/// Bearer`: a URL cannot be that long, here or in hyper.)
#[tokio::test]
async fn the_largest_token_the_cap_allows_is_accepted_and_a_larger_one_is_401() {
    let s = Server::start(&[]).await;
    let with_groups = |user: &str, n: usize| {
        let ids: Vec<String> = (0..n).map(|i| format!("{i:0>128}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut req = s.ws_url("").into_client_request().unwrap();
        let bearer = format!("Bearer {}", token(user, &refs, 3600));
        req.headers_mut()
            .insert("authorization", bearer.parse().unwrap());
        req
    };
    let c = Client::try_connect(with_groups("big", 1024)).await.unwrap();
    assert_eq!(c.welcome["groups"].as_array().map(Vec::len), Some(1024));

    match Client::try_connect(with_groups("bigger", 1100)).await {
        Ok(_) => panic!("a token past the cap was accepted"),
        Err((status, body)) => assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("unauthorized"))
        ),
    }
}

#[tokio::test]
async fn token_groups_that_would_pass_the_cap_with_earlier_memberships_are_409() {
    // A user belongs to at most --max-user-groups groups, however the
    // memberships came: a token whose groups fit on their own but not on
    // top of what the user already has is refused before the upgrade.
    let s = Server::start(&["--max-user-groups", "3"]).await;
    for g in ["a1", "a2"] {
        let (status, body) = s
            .api("PUT", &format!("/api/v1/groups/{g}/members/u"), None)
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let fits = token("u", &["a1", "t1"], 3600);
    let too_many = token("u", &["t1", "t2"], 3600);
    assert_eq!(
        refusal(&s.ws_url(&format!("token={too_many}"))).await,
        (409, "limit_exceeded".into())
    );
    let (_, user) = s.api("GET", "/api/v1/users/u", None).await;
    assert_eq!(
        user["groups"],
        json!(["a1", "a2"]),
        "a refused token joined groups"
    );
    let c = Client::connect(&s.ws_url(&format!("token={fits}"))).await;
    assert_eq!(c.welcome["groups"], json!(["a1", "a2", "t1"]));
}

#[tokio::test]
async fn one_user_joining_1100_public_groups_gets_1024() {
    // Issue 10's probe joined an unbounded number of public groups over one
    // connection. The rate limit is lifted so that only the group cap
    // (default 1024) can refuse a join.
    const TRIED: usize = 1100;
    let s = Server::start(&["--public-group", "pub.", "--rate", "100000"]).await;
    let mut c = s.client("prober", &[]).await;
    // Zero-padded, so the order joined is the sorted order welcome uses.
    let names: Vec<String> = (0..TRIED).map(|i| format!("pub.{i:04}")).collect();
    let mut answers = Vec::new();
    for g in &names {
        let a = c.request(json!({"type":"join","group":g,"id":g})).await;
        assert_eq!(a["id"], json!(g), "{a}");
        answers.push(a);
    }
    let acked = answers.iter().take_while(|a| a["type"] == "ack").count();
    assert_eq!(acked, 1024);
    for a in &answers[acked..] {
        assert_eq!(
            (&a["type"], &a["code"]),
            (&json!("error"), &json!("limit_exceeded")),
            "{a}"
        );
    }

    // Only the acked joins took effect.
    let first: Vec<&String> = names[..acked].iter().collect();
    assert_eq!(groups_of(&s, "prober").await, json!(first));
    let (_, stats) = s.api("GET", "/api/v1/stats", None).await;
    assert_eq!(stats["groups"], acked);
    // The cap is the user's, not the connection's: a new one starts full.
    let mut other = s.client("prober", &[]).await;
    assert_eq!(other.welcome["groups"], json!(first));
    let e = other
        .request(json!({"type":"join","group":"pub.new","id":"n"}))
        .await;
    assert_eq!(
        (&e["code"], &e["id"]),
        (&json!("limit_exceeded"), &json!("n"))
    );
}
