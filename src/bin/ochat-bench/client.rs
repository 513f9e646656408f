//! Bench clients: users, tokens and lean WebSocket connections.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};
use uuid::Uuid;

use crate::Common;

pub type Ws = WebSocketStream<TcpStream>;

const NAMESPACE: Uuid = Uuid::from_u128(0x6f63_6861_7462_656e_6368_0000_0000_0001);

/// Bench user ids are derived from a tag and an index, so `seed` and `rest`
/// (or two runs) agree on them.
pub fn user_id(tag: &str, index: usize) -> Uuid {
    Uuid::new_v5(&NAMESPACE, format!("{tag}-{index}").as_bytes())
}

pub fn token(secret: &str, user: Uuid) -> String {
    ochat::auth::mint(
        &ochat::config::Secret::new(secret),
        user,
        &format!("{}@bench.invalid", user.simple()),
        Duration::from_secs(24 * 3600),
    )
}

/// Makes sure the users exist (their first authenticated request creates them).
pub async fn create_users(common: &Common, users: &[Uuid]) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let http = reqwest::Client::new();
    let base = common.urls[0].trim_end_matches('/').to_owned();
    let results: Vec<anyhow::Result<()>> = futures_util::stream::iter(users.iter().copied())
        .map(|user| {
            let (http, base) = (http.clone(), base.clone());
            let token = token(&common.secret, user);
            async move {
                let response = http
                    .get(format!("{base}/api/v1/users/me"))
                    .bearer_auth(token)
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("creating a user: {}", response.status());
                }
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Opens a WebSocket from 127.0.0.`source`, with small buffers so thousands
/// of idle clients stay cheap on the tool's side too.
pub async fn connect(base: &str, token: &str, source: u8) -> anyhow::Result<Ws> {
    let host = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let addr: SocketAddr = tokio::net::lookup_host(&host)
        .await?
        .find(SocketAddr::is_ipv4)
        .context("node address")?;
    let socket = TcpSocket::new_v4()?;
    if addr.ip().is_loopback() {
        socket.bind(SocketAddr::from((
            Ipv4Addr::new(127, 0, 0, source.max(1)),
            0,
        )))?;
    }
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    let request = format!("ws://{host}/api/v1/ws?token={token}").into_client_request()?;
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = client_async_with_config(request, tcp, Some(config)).await?;
    Ok(ws)
}
