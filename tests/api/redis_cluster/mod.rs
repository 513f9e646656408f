//! Past one Redis: the bus and presence contracts on every backend (in
//! process, one Redis, a real local Redis Cluster), nodes chatting over a
//! cluster, a master killed and slots resharded under load, and bad cluster
//! configuration refused with one clear line.
//!
//! - [`contract`]: the bus and presence contracts, run against each backend.
//! - [`nodes`]: nodes chatting over a cluster, and bad cluster configuration.
//! - [`faults`]: a master killed and slots resharded under load.

mod contract;
mod faults;
mod nodes;

use std::collections::HashSet;
use std::sync::Arc;

use ochat::backplane::{self, Backplane};
use ochat::config::{RedisConfig, Secret};
use uuid::Uuid;

use crate::helpers::{Backend, LocalCluster, TestApp, TestDatabase, TestUser};

pub(super) fn cluster_config(cluster: &LocalCluster) -> RedisConfig {
    RedisConfig::Cluster(
        cluster
            .seeds()
            .split(',')
            .map(|s| Secret::new(s.to_owned()))
            .collect(),
    )
}

/// Two in-process nodes sharing one Postgres and one local Redis Cluster.
pub(super) struct ClusterNodes {
    pub(super) nodes: Vec<TestApp>,
    pub(super) cluster: LocalCluster,
    pub(super) db: Arc<TestDatabase>,
    prefix: String,
    /// The cluster's shard view, to pick users by where their channel lives.
    view: Backplane,
}

impl ClusterNodes {
    pub(super) async fn start() -> Self {
        let cluster = LocalCluster::start().await;
        let db = Arc::new(TestDatabase::new(Backend::Postgres).await);
        let seeds = cluster.seeds();
        let prefix = format!("t{}", Uuid::now_v7().simple());
        let env: Vec<(&str, &str)> = vec![
            ("REDIS_CLUSTER_URLS", seeds.as_str()),
            ("REDIS_PREFIX", prefix.as_str()),
            ("REDIS_PROBE_INTERVAL", "1s"),
            ("PRESENCE_TTL", "3s"),
        ];
        let mut nodes = Vec::new();
        for _ in 0..2 {
            nodes.push(TestApp::spawn_on(db.clone(), &env).await);
        }
        let view = Backplane::connect(&cluster_config(&cluster)).await.unwrap();
        Self {
            nodes,
            cluster,
            db,
            prefix,
            view,
        }
    }

    /// The master (`host:port`) whose shard holds `user`'s channel.
    pub(super) async fn shard_of(&self, user: Uuid) -> String {
        self.view.probe().await.expect("cluster healthy");
        let name = format!("{}:user:{user}", self.prefix);
        self.view
            .shards()
            .unwrap()
            .owner(backplane::slot(name.as_bytes()))
    }

    /// A new user whose channel lives on a shard not in `taken`.
    pub(super) async fn user_off(&self, node: usize, taken: &mut HashSet<String>) -> TestUser {
        loop {
            let user = self.nodes[node].new_user().await;
            if taken.insert(self.shard_of(user.id).await) {
                return user;
            }
        }
    }
}
