//! Client input never panics the parser, and every refusal carries a code
//! the contract allows for a bad frame, with an `id` only when it was valid.

use proptest::prelude::*;
use protocol::{ClientFrame, ErrorCode};

/// JSON-ish text: objects with the frame's field names and odd values.
fn frameish() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("type"),
        Just("to"),
        Just("group"),
        Just("body"),
        Just("id"),
        Just("userId"),
        Just("msg"),
        Just("x"),
    ];
    let value = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        "[a-zA-Z0-9_.:@ /é-]{0,140}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        prop_oneof![
            Just("send"),
            Just("publish"),
            Just("join"),
            Just("leave"),
            Just("ping")
        ]
        .prop_map(|s| format!("\"{s}\"")),
        Just("[1,{\"a\":[]}]".to_owned()),
        Just("{\"nested\":{\"deep\":[null]}}".to_owned()),
    ];
    prop::collection::vec((key, value), 0..7).prop_map(|fields| {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    })
}

fn check(text: &str) {
    match ClientFrame::parse(text) {
        Ok(frame) => {
            // Whatever parsed serialises back to something that parses the same.
            let again = serde_json::to_string(&frame).unwrap();
            assert_eq!(ClientFrame::parse(&again).unwrap(), frame);
        }
        Err(e) => {
            assert!(
                matches!(e.code, ErrorCode::BadRequest | ErrorCode::UnknownType),
                "{e:?}"
            );
            if let Some(id) = &e.id {
                assert!(id.as_str().len() <= 64);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text(text in ".{0,300}") {
        check(&text);
    }

    #[test]
    fn frame_shaped_objects(text in frameish()) {
        check(&text);
    }
}
