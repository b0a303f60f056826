//! What one client frame does (PROTOCOL.md §3): a function from the frame,
//! the connection and its session to node calls and the reply. No socket in
//! sight, so every answer is unit-tested here; the rules it applies live in
//! hub-core (`rules.rs`). It is async because in a cluster the node's calls
//! reach the shared store; the connection's loop polls it beside the socket
//! and reads the next frame only when it is done, so one client's frames
//! take effect in the order they were sent.

use hub_core::{Delivery, Node, NodeError, Origin, Session};
use protocol::{ClientFrame, CorrelationId, ErrorCode, Placement, ServerFrame};

/// Carries out one client frame; returns the reply, if any.
pub async fn dispatch(
    node: &Node,
    from: Origin,
    session: &Session,
    frame: ClientFrame,
) -> Option<ServerFrame> {
    let (id, done) = match frame {
        ClientFrame::Send { to, body, id } => {
            let done = node.send(from, to, body).await;
            (id, done.map(Acked::Delivered))
        }
        ClientFrame::Publish { group, body, id } => {
            let done = node.publish(from, group, body).await;
            (id, done.map(Acked::Delivered))
        }
        ClientFrame::Join { group, id } => (
            id,
            node.join_as(session, &group)
                .await
                .map(|at| at.map_or(Acked::Plain, Acked::At)),
        ),
        ClientFrame::Leave { group, id } => (
            id,
            node.leave(&group, &session.user)
                .await
                .map(|_| Acked::Plain),
        ),
        ClientFrame::Ping { id } => return Some(ServerFrame::Pong { id }),
        // The connection loop takes a resume that comes first; any other
        // is out of place (§10).
        ClientFrame::Resume { id, .. } => {
            return Some(ServerFrame::error(
                id,
                ErrorCode::BadRequest,
                "resume is only accepted as the first frame after connecting with resume=1",
            ))
        }
    };
    match done {
        Ok(acked) => id.map(|id| acked.frame(id)),
        // Answered with or without an id: a refusal never goes unseen.
        Err(e) => Some(refused(id, &e)),
    }
}

/// What an ack carries besides its id.
enum Acked {
    Delivered(Delivery),
    At(Placement),
    Plain,
}

impl Acked {
    fn frame(self, id: CorrelationId) -> ServerFrame {
        match self {
            Acked::Delivered(d) => ServerFrame::ack_delivered(id, d.delivered, d.place),
            Acked::At(place) => ServerFrame::ack_at(id, place),
            Acked::Plain => ServerFrame::ack(id),
        }
    }
}

fn refused(id: Option<CorrelationId>, e: &NodeError) -> ServerFrame {
    ServerFrame::error(id, e.code(), e.message())
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;
    use hub_core::{Connection, NodeConfig, Rules};
    use protocol::{ErrorCode, GroupId, UserId};

    fn node() -> Node {
        Node::new(NodeConfig {
            max_user_groups: NonZeroUsize::new(3).unwrap(),
            rules: Rules {
                open: false,
                public_groups: vec!["pub.".into()],
            },
            ..NodeConfig::default()
        })
    }

    fn session(user: &str, groups: &[&str]) -> Session {
        Session {
            token_groups: groups.iter().map(|g| GroupId::new(g).unwrap()).collect(),
            ..Session::new(UserId::new(user).unwrap())
        }
    }

    /// Runs a call of a one-process node, which completes at once.
    fn done<T>(call: impl std::future::Future<Output = T>) -> T {
        futures_util::FutureExt::now_or_never(call).expect("a one-process node answers at once")
    }

    fn connect(node: &Node, s: &Session) -> Connection {
        done(node.connect(done(node.admit(s)).unwrap(), s)).0
    }

    fn run(node: &Node, conn: &Connection, s: &Session, text: &str) -> Option<serde_json::Value> {
        let frame = ClientFrame::parse(text).unwrap();
        done(dispatch(node, conn.origin(), s, frame))
            .map(|r| serde_json::from_str(&r.to_json()).unwrap())
    }

    #[test]
    fn sends_and_publishes_are_acked_with_what_was_delivered() {
        let node = node();
        let (a, b) = (session("a", &["team"]), session("b", &["team"]));
        let ca = connect(&node, &a);
        let _b1 = connect(&node, &b);
        let _b2 = connect(&node, &b);
        let r = run(
            &node,
            &ca,
            &a,
            r#"{"type":"send","to":"b","body":1,"id":"s"}"#,
        )
        .unwrap();
        // The ack reports the sender's copy in the sender's own inbox.
        assert_eq!(
            (
                &r["type"],
                &r["id"],
                &r["delivered"],
                &r["stream"],
                &r["seq"]
            ),
            (
                &serde_json::json!("ack"),
                &serde_json::json!("s"),
                &serde_json::json!(2),
                &serde_json::json!("inbox"),
                &serde_json::json!(1)
            )
        );
        assert_eq!(r["epoch"].as_str().map(str::len), Some(8));
        let r = run(
            &node,
            &ca,
            &a,
            r#"{"type":"publish","group":"team","body":1,"id":7}"#,
        );
        assert_eq!(r.unwrap()["delivered"], 2);
        // Without an id there is nothing to answer.
        assert_eq!(run(&node, &ca, &a, r#"{"userId":2,"msg":"hi"}"#), None);
    }

    #[test]
    fn refusals_carry_the_contract_code_and_the_frame_id() {
        let node = node();
        let a = session("a", &["team"]);
        let ca = connect(&node, &a);
        let r = run(
            &node,
            &ca,
            &a,
            r#"{"type":"publish","group":"other","body":1,"id":"p"}"#,
        );
        let r = r.unwrap();
        assert_eq!(
            (r["code"].as_str(), r["id"].as_str()),
            (Some("forbidden"), Some("p"))
        );
        let r = run(
            &node,
            &ca,
            &a,
            r#"{"type":"join","group":"secret","id":"j"}"#,
        )
        .unwrap();
        assert_eq!(r["code"], ErrorCode::Forbidden.as_str());
        // Refused without an id: still answered.
        let r = run(&node, &ca, &a, r#"{"type":"join","group":"secret"}"#).unwrap();
        assert_eq!(r["type"], "error");
    }

    #[test]
    fn joins_follow_the_rules_and_the_group_cap() {
        let node = node();
        let a = session("a", &["team"]);
        let ca = connect(&node, &a);
        for g in ["pub.1", "pub.2"] {
            let r = run(
                &node,
                &ca,
                &a,
                &format!(r#"{{"type":"join","group":"{g}","id":"j"}}"#),
            );
            assert_eq!(r.unwrap()["type"], "ack");
        }
        // team (from the token), pub.1, pub.2: the cap of 3 is reached.
        let r = run(
            &node,
            &ca,
            &a,
            r#"{"type":"join","group":"pub.3","id":"j"}"#,
        )
        .unwrap();
        assert_eq!(r["code"], "limit_exceeded");
        // Leaving makes room; leaving twice is acked too.
        for _ in 0..2 {
            let r = run(
                &node,
                &ca,
                &a,
                r#"{"type":"leave","group":"pub.1","id":"l"}"#,
            );
            assert_eq!(r.unwrap()["type"], "ack");
        }
        let r = run(
            &node,
            &ca,
            &a,
            r#"{"type":"join","group":"pub.3","id":"j"}"#,
        )
        .unwrap();
        assert_eq!(r["type"], "ack");
        let r = run(&node, &ca, &a, r#"{"type":"ping","id":"x"}"#).unwrap();
        assert_eq!(r, serde_json::json!({"type":"pong","id":"x"}));
    }
}
