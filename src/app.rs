//! Builds a node: storage, bus, presence, router, listeners and background
//! tasks; runs it until a shutdown signal, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::RequestBodyDeadlineLayer;
use tower_http::trace::TraceLayer;

use crate::auth::{self, Authenticator, Verifier};
use crate::backplane::Backplane;
use crate::budget::Budgets;
use crate::bus::SharedBus;
use crate::bus::memory::MemoryBus;
use crate::bus::redis::RedisBus;
use crate::chat::{Chat, MessageWriter, WriterParts};
use crate::config::{Config, DatabaseConfig, Secret};
use crate::presence::SharedPresence;
use crate::presence::memory::MemoryPresence;
use crate::presence::redis::RedisPresence;
use crate::state::{AppState, Shared};
use crate::store;
use crate::ws::hub::Hub;
use std::time::Duration;

pub struct Application {
    listener: TcpListener,
    metrics_port: Option<u16>,
    router: Router,
    state: AppState,
}

/// The secret `ochat token` and HS256 verification use: `JWT_SECRET`, or in
/// development mode a generated one kept beside the embedded database.
pub fn signing_secret(config: &Config) -> anyhow::Result<Option<Secret>> {
    if let Some(secret) = &config.auth.jwt_secret {
        return Ok(Some(secret.clone()));
    }
    if !config.auth.is_development() {
        return Ok(None);
    }
    let path = development_secret_path(config);
    let secret = auth::development_secret(&path)
        .with_context(|| format!("Failed to read or create {}", path.display()))?;
    Ok(Some(secret))
}

pub fn development_secret_path(config: &Config) -> PathBuf {
    match &config.database {
        DatabaseConfig::Sqlite(path) => path.with_extension("dev-secret"),
        DatabaseConfig::Postgres(_) => PathBuf::from("ochat.dev-secret"),
    }
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let metrics = crate::metrics::install();
        crate::metrics::build_info(&config.node_id);

        if config.auth.is_development() {
            if !config.server_host.is_loopback() {
                bail!(
                    "refusing to start: no JWT_SECRET, SUPABASE_URL or JWKS_URL is set (development auth) \
                     and SERVER_HOST {} is not a loopback address",
                    config.server_host
                );
            }
            tracing::warn!(
                secret_file = %development_secret_path(&config).display(),
                "DEVELOPMENT AUTH: no JWT_SECRET or JWKS configured; tokens are signed with a generated \
                 secret (mint one with `ochat token`). Never expose this node."
            );
        }
        let secret = signing_secret(&config)?;

        let store = store::open(&config).await?;
        let hub = Arc::new(Hub::default());
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let flush = CancellationToken::new();
        let late_tasks = TaskTracker::new();
        let (bus, presence): (SharedBus, SharedPresence) = match &config.redis {
            None => (
                Arc::new(MemoryBus::new(hub.clone())),
                Arc::new(MemoryPresence::default()),
            ),
            Some(redis) => {
                let backplane = Arc::new(Backplane::connect(redis).await?);
                let bus = RedisBus::start(
                    backplane.clone(),
                    config.redis_prefix.clone(),
                    config.redis_probe_interval,
                    hub.clone(),
                    (shutdown.clone(), &tasks),
                    (flush.clone(), &late_tasks),
                );
                let presence =
                    RedisPresence::new(backplane, &config.redis_prefix, config.presence_ttl);
                (Arc::new(bus), Arc::new(presence))
            }
        };
        tracing::info!(
            node_id = %config.node_id,
            storage = %config.database.describe(),
            replica = config.database_replica.is_some(),
            bus = %bus.describe(),
            presence = %presence.describe(),
            "backends"
        );

        let dev_secret = secret.clone().filter(|_| config.auth.is_development());
        let verifier = Verifier::new(&config.auth, secret.as_ref());
        let auth = Arc::new(Authenticator::new(
            verifier,
            store.clone(),
            (flush.clone(), &late_tasks),
        ));
        // SQLite has one writer at a time; Postgres overlaps two commits, so
        // one batch gathers while the other commits.
        let lanes = config.write_lanes.unwrap_or(match config.database {
            DatabaseConfig::Sqlite(_) => 1,
            DatabaseConfig::Postgres(_) => 2,
        });
        let files = crate::files::Files::open(
            &config.files,
            reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .context("Failed to build the file store's HTTP client")?,
        )
        .context("Failed to open the attachment store")?;
        let files = Arc::new(files);
        let writer = MessageWriter::start(
            WriterParts {
                store: store.clone(),
                bus: bus.clone(),
                files: files.clone(),
            },
            lanes,
            config.write_batch,
            config.commit_settle_timeout,
            shutdown.clone(),
            &tasks,
        );
        let chat = Arc::new(Chat::new(
            store.clone(),
            (files, config.files.clone()),
            writer,
            bus.clone(),
            presence.clone(),
            config.limits.clone(),
            presence_every(&config),
            tasks.clone(),
            (flush.clone(), &late_tasks),
        ));
        tasks.spawn(crate::ws::catchup::run(
            hub.clone(),
            store.clone(),
            config.gap_grace,
            shutdown.clone(),
        ));
        tasks.spawn(crate::chat::sweep_unsent(
            chat.clone(),
            UNSENT_SWEEP_EVERY,
            shutdown.clone(),
        ));
        tasks.spawn(crate::chat::keep_history(
            chat.clone(),
            config.message_retention,
            KEEP_HISTORY_EVERY,
            shutdown.clone(),
        ));
        let config = Arc::new(config);
        let state = AppState(Arc::new(Shared {
            config: config.clone(),
            chat,
            auth,
            store,
            bus,
            presence,
            hub,
            budgets: Arc::new(Budgets::new(&config.limits)),
            readiness: Arc::default(),
            draining: Arc::new(AtomicBool::new(false)),
            shutdown,
            tasks,
            flush,
            late_tasks,
        }));

        let listener = TcpListener::bind(SocketAddr::new(config.server_host, config.server_port))
            .await
            .with_context(|| {
                format!(
                    "Failed to bind {}:{}",
                    config.server_host, config.server_port
                )
            })?;
        let metrics_listener = match config.metrics_port {
            Some(port) => Some(
                TcpListener::bind(SocketAddr::new(config.server_host, port))
                    .await
                    .with_context(|| format!("Failed to bind metrics port {port}"))?,
            ),
            None => None,
        };

        let router = Router::new()
            .merge(crate::http::router(&config, dev_secret))
            .nest("/api/v1", crate::ws::router())
            .merge(crate::http::web::router(config.files.origin().as_deref()))
            .layer(DefaultBodyLimit::max(config.limits.max_body_bytes))
            // A body trickled in a byte at a time holds a connection and a
            // handler: the whole body must arrive by this deadline (a timeout
            // per frame would let a byte every few seconds through), or the
            // request fails with 408.
            .layer(RequestBodyDeadlineLayer::new(config.limits.request_body_timeout))
            // Uploads to the embedded file store are as large as an
            // attachment may be (the handler stops at the announced size)
            // and have as long as their signed URL works.
            .merge(
                crate::files::local::router()
                    .layer(RequestBodyDeadlineLayer::new(config.files.url_ttl)),
            )
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                crate::http::admit,
            ))
            .layer(axum::middleware::from_fn(crate::http::track))
            .layer(cors(&config.allowed_origins))
            .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::extract::Request| {
                // The path only: a query string may carry `?token=`.
                tracing::info_span!("http", method = %request.method(), path = %request.uri().path())
            }))
            .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
            .with_state(state.clone());

        let metrics_port = match metrics_listener {
            Some(listener) => {
                let port = listener.local_addr()?.port();
                serve_metrics(&state, listener, metrics);
                Some(port)
            }
            None => None,
        };
        let app = Self {
            listener,
            metrics_port,
            router,
            state,
        };
        app.spawn_presence_upkeep();
        app.spawn_budget_pruning();
        tracing::info!(addr = %app.listener.local_addr()?, "listening");
        Ok(app)
    }

    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default()
    }

    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `signal` resolves, then drains: readiness fails, every
    /// session is closed with 1001, background tasks stop within
    /// `SHUTDOWN_GRACE` of the signal, and the bus gets at most
    /// [`BUS_FLUSH`] more to publish what was committed last.
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state.clone();
        let stop = state.shutdown.clone();
        // When draining began: the server and the sessions share one
        // SHUTDOWN_GRACE from then, so an orchestrator can size its kill
        // timeout as preStop + SHUTDOWN_GRACE + BUS_FLUSH.
        let drain_started = Arc::new(std::sync::OnceLock::<tokio::time::Instant>::new());
        let watcher = {
            let state = state.clone();
            let drain_started = drain_started.clone();
            async move {
                tokio::select! {
                    () = signal => {}
                    () = state.shutdown.cancelled() => {}
                }
                let _ = drain_started.set(tokio::time::Instant::now());
                tracing::info!("draining");
                state.draining.store(true, Ordering::Relaxed);
                state
                    .hub
                    .close_all(crate::ws::handle::CloseReason::Shutdown);
                state.shutdown.cancel();
            }
        };
        let limits = &state.config.limits;
        let server_limits = crate::server::ServerLimits {
            max_connections: limits.max_connections,
            header_read_timeout: limits.header_read_timeout,
        };
        let served = crate::server::serve(self.listener, self.router, server_limits, watcher);
        let grace = state.config.shutdown_grace;
        tokio::pin!(served);
        tokio::select! {
            () = &mut served => {}
            () = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("grace period over; closing remaining connections");
            }
        };
        // Whatever ended the server, every task is told to stop (a no-op
        // after a signal); a server that failed gives its tasks a full grace.
        state.shutdown.cancel();
        state.tasks.close();
        let deadline = *drain_started.get_or_init(tokio::time::Instant::now) + grace;
        if tokio::time::timeout_at(deadline, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop within the grace period");
        }
        // Sessions and writers are done: publish what they committed last.
        state.flush.cancel();
        state.late_tasks.close();
        if tokio::time::timeout(BUS_FLUSH, state.late_tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("the bus did not flush in time");
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// Forgets budgets that are full again, so their maps hold only the
    /// users and addresses active in the last moments, however many came.
    fn spawn_budget_pruning(&self) {
        let (budgets, stop) = (self.state.budgets.clone(), self.state.shutdown.clone());
        self.state.tasks.spawn(async move {
            let mut every = tokio::time::interval(BUDGET_PRUNE_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = every.tick() => budgets.prune(),
                }
            }
        });
    }

    /// Refreshes this node's presence keys (putting back any the store lost),
    /// sweeps sessions of dead nodes, and repairs announcements that failed.
    fn spawn_presence_upkeep(&self) {
        let state = self.state.clone();
        let every = presence_every(&state.config);
        self.state.tasks.spawn(async move {
            let mut heartbeat = tokio::time::interval(every);
            heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut repair = tokio::time::interval(REPAIR_EVERY.min(every));
            repair.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // Since when every heartbeat succeeded.
            let mut healthy_since: Option<Instant> = None;
            loop {
                tokio::select! {
                    () = state.shutdown.cancelled() => break,
                    _ = heartbeat.tick() => {
                        match state.presence.heartbeat(&state.hub.sessions()).await {
                            Ok(back) => {
                                healthy_since.get_or_insert_with(Instant::now);
                                // A session that closed while the heartbeat ran
                                // is not announced; the sweep settles it.
                                let back = back.into_iter().filter(|t| state.hub.has(t.user)).collect();
                                state.chat.restored(back).await;
                            }
                            Err(e) => {
                                healthy_since = None;
                                tracing::warn!(error = %e, "presence heartbeat failed");
                            }
                        }
                        state.chat.sweep_presence().await;
                    }
                    _ = repair.tick() => {
                        let healthy_for = healthy_since.map_or(Duration::ZERO, |t| t.elapsed());
                        state.chat.repair_presence(healthy_for).await;
                    }
                }
            }
        });
    }
}

/// How often a node refreshes its presence: three times per TTL.
fn presence_every(config: &Config) -> Duration {
    config.presence_ttl / 3
}

/// The most a stopping node waits, after SHUTDOWN_GRACE, for the bus to
/// publish what was committed last.
pub const BUS_FLUSH: Duration = Duration::from_secs(5);

/// How often idle request budgets are forgotten.
const BUDGET_PRUNE_EVERY: Duration = Duration::from_secs(10);

/// How often failed presence announcements are retried.
const REPAIR_EVERY: Duration = Duration::from_secs(1);

/// How often attachments announced and never sent are looked for (they are
/// kept a day: see `chat::attachments::UNSENT_KEPT`).
const UNSENT_SWEEP_EVERY: Duration = Duration::from_secs(600);
/// Weeks are prepared two ahead, and expire by the week: hourly is plenty.
const KEEP_HISTORY_EVERY: Duration = Duration::from_secs(3600);

/// Prometheus on its own listener, so scrapes never compete with (or get
/// exposed like) the public API.
fn serve_metrics(state: &AppState, listener: TcpListener, handle: PrometheusHandle) {
    let router = Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                handle.run_upkeep();
                handle.render()
            }
        }),
    );
    let stop = state.shutdown.clone();
    state.tasks.spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = server.await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    });
}

fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-request-id"),
        ]);
    if origins.iter().any(|o| o == "*") {
        return layer.allow_origin(AllowOrigin::any());
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    layer.allow_origin(AllowOrigin::list(list))
}
