//! How tokens are verified: the secret, the key set and the claims a
//! token must carry.

use std::net::IpAddr;
use std::time::Duration;

use super::{ConfigError, Secret, Vars, bad};

/// How tokens are verified.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Supabase's legacy shared secret (HS256).
    pub jwt_secret: Option<Secret>,
    /// Where RS256/ES256 public keys come from; derived from `SUPABASE_URL`
    /// unless `JWKS_URL` names it.
    pub jwks_url: Option<String>,
    /// Accepted `aud` value (Supabase: `authenticated`).
    pub audience: String,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
    /// Least time between two JWKS fetches triggered by unknown `kid`s.
    pub jwks_refetch_interval: Duration,
    /// How old the fetched key set may grow before it is fetched again (a
    /// key the provider dropped stops verifying within this).
    pub jwks_refresh_interval: Duration,
}

impl AuthConfig {
    /// With neither a secret nor a JWKS source the node runs in development
    /// mode (a generated secret, loopback only).
    pub fn is_development(&self) -> bool {
        self.jwt_secret.is_none() && self.jwks_url.is_none()
    }
}

impl AuthConfig {
    pub(super) fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        // Signing keys fetched over plain HTTP could be swapped by anyone
        // on the path: https only, but for a server on this machine.
        let supabase_url = match vars.get("SUPABASE_URL") {
            None => None,
            Some(url) if is_key_source(url) => Some(url.trim_end_matches('/').to_owned()),
            Some(_) => {
                return Err(bad(
                    "SUPABASE_URL",
                    "expected an https:// URL (http:// only on loopback)",
                ));
            }
        };
        let jwks_url = match vars.get("JWKS_URL") {
            Some(url) if is_key_source(url) => Some(url.to_owned()),
            Some(_) => {
                return Err(bad(
                    "JWKS_URL",
                    "expected an https:// URL (http:// only on loopback)",
                ));
            }
            None => supabase_url.map(|base| format!("{base}/auth/v1/.well-known/jwks.json")),
        };
        let jwt_secret = vars.get("JWT_SECRET").map(Secret::new);
        if jwt_secret.as_ref().is_some_and(|s| s.expose().len() < 32) {
            return Err(bad("JWT_SECRET", "must be at least 32 characters"));
        }
        Ok(AuthConfig {
            jwt_secret,
            jwks_url,
            audience: vars
                .get("JWT_AUDIENCE")
                .unwrap_or("authenticated")
                .to_owned(),
            issuer: vars.get("JWT_ISSUER").map(str::to_owned),
            leeway_secs: vars.parse("JWT_LEEWAY_SECS", 30u64, "a number of seconds")?,
            jwks_refetch_interval: vars
                .duration("JWKS_REFETCH_INTERVAL", Duration::from_secs(30))?,
            jwks_refresh_interval: vars
                .duration("JWKS_REFRESH_INTERVAL", Duration::from_secs(600))?,
        })
    }
}

/// An https URL, or an http one whose host is this machine.
fn is_key_source(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}
