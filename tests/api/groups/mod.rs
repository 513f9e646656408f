//! Group conversations end to end, one rule per test: REST and WebSocket on
//! real nodes, both stores; two nodes sharing Postgres and Redis where the
//! rule is about nodes.
//!
//! - [`messaging`]: sending across nodes, repeated client ids, history,
//!   unread counts, read receipts, stats and `sync`.
//! - [`membership`]: roles, adding and removing members, owners leaving,
//!   and what a removed member or an outsider gets.
//! - [`limits`]: the member limit and bad input, with exact errors.
//! - [`live`]: creation, renames, presence and typing as they reach
//!   members' sessions.
//! - [`lists`]: the conversation list and search.
//! - [`migration`]: direct chats stored before groups existed.

mod limits;
mod lists;
mod live;
mod membership;
mod messaging;
mod migration;

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::wsclient::WsClient;
use crate::helpers::{Backend, Cluster, TestApp, TestUser};

/// Two nodes sharing Postgres and Redis; the embedded store is one node by
/// design, so there the one node plays both parts.
pub(super) enum Nodes {
    Cluster(Cluster),
    Single(TestApp),
}

impl Nodes {
    pub(super) async fn start(backend: Backend) -> Self {
        match backend {
            Backend::Postgres => Self::Cluster(Cluster::start(2, &[]).await),
            Backend::Sqlite => Self::Single(TestApp::spawn(backend).await),
        }
    }

    pub(super) fn node(&self, i: usize) -> &TestApp {
        match self {
            Self::Cluster(c) => &c.nodes[i % c.nodes.len()],
            Self::Single(app) => app,
        }
    }
}

/// How long a test listens to be sure something does not arrive.
pub(super) const QUIET: Duration = Duration::from_millis(400);

pub(super) fn group_message(group: Uuid, content: &str, client_id: &str) -> Value {
    json!({"type": "message", "conversation_id": group, "content": content, "client_id": client_id})
}

/// `user`'s unread count in `group`, from their conversation list (where
/// the group must be listed as a group).
pub(super) async fn unread_in(app: &TestApp, user: &TestUser, group: Uuid) -> i64 {
    let (status, list) = app.get("/messages/conversations", &user.token).await;
    assert_eq!(status, 200, "{list}");
    let entry = list["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["conversation_id"] == json!(group))
        .unwrap_or_else(|| panic!("{group} missing from {list}"))
        .clone();
    assert_eq!(entry["kind"], "group");
    entry["unread_count"].as_i64().unwrap()
}

/// Every message id of `group`'s history as `user` sees it, oldest first,
/// read in pages of `limit`.
pub(super) async fn history_ids(
    app: &TestApp,
    user: &TestUser,
    group: Uuid,
    limit: u32,
) -> Vec<Value> {
    let mut ids = Vec::new();
    let mut before: Option<Value> = None;
    loop {
        let path = match &before {
            None => format!("/messages/conversation?conversation_id={group}&limit={limit}"),
            Some(b) => format!(
                "/messages/conversation?conversation_id={group}&limit={limit}&before={}",
                b.as_str().unwrap()
            ),
        };
        let (status, page) = app.get(&path, &user.token).await;
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().unwrap();
        assert!(messages.len() <= limit as usize);
        let mut page_ids: Vec<Value> = messages.iter().map(|m| m["id"].clone()).collect();
        page_ids.extend(ids);
        ids = page_ids;
        if page["has_more"] == false {
            return ids;
        }
        before = Some(messages[0]["id"].clone());
    }
}

/// The ids of a history page's or a search's `messages`, in order.
pub(super) fn ids_of(body: &Value) -> Vec<Value> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect()
}

/// Pages through `sync` from `since` with small pages: every message frame
/// and its `seq`.
pub(super) async fn sync_all(
    ws: &mut WsClient,
    mut since: Option<Value>,
) -> (Vec<Value>, Vec<i64>) {
    let mut all = Vec::new();
    loop {
        ws.send(json!({"type": "sync", "since": since, "limit": 20}))
            .await;
        let answer = ws.recv_type("sync").await;
        let messages = answer["messages"].as_array().unwrap().clone();
        if let Some(last) = messages.last() {
            since = Some(last["id"].clone());
        }
        all.extend(messages);
        if answer["has_more"] == false {
            break;
        }
    }
    let seqs = all.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    (all, seqs)
}

/// The group "Five" over two nodes, every session open: a (the owner) and c
/// have a device on each node, b and e are on node 0, d on node 1.
pub(super) struct Five {
    pub(super) nodes: Nodes,
    pub(super) a: TestUser,
    pub(super) b: TestUser,
    pub(super) c: TestUser,
    pub(super) d: TestUser,
    pub(super) e: TestUser,
    pub(super) group: Uuid,
    /// a on node 0.
    pub(super) wa: WsClient,
    /// a on node 1.
    pub(super) wa2: WsClient,
    pub(super) wb: WsClient,
    /// c on node 1.
    pub(super) wc: WsClient,
    /// c on node 0.
    pub(super) wc2: WsClient,
    pub(super) wd: WsClient,
    pub(super) we: WsClient,
}

impl Five {
    pub(super) async fn start(backend: Backend) -> Self {
        let nodes = Nodes::start(backend).await;
        let (n0, n1) = (nodes.node(0), nodes.node(1));
        let (a, b, c, d, e) = (
            n0.new_user().await,
            n0.new_user().await,
            n1.new_user().await,
            n1.new_user().await,
            n0.new_user().await,
        );
        let group = n0.create_group(&a, "Five", &[&b, &c, &d, &e]).await;
        let wa = WsClient::connect(n0, &a.token).await;
        let wa2 = WsClient::connect(n1, &a.token).await;
        let wb = WsClient::connect(n0, &b.token).await;
        let wc = WsClient::connect(n1, &c.token).await;
        let wc2 = WsClient::connect(n0, &c.token).await;
        let wd = WsClient::connect(n1, &d.token).await;
        let we = WsClient::connect(n0, &e.token).await;
        Self {
            nodes,
            a,
            b,
            c,
            d,
            e,
            group,
            wa,
            wa2,
            wb,
            wc,
            wc2,
            wd,
            we,
        }
    }

    /// Every session but the one a sends from, named for messages.
    pub(super) fn others_of_a(&mut self) -> [(&'static str, &mut WsClient); 6] {
        [
            ("a's other device", &mut self.wa2),
            ("b", &mut self.wb),
            ("c", &mut self.wc),
            ("c's other device", &mut self.wc2),
            ("d", &mut self.wd),
            ("e", &mut self.we),
        ]
    }

    /// a sends "hello five" (client id `k1`) from node 0; its acked id.
    pub(super) async fn a_says_hello(&mut self) -> Value {
        self.wa
            .send(group_message(self.group, "hello five", "k1"))
            .await;
        let ack = self.wa.recv_type("ack").await;
        assert_eq!(ack["client_id"], "k1");
        ack["id"].clone()
    }

    /// a says hello and every other session receives it: afterwards every
    /// session is live on its node. The message's id.
    pub(super) async fn everyone_hears_hello(&mut self) -> Value {
        let first = self.a_says_hello().await;
        for (who, ws) in self.others_of_a() {
            assert_eq!(ws.recv_type("message").await["id"], first, "{who}");
        }
        first
    }

    /// a says hello to everyone, then c (on node 1) sends four more, which
    /// d and c's other device (on node 0) receive in order. The five ids,
    /// oldest first.
    pub(super) async fn five_messages(&mut self) -> Vec<Value> {
        let mut sent = vec![self.everyone_hears_hello().await];
        for k in 0..4 {
            self.wc
                .send(group_message(
                    self.group,
                    &format!("from c {k}"),
                    &format!("c{k}"),
                ))
                .await;
            sent.push(self.wc.recv_type("ack").await["id"].clone());
        }
        for k in 0..4 {
            assert_eq!(self.wd.recv_type("message").await["id"], sent[k + 1]);
            assert_eq!(self.wc2.recv_type("message").await["id"], sent[k + 1]);
        }
        sent
    }
}

/// One node where presence goes through groups of at most three members:
/// a owns "Small" (with b and c) and "Big" (with b, d and e) and has posted
/// in both, so a's presence goes through the small one only; `outsider` is
/// in neither.
pub(super) struct SmallAndBig {
    pub(super) app: TestApp,
    pub(super) a: TestUser,
    pub(super) b: TestUser,
    pub(super) c: TestUser,
    pub(super) d: TestUser,
    pub(super) e: TestUser,
    pub(super) outsider: TestUser,
    pub(super) small: Uuid,
    pub(super) big: Uuid,
    /// a's first messages: in the small group, then in the big one.
    pub(super) hellos: [Uuid; 2],
}

impl SmallAndBig {
    pub(super) async fn start(backend: Backend) -> Self {
        let app = TestApp::spawn_with(backend, &[("PRESENCE_GROUP_LIMIT", "3")]).await;
        let (a, b, c, d, e, outsider) = (
            app.new_user().await,
            app.new_user().await,
            app.new_user().await,
            app.new_user().await,
            app.new_user().await,
            app.new_user().await,
        );
        let small = app.create_group(&a, "Small", &[&b, &c]).await;
        let big = app.create_group(&a, "Big", &[&b, &d, &e]).await;
        let hellos = [
            app.send_to_group(&a, small, "hello small").await.id,
            app.send_to_group(&a, big, "hello big").await.id,
        ];
        Self {
            app,
            a,
            b,
            c,
            d,
            e,
            outsider,
            small,
            big,
            hellos,
        }
    }
}
