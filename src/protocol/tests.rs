//! The wire format: seed frames exactly as shown, the additions, and
//! precise errors.

use super::*;
use serde_json::json;

#[test]
fn seed_frames_parse_exactly_as_shown() {
    let to = Uuid::now_v7();
    let frame = ClientFrame::parse(
        &json!({"type":"message","to":to,"content":"Hello, world!"}).to_string(),
    );
    assert_eq!(
        frame.unwrap(),
        ClientFrame::Message(SendFrame {
            to: Destination::User(to),
            content: "Hello, world!".into(),
            client_id: None,
            reply_to: None,
            attachments: Vec::new(),
        })
    );
    assert_eq!(
        ClientFrame::parse(r#"{"type":"ping"}"#).unwrap(),
        ClientFrame::Ping
    );
    let frame = ClientFrame::parse(&json!({"type":"typing","to":to,"is_typing":true}).to_string());
    assert_eq!(
        frame.unwrap(),
        ClientFrame::Typing {
            to: Destination::User(to),
            is_typing: true
        }
    );
}

#[test]
fn group_frames_name_a_conversation() {
    let c = Uuid::now_v7();
    let frame = ClientFrame::parse(
        &json!({"type":"message","conversation_id":c,"content":"hi","client_id":"k"}).to_string(),
    );
    assert_eq!(
        frame.unwrap(),
        ClientFrame::Message(SendFrame {
            to: Destination::Conversation(c),
            content: "hi".into(),
            client_id: Some("k".into()),
            reply_to: None,
            attachments: Vec::new(),
        })
    );
    let both = ClientFrame::parse(
        &json!({"type":"typing","to":c,"conversation_id":c,"is_typing":true}).to_string(),
    )
    .unwrap_err();
    assert_eq!(both.error.code, ErrorCode::InvalidField);
    assert_eq!(
        both.error.message,
        "invalid `typing` frame: give either `to` or `conversation_id`, not both"
    );
    let neither =
        ClientFrame::parse(r#"{"type":"message","content":"x","client_id":"k"}"#).unwrap_err();
    assert_eq!(
        neither.error.message,
        "invalid `message` frame: missing field `to` or `conversation_id`"
    );
    assert_eq!(neither.client_id.as_deref(), Some("k"));
}

#[test]
fn changes_and_cursors_parse() {
    let id = Uuid::now_v7();
    let frame = ClientFrame::parse(
        &json!({"type":"react","message_id":id,"emoji":"👍","client_id":"r1"}).to_string(),
    )
    .unwrap();
    assert_eq!(
        frame,
        ClientFrame::Change {
            message_id: id,
            kind: ChangeKind::React {
                emoji: "👍".into()
            },
            client_id: Some("r1".into()),
        }
    );
    assert_eq!(frame.kind(), "react");
    assert_eq!(frame.client_id(), Some("r1"));
    assert_eq!(
        ClientFrame::parse(r#"{"type":"sync","cursor":17}"#).unwrap(),
        ClientFrame::Sync {
            from: SyncFrom::Cursor(17),
            limit: None
        }
    );
    let both =
        ClientFrame::parse(&json!({"type":"sync","since":id,"cursor":1}).to_string()).unwrap_err();
    assert_eq!(
        both.error.message,
        "invalid `sync` frame: give either `since` or `cursor`, not both"
    );
    let negative = ClientFrame::parse(r#"{"type":"sync","cursor":-1}"#).unwrap_err();
    assert_eq!(
        negative.error.message,
        "invalid `sync` frame: `cursor` must not be negative"
    );
    let no_content =
        ClientFrame::parse(&json!({"type":"edit","message_id":id,"client_id":"e"}).to_string())
            .unwrap_err();
    assert_eq!(
        (no_content.error.code, no_content.client_id.as_deref()),
        (ErrorCode::InvalidField, Some("e"))
    );
}

#[test]
fn bad_frames_get_precise_codes() {
    let cases = [
        ("{not json", ErrorCode::InvalidJson),
        ("[1,2]", ErrorCode::InvalidJson),
        (r#"{"type":"dance"}"#, ErrorCode::UnknownType),
        (r#"{"to":"x"}"#, ErrorCode::InvalidField),
        (
            r#"{"type":"message","to":"not-a-uuid","content":"x"}"#,
            ErrorCode::InvalidField,
        ),
        (
            r#"{"type":"typing","to":"0190b6a0-0000-7000-8000-000000000000","is_typing":"yes"}"#,
            ErrorCode::InvalidField,
        ),
    ];
    for (text, code) in cases {
        let err = ClientFrame::parse(text).expect_err(text);
        assert_eq!(err.error.code, code, "{text}: {}", err.error.message);
    }
}

#[test]
fn errors_echo_the_client_id() {
    let err =
        ClientFrame::parse(r#"{"type":"message","client_id":"c1","content":"x"}"#).unwrap_err();
    assert_eq!(err.client_id.as_deref(), Some("c1"));
}

#[test]
fn server_frames_have_the_seed_shape() {
    let id = Uuid::nil();
    let read = ServerFrame::ReadReceipt {
        message_id: id,
        read_by: id,
        conversation_id: None,
    };
    assert_eq!(
        serde_json::to_value(&read).unwrap(),
        json!({"type":"read_receipt","message_id":id,"read_by":id})
    );
    assert_eq!(
        serde_json::to_value(ServerFrame::Pong).unwrap(),
        json!({"type":"pong"})
    );
    let err = ServerFrame::error(ApiError::new(ErrorCode::ContentEmpty, "empty"), None);
    assert_eq!(
        serde_json::to_value(&err).unwrap(),
        json!({"type":"error","message":"empty","code":"content_empty"})
    );
}
