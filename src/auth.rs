//! Supabase-compatible token verification and the [`AuthUser`] extractor.
//!
//! Accepted: HS256 signed with `JWT_SECRET`, and RS256/ES256 signed by a key
//! from the JWKS endpoint. Each token is checked against exactly one
//! algorithm, chosen by the key that verifies it, never by the token alone:
//! `alg: none` or an HS256 token where only JWKS keys are configured is
//! refused. Tokens never appear in logs or error messages.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::coalesce::Coalescer;
use crate::config::{AuthConfig, Secret};
use crate::error::ApiError;
use crate::store::Store;

/// The signed-in user, as proven by a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    pub id: Uuid,
    pub email: String,
    /// When the token stops being valid; a WebSocket session closes then.
    pub expires_at: DateTime<Utc>,
}

/// Why a token was refused. The label is bounded, so it can be a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token algorithm not accepted")]
    BadAlgorithm,
    #[error("token audience not accepted")]
    BadAudience,
    #[error("token issuer not accepted")]
    BadIssuer,
    #[error("token signed by an unknown key")]
    UnknownKey,
    #[error("token subject is not a user id")]
    BadSubject,
    #[error("token role is not authenticated")]
    BadRole,
    #[error("signing keys unavailable")]
    KeysUnavailable,
}

impl AuthError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::BadAlgorithm => "bad_algorithm",
            Self::BadAudience => "bad_audience",
            Self::BadIssuer => "bad_issuer",
            Self::UnknownKey => "unknown_key",
            Self::BadSubject => "bad_subject",
            Self::BadRole => "bad_role",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        crate::metrics::auth_failure(err.reason());
        match err {
            AuthError::KeysUnavailable => ApiError::new(
                crate::error::ErrorCode::Unavailable,
                "signing keys are unavailable, retry",
            ),
            other => ApiError::unauthorized(other.to_string()),
        }
    }
}

fn map_jwt_error(err: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAudience => AuthError::BadAudience,
        ErrorKind::InvalidIssuer => AuthError::BadIssuer,
        ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => AuthError::BadAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => AuthError::BadIssuer,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => AuthError::BadAlgorithm,
        _ => AuthError::Malformed,
    }
}

/// The claims ochat reads. Supabase access tokens carry more; they are ignored.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<serde_json::Value>,
}

/// Keys fetched from a JWKS endpoint. The set is fetched again when a
/// token names a `kid` not in it (at most once per `refetch_interval`, so
/// made-up `kid`s cannot hammer the auth server) and when it is older than
/// `refresh_interval`, so a key the provider removed (rotated out, or
/// revoked after a leak) stops verifying within that interval (within
/// twice that while the provider cannot be reached).
struct JwksCache {
    url: String,
    client: reqwest::Client,
    keys: tokio::sync::RwLock<KeySet>,
    /// Held while fetching, so concurrent misses share one request; holds
    /// when the last fetch was tried.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
    refetch_interval: Duration,
    refresh_interval: Duration,
}

/// The keys of the last successful fetch, and when it was.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    fetched: Option<Instant>,
}

impl KeySet {
    fn stale(&self, refresh: Duration) -> bool {
        self.fetched.is_none_or(|at| at.elapsed() >= refresh)
    }
}

impl JwksCache {
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), AuthError> {
        let cached = {
            let set = self.keys.read().await;
            let found = set.keys.get(kid).cloned();
            if !set.stale(self.refresh_interval)
                && let Some(found) = found
            {
                return Ok(found);
            }
            found
        };
        // A known key in a stale set: refresh, unless a fetch is already
        // under way; then the stale key answers rather than every request
        // waiting for the auth server.
        let mut last = match (cached.clone(), self.last_fetch.try_lock()) {
            (_, Ok(guard)) => guard,
            (Some(found), Err(_)) => return Ok(found),
            (None, Err(_)) => self.last_fetch.lock().await,
        };
        // Another request may have fetched while this one waited.
        {
            let set = self.keys.read().await;
            if !set.stale(self.refresh_interval)
                && let Some(found) = set.keys.get(kid)
            {
                return Ok(found.clone());
            }
        }
        // Tried lately: an unknown `kid` waits `refetch_interval`, a stale
        // set its refresh interval if shorter (and no failing auth server
        // is asked again by every request meanwhile).
        let wait = self.refetch_interval.min(self.refresh_interval);
        if last.is_some_and(|at| at.elapsed() < wait) {
            return cached.ok_or(AuthError::UnknownKey);
        }
        *last = Some(Instant::now());
        let set = match self.fetch().await {
            Ok(set) => set,
            // The auth server is unreachable: a key it served before still
            // verifies for a while (refusing every token during a blip
            // would sign everyone out), but not past twice the refresh
            // interval, so a key revoked at the provider cannot be kept
            // alive by keeping the provider out of reach.
            Err(e) => {
                let fresh_enough = self
                    .keys
                    .read()
                    .await
                    .fetched
                    .is_some_and(|at| at.elapsed() < self.refresh_interval * 2);
                return cached.filter(|_| fresh_enough).ok_or(e);
            }
        };
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            if let (Some(kid), Some(parsed)) = (&jwk.common.key_id, parse_jwk(jwk)) {
                keys.insert(kid.clone(), parsed);
            }
        }
        tracing::info!(url = %self.url, keys = keys.len(), "fetched signing keys");
        let found = keys.get(kid).cloned();
        *self.keys.write().await = KeySet {
            keys,
            fetched: Some(Instant::now()),
        };
        found.ok_or(AuthError::UnknownKey)
    }

    async fn fetch(&self) -> Result<JwkSet, AuthError> {
        let response = self.client.get(&self.url).send().await.map_err(|e| {
            tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed");
            AuthError::KeysUnavailable
        })?;
        let response = response.error_for_status().map_err(|e| {
            tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed");
            AuthError::KeysUnavailable
        })?;
        response.json::<JwkSet>().await.map_err(|e| {
            tracing::warn!(url = %self.url, error = %e, "JWKS response is not a key set");
            AuthError::KeysUnavailable
        })
    }
}

/// Only RS256 and ES256 keys are taken from a JWKS; anything else is skipped.
fn parse_jwk(jwk: &Jwk) -> Option<(DecodingKey, Algorithm)> {
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    if let Some(declared) = jwk.common.key_algorithm
        && format!("{declared:?}") != format!("{alg:?}")
    {
        return None;
    }
    DecodingKey::from_jwk(jwk).ok().map(|key| (key, alg))
}

pub struct Verifier {
    hs256: Option<DecodingKey>,
    jwks: Option<JwksCache>,
    audience: String,
    issuer: Option<String>,
    leeway: u64,
}

impl Verifier {
    pub fn new(config: &AuthConfig, secret: Option<&Secret>) -> Self {
        // reqwest needs a process-wide TLS provider for https JWKS URLs; a
        // second install (several nodes in one process) is a harmless no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let jwks = config.jwks_url.as_ref().map(|url| JwksCache {
            url: url.clone(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("a TLS provider is installed at start-up"),
            keys: Default::default(),
            last_fetch: Default::default(),
            refetch_interval: config.jwks_refetch_interval,
            refresh_interval: config.jwks_refresh_interval,
        });
        Self {
            hs256: secret.map(|s| DecodingKey::from_secret(s.expose().as_bytes())),
            jwks,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            leeway: config.leeway_secs,
        }
    }

    pub async fn verify(&self, token: &str) -> Result<AuthUser, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let (key, alg) = match header.alg {
            Algorithm::HS256 => (
                self.hs256.clone().ok_or(AuthError::BadAlgorithm)?,
                Algorithm::HS256,
            ),
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self.jwks.as_ref().ok_or(AuthError::BadAlgorithm)?;
                let kid = header.kid.as_deref().ok_or(AuthError::UnknownKey)?;
                let (key, alg) = jwks.key(kid).await?;
                if alg != header.alg {
                    return Err(AuthError::BadAlgorithm);
                }
                (key, alg)
            }
            _ => return Err(AuthError::BadAlgorithm),
        };
        let mut validation = Validation::new(alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        // `aud` (and `iss`, when configured) must be present, not merely
        // right when present: a token minted for another audience of the
        // same signer (or for none) must not open a chat session.
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "aud"]);
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
            validation.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(map_jwt_error)?;
        let claims = data.claims;
        // Supabase signs its anon and service_role API keys with the same
        // secret as user tokens; only a signed-in user's token says
        // `authenticated`, and a token without a role is no user's.
        if claims.role.as_deref() != Some("authenticated") {
            return Err(AuthError::BadRole);
        }
        let id = Uuid::parse_str(&claims.sub).map_err(|_| AuthError::BadSubject)?;
        let expires_at = DateTime::from_timestamp(claims.exp, 0).ok_or(AuthError::Malformed)?;
        // An email with control characters (U+0000 cannot be stored) is no
        // email an identity provider issues.
        if claims
            .email
            .as_deref()
            .is_some_and(|e| e.contains(char::is_control))
        {
            return Err(AuthError::Malformed);
        }
        // Supabase users without an email (phone, anonymous) still need a
        // unique value for the seed's NOT NULL UNIQUE column.
        let email = claims
            .email
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| format!("{id}@users.invalid"));
        Ok(AuthUser {
            id,
            email,
            expires_at,
        })
    }
}

/// Verifies tokens and makes sure their user exists in storage.
pub struct Authenticator {
    verifier: Verifier,
    /// Users already upserted by this node, so each request does not write.
    /// Bounded: cleared when it grows past `KNOWN_USERS_CAP`.
    known: Mutex<HashSet<(Uuid, String)>>,
    /// New users' upserts, one statement for those that arrive together
    /// (a connect storm of new users).
    upserts: Coalescer<(Uuid, String), ()>,
}

/// Lanes writing new users: two, so one batch gathers while the other
/// commits.
const UPSERT_LANES: usize = 2;
/// New users written in one statement, at most.
const UPSERT_BATCH: usize = 512;

const KNOWN_USERS_CAP: usize = 100_000;

impl Authenticator {
    /// `stop`, `tasks`: what stops and owns the upsert lanes.
    pub fn new(
        verifier: Verifier,
        store: Arc<dyn Store>,
        (stop, tasks): (CancellationToken, &TaskTracker),
    ) -> Self {
        let upserts = Coalescer::start(
            "user upserts",
            UPSERT_LANES,
            UPSERT_BATCH,
            (stop, tasks),
            move |users: Vec<(Uuid, String)>| {
                let store = store.clone();
                async move {
                    store.upsert_users(&users).await?;
                    Ok(vec![(); users.len()])
                }
            },
        );
        Self {
            verifier,
            known: Mutex::new(HashSet::new()),
            upserts,
        }
    }

    pub async fn authenticate(&self, token: Option<&str>) -> Result<AuthUser, ApiError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let user = self.verifier.verify(token).await?;
        let key = (user.id, user.email.clone());
        if !self.known.lock().expect("not poisoned").contains(&key) {
            self.upserts.ask(key.clone()).await?;
            let mut known = self.known.lock().expect("not poisoned");
            if known.len() >= KNOWN_USERS_CAP {
                known.clear();
            }
            known.insert(key);
        }
        Ok(user)
    }
}

/// The token from an `Authorization: Bearer` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Who a request's token proved the caller to be (or why it did not),
/// found once by the admission layer (`http::admit`) so handlers
/// do not verify the token again.
#[derive(Clone)]
pub struct Identified(pub Result<AuthUser, ApiError>);

impl<S> FromRequestParts<S> for AuthUser
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Identified>() {
            Some(Identified(identity)) => identity.clone(),
            None => {
                let auth = Arc::<Authenticator>::from_ref(state);
                auth.authenticate(bearer(&parts.headers)).await
            }
        }
    }
}

/// Signs an HS256 token shaped like a Supabase access token.
pub fn mint(secret: &Secret, sub: Uuid, email: &str, ttl: Duration) -> String {
    let now = Utc::now().timestamp();
    let claims = Claims {
        sub: sub.to_string(),
        email: Some(email.to_owned()),
        role: Some("authenticated".into()),
        exp: now + ttl.as_secs() as i64,
        iat: Some(now),
        aud: Some(serde_json::Value::String("authenticated".into())),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose().as_bytes()),
    )
    .expect("HS256 signing with an in-memory secret cannot fail")
}

/// Development mode's secret: generated once and kept in `path`, so restarts
/// and `ochat token` agree on it.
pub fn development_secret(path: &Path) -> std::io::Result<Secret> {
    match std::fs::read_to_string(path) {
        Ok(existing) if existing.trim().len() >= 32 => return Ok(Secret::new(existing.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let bytes: [u8; 32] = rand::random();
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    write_private(path, &secret)?;
    Ok(Secret::new(secret))
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}
