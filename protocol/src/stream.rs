//! Stream positions on the wire (PROTOCOL.md §10): the `streams` of a
//! `welcome`, the `positions` of a `resume`, the `recovered` of its ack.
//! Stream names stay strings here (`inbox`, `all`, `group:{id}`): which
//! stream a name means depends on who reads it, which hub-core knows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest epoch a client's position keeps. The server's own are 8
/// characters; anything longer cannot be one of them, and is read as an
/// epoch that matches nothing rather than kept.
pub const MAX_EPOCH_LEN: usize = 64;

/// A place in a stream: the last message seen (seq 0: none yet).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    pub epoch: String,
    pub seq: u64,
}

/// Positions by wire stream name, sorted by name.
pub type Positions = BTreeMap<String, StreamPosition>;

/// Where one message sits: the `stream`, `epoch` and `seq` fields of a
/// message frame and of an ack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub stream: String,
    pub epoch: String,
    pub seq: u64,
}

/// Reads the `positions` of a `resume` frame: an object of stream name to
/// `{"epoch":string,"seq":non-negative integer}`. The message of an error
/// never echoes what the client sent.
pub fn parse_positions(v: &serde_json::Value) -> Result<Positions, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| "`positions` must be an object".to_owned())?;
    let mut out = Positions::new();
    for (name, pos) in obj {
        let shown: String = name.chars().take(32).collect();
        let p = pos
            .as_object()
            .ok_or_else(|| format!("position of `{shown}` must be an object"))?;
        let epoch = p
            .get("epoch")
            .and_then(|e| e.as_str())
            .ok_or_else(|| format!("position of `{shown}` needs an `epoch` string"))?;
        // An epoch too long to be one of ours is a wrong epoch (§10: that
        // stream is not recovered, no error), kept as one that matches
        // nothing rather than held in memory.
        let epoch = if epoch.len() <= MAX_EPOCH_LEN {
            epoch
        } else {
            ""
        };
        let seq = p
            .get("seq")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| format!("position of `{shown}` needs a non-negative integer `seq`"))?;
        out.insert(
            name.clone(),
            StreamPosition {
                epoch: epoch.to_owned(),
                seq,
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn positions_parse_and_refuse_what_is_not_a_position() {
        let p = parse_positions(
            &json!({"inbox":{"epoch":"k3Jx","seq":17},"group:g1":{"epoch":"Z","seq":0}}),
        )
        .unwrap();
        assert_eq!(
            p["inbox"],
            StreamPosition {
                epoch: "k3Jx".into(),
                seq: 17
            }
        );
        assert_eq!(p.len(), 2);
        assert!(parse_positions(&json!({})).unwrap().is_empty());
        for bad in [
            json!([]),
            json!("x"),
            json!({"inbox": 3}),
            json!({"inbox": {"seq": 1}}),
            json!({"inbox": {"epoch": "e"}}),
            json!({"inbox": {"epoch": 5, "seq": 1}}),
            json!({"inbox": {"epoch": "e", "seq": -1}}),
            json!({"inbox": {"epoch": "e", "seq": 1.5}}),
        ] {
            assert!(parse_positions(&bad).is_err(), "{bad}");
        }
        // Too long to be an epoch of ours: a wrong one, not a bad frame.
        let p = parse_positions(&json!({"inbox": {"epoch": "e".repeat(65), "seq": 1}})).unwrap();
        assert_eq!(p["inbox"].epoch, "");
    }
}
