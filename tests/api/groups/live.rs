//! What members' open sessions hear without asking: a new group, a rename,
//! presence through small groups only, and typing.

use serde_json::json;

use super::{Five, Nodes, QUIET, SmallAndBig};
use crate::both_backends;
use crate::helpers::Backend;
use crate::helpers::wsclient::WsClient;

both_backends!(
    a_new_group_reaches_every_members_sessions_on_every_node,
    a_rename_reaches_every_members_sessions_on_every_node,
    presence_reaches_co_members_of_small_groups_only,
    typing_reaches_every_other_members_sessions_but_not_the_typists,
    typing_is_relayed_in_small_groups_and_dropped_in_big_ones,
);

/// `conversation_created`, with the group as it now is.
async fn a_new_group_reaches_every_members_sessions_on_every_node(backend: Backend) {
    let nodes = Nodes::start(backend).await;
    let (n0, n1) = (nodes.node(0), nodes.node(1));
    let (a, b, c) = (
        n0.new_user().await,
        n0.new_user().await,
        n1.new_user().await,
    );
    let mut wb = WsClient::connect(n0, &b.token).await;
    let mut wc = WsClient::connect(n1, &c.token).await;

    let group = n0.create_group(&a, "Plans", &[&b, &c]).await;
    for (who, ws) in [("b", &mut wb), ("c on the other node", &mut wc)] {
        let created = ws.recv_type("conversation_created").await;
        let conversation = &created["conversation"];
        assert_eq!(conversation["id"], json!(group), "{who}: {created}");
        assert_eq!(conversation["title"], "Plans", "{who}: {created}");
        assert_eq!(conversation["member_count"], 3, "{who}: {created}");
    }
}

/// `conversation_updated`, with the group as it now is, whichever node the
/// rename came through.
async fn a_rename_reaches_every_members_sessions_on_every_node(backend: Backend) {
    let nodes = Nodes::start(backend).await;
    let (n0, n1) = (nodes.node(0), nodes.node(1));
    let (a, b, c) = (
        n0.new_user().await,
        n0.new_user().await,
        n1.new_user().await,
    );
    let mut wb = WsClient::connect(n0, &b.token).await;
    let mut wc = WsClient::connect(n1, &c.token).await;
    let group = n0.create_group(&a, "Plans", &[&b, &c]).await;
    // Both hear of the group first: their sessions are live.
    for ws in [&mut wb, &mut wc] {
        ws.recv_type("conversation_created").await;
    }

    let (status, body) = n1
        .patch(
            &format!("/conversations/{group}"),
            &a.token,
            &json!({"title": "New plans"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for (who, ws) in [("b", &mut wb), ("c on the other node", &mut wc)] {
        let updated = ws.recv_type("conversation_updated").await;
        assert_eq!(
            updated["conversation"]["id"],
            json!(group),
            "{who}: {updated}"
        );
        assert_eq!(
            updated["conversation"]["title"], "New plans",
            "{who}: {updated}"
        );
    }
}

/// a comes online: b (in the small group with a) hears it, d (only in the
/// big one) does not.
async fn presence_reaches_co_members_of_small_groups_only(backend: Backend) {
    let s = SmallAndBig::start(backend).await;

    let mut wb = WsClient::connect(&s.app, &s.b.token).await;
    let mut wd = WsClient::connect(&s.app, &s.d.token).await;
    let _wa = WsClient::connect(&s.app, &s.a.token).await;
    assert_eq!(wb.recv_type("user_online").await["user_id"], json!(s.a.id));
    wd.none_of_type_for("user_online", QUIET).await;
}

/// From any node, to every session of every other member (a's and c's on
/// both nodes), never to the typist's.
async fn typing_reaches_every_other_members_sessions_but_not_the_typists(backend: Backend) {
    let mut f = Five::start(backend).await;
    // A message to everyone first: every session is then live on its node.
    f.everyone_hears_hello().await;

    f.wb.send(json!({"type": "typing", "conversation_id": f.group, "is_typing": true}))
        .await;
    for ws in [&mut f.wa, &mut f.wa2, &mut f.wc, &mut f.wd, &mut f.we] {
        assert_eq!(
            ws.recv_type("typing").await,
            json!({"type": "typing", "from": f.b.id, "is_typing": true, "conversation_id": f.group})
        );
    }
    f.wb.none_of_type_for("typing", QUIET).await;
}

/// Typing in a group small enough for presence is relayed; in a bigger one
/// it is accepted (no error) and goes nowhere.
async fn typing_is_relayed_in_small_groups_and_dropped_in_big_ones(backend: Backend) {
    let s = SmallAndBig::start(backend).await;
    let mut wb = WsClient::connect(&s.app, &s.b.token).await;
    let mut wd = WsClient::connect(&s.app, &s.d.token).await;
    let mut wa = WsClient::connect(&s.app, &s.a.token).await;
    // b hears a come online: a's session is live.
    assert_eq!(wb.recv_type("user_online").await["user_id"], json!(s.a.id));

    wa.send(json!({"type": "typing", "conversation_id": s.small, "is_typing": true}))
        .await;
    assert_eq!(
        wb.recv_type("typing").await["conversation_id"],
        json!(s.small)
    );
    wa.send(json!({"type": "typing", "conversation_id": s.big, "is_typing": true}))
        .await;
    wd.none_of_type_for("typing", QUIET).await;
    wa.none_of_type_for("error", QUIET).await;
}
