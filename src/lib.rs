//! ochat: a horizontally scalable real-time chat backend.
//!
//! A map of the crate:
//! - [`config`]: typed settings from the environment.
//! - [`app`]: builds a node (storage, bus, presence, router) and runs it.
//! - [`auth`]: Supabase-compatible JWT verification, the `AuthUser` extractor.
//! - [`budget`]: request budgets per user and per address.
//! - [`protocol`]: WebSocket frames on the wire.
//! - [`ws`]: the WebSocket upgrade, session loop and the node's session hub.
//! - [`server`]: the listener: connection cap, header timeout, drain.
//! - [`http`]: the REST API.
//! - [`chat`]: the domain operations both HTTP and WebSocket call.
//! - [`coalesce`]: many callers' small requests answered by one statement.
//! - [`backplane`]: the Redis nodes share, one server or a Redis Cluster.
//! - [`bus`]: per-user event channels (in-process, Redis or sharded Redis Cluster pub/sub).
//! - [`presence`]: who is online (in-process or Redis).
//! - [`store`]: history and users (Postgres or SQLite); all SQL lives here.
//! - [`files`]: attachment bytes (an S3-compatible store, or a directory).
//! - [`metrics`]: Prometheus metric names and recording.
//! - [`error`]: the client-facing error and its mappings.

pub mod app;
pub mod auth;
pub mod backplane;
pub mod budget;
pub mod bus;
pub mod chat;
pub mod coalesce;
pub mod config;
pub mod error;
pub mod files;
pub mod http;
pub mod metrics;
pub mod presence;
pub mod protocol;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod ws;

pub use app::Application;
pub use config::Config;
