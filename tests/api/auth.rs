//! Token verification: HS256 with a shared secret, RS256/ES256 from a JWKS
//! served by a local HTTP server, and every way a token can be wrong.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ochat::auth::{AuthError, Verifier};
use ochat::config::{Config, Secret};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{Backend, TEST_SECRET, TestApp};

/// A signing key the test made, with its public JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

fn rsa_key(kid: &str) -> TestKey {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
    let der = key.to_pkcs1_der().unwrap();
    TestKey {
        kid: kid.into(),
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(der.as_bytes()),
        jwk: json!({
            "kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        }),
    }
}

fn ec_key(kid: &str) -> TestKey {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::EncodePrivateKey;
    let key = p256::SecretKey::random(&mut rand_core::OsRng);
    let point = key.public_key().to_encoded_point(false);
    TestKey {
        kid: kid.into(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(key.to_pkcs8_der().unwrap().as_bytes()),
        jwk: json!({
            "kty": "EC", "kid": kid, "alg": "ES256", "crv": "P-256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        }),
    }
}

/// A JWKS endpoint whose key set the test can swap, counting fetches.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
}

impl JwksServer {
    async fn start(keys: &[&TestKey]) -> Self {
        let set = Arc::new(Mutex::new(
            keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>(),
        ));
        let fetches = Arc::new(AtomicUsize::new(0));
        let router = Router::new().route("/auth/v1/.well-known/jwks.json", {
            let (set, fetches) = (set.clone(), fetches.clone());
            get(move || {
                fetches.fetch_add(1, Ordering::SeqCst);
                let keys = set.lock().unwrap().clone();
                async move { axum::Json(json!({ "keys": keys })) }
            })
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self {
            url: format!("http://{addr}"),
            keys: set,
            fetches,
        }
    }

    fn publish(&self, keys: &[&TestKey]) {
        *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }
}

fn claims(sub: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": sub, "email": "a@example.com", "aud": "authenticated", "role": "authenticated", "exp": now + 600, "iat": now})
}

fn sign(key: &TestKey, claims: &Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &key.encoding).unwrap()
}

fn sign_hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn verifier(vars: &[(&str, &str)]) -> Verifier {
    let config = Config::from_vars(vars.iter().copied()).unwrap();
    Verifier::new(&config.auth, config.auth.jwt_secret.as_ref())
}

fn hs256_verifier() -> Verifier {
    verifier(&[("JWT_SECRET", TEST_SECRET)])
}

#[tokio::test]
async fn hs256_tokens_are_checked_claim_by_claim() {
    let v = hs256_verifier();
    let sub = Uuid::now_v7().to_string();
    let now = chrono::Utc::now().timestamp();
    let ok = v
        .verify(&sign_hs256(TEST_SECRET, &claims(&sub)))
        .await
        .unwrap();
    assert_eq!(ok.id.to_string(), sub);
    assert_eq!(ok.email, "a@example.com");

    let with = |patch: Value| {
        let mut c = claims(&sub);
        for (k, val) in patch.as_object().unwrap() {
            c[k] = val.clone();
        }
        sign_hs256(TEST_SECRET, &c)
    };
    let cases = [
        (
            "expired",
            with(json!({"exp": now - 3600})),
            AuthError::Expired,
        ),
        (
            "not yet valid",
            with(json!({"nbf": now + 3600})),
            AuthError::NotYetValid,
        ),
        (
            "wrong audience",
            with(json!({"aud": "someone-else"})),
            AuthError::BadAudience,
        ),
        (
            "non-uuid sub",
            with(json!({"sub": "alice"})),
            AuthError::BadSubject,
        ),
        (
            "anon key",
            with(json!({"role": "anon"})),
            AuthError::BadRole,
        ),
        (
            "service role key",
            with(json!({"role": "service_role"})),
            AuthError::BadRole,
        ),
        (
            "wrong signature",
            sign_hs256("another-secret-that-is-also-long-enough!", &claims(&sub)),
            AuthError::BadSignature,
        ),
        ("garbage", "not.a.token".to_owned(), AuthError::Malformed),
    ];
    for (what, token, expected) in cases {
        assert_eq!(v.verify(&token).await.unwrap_err(), expected, "{what}");
    }

    // `aud` may be an array that contains the accepted audience.
    let array = with(json!({"aud": ["other", "authenticated"]}));
    assert!(v.verify(&array).await.is_ok());
    // A token with no email still gets a unique placeholder.
    let mut no_email = claims(&sub);
    no_email.as_object_mut().unwrap().remove("email");
    let user = v.verify(&sign_hs256(TEST_SECRET, &no_email)).await.unwrap();
    assert_eq!(user.email, format!("{sub}@users.invalid"));
}

#[tokio::test]
async fn alg_none_is_refused() {
    let v = hs256_verifier();
    let encode = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let token = format!(
        "{}.{}.",
        encode(&json!({"alg": "none", "typ": "JWT"})),
        encode(&claims(&Uuid::now_v7().to_string()))
    );
    assert!(v.verify(&token).await.is_err());
}

#[tokio::test]
async fn jwks_keys_verify_rs256_and_es256_and_nothing_else() {
    let (rsa, ec) = (rsa_key("rsa-1"), ec_key("ec-1"));
    let server = JwksServer::start(&[&rsa, &ec]).await;
    let v = verifier(&[("SUPABASE_URL", &server.url)]);
    let sub = Uuid::now_v7().to_string();

    assert_eq!(
        v.verify(&sign(&rsa, &claims(&sub)))
            .await
            .unwrap()
            .id
            .to_string(),
        sub
    );
    assert_eq!(
        v.verify(&sign(&ec, &claims(&sub)))
            .await
            .unwrap()
            .id
            .to_string(),
        sub
    );
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1, "keys are cached");

    // An HS256 token where only JWKS is configured (even one "signed" with a
    // public key as the secret) is refused.
    let hs = sign_hs256(TEST_SECRET, &claims(&sub));
    assert_eq!(v.verify(&hs).await.unwrap_err(), AuthError::BadAlgorithm);
    // A key from the set used with another algorithm's header is refused.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("ec-1".into());
    let confused = jsonwebtoken::encode(&header, &claims(&sub), &rsa.encoding).unwrap();
    assert_eq!(
        v.verify(&confused).await.unwrap_err(),
        AuthError::BadAlgorithm
    );
    // Signed by a key that is not in the set, under a known kid.
    let impostor = TestKey {
        kid: "rsa-1".into(),
        ..rsa_key("x")
    };
    assert_eq!(
        v.verify(&sign(&impostor, &claims(&sub))).await.unwrap_err(),
        AuthError::BadSignature
    );
}

#[tokio::test]
async fn unknown_kids_refetch_at_most_once_per_interval() {
    let key = ec_key("k1");
    let server = JwksServer::start(&[&key]).await;
    let v = verifier(&[(
        "JWKS_URL",
        &format!("{}/auth/v1/.well-known/jwks.json", server.url),
    )]);
    let sub = Uuid::now_v7().to_string();
    v.verify(&sign(&key, &claims(&sub))).await.unwrap();

    for i in 0..20 {
        let made_up = TestKey {
            kid: format!("made-up-{i}"),
            ..ec_key("x")
        };
        assert_eq!(
            v.verify(&sign(&made_up, &claims(&sub))).await.unwrap_err(),
            AuthError::UnknownKey
        );
    }
    assert_eq!(
        server.fetches.load(Ordering::SeqCst),
        1,
        "made-up kids within the interval fetch nothing"
    );
}

#[tokio::test]
async fn rotated_keys_are_picked_up() {
    let (old, new) = (rsa_key("2026-01"), ec_key("2026-02"));
    let server = JwksServer::start(&[&old]).await;
    let v = verifier(&[
        ("SUPABASE_URL", &server.url),
        ("JWKS_REFETCH_INTERVAL", "100ms"),
    ]);
    let sub = Uuid::now_v7().to_string();
    v.verify(&sign(&old, &claims(&sub))).await.unwrap();

    server.publish(&[&new]);
    // Waits out JWKS_REFETCH_INTERVAL (100 ms) since the first fetch: the rule under test.
    tokio::time::sleep(Duration::from_millis(150)).await;
    v.verify(&sign(&new, &claims(&sub)))
        .await
        .expect("the new kid triggers a refetch");
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);

    // The refetched set no longer holds the old key, so it stops working.
    assert_eq!(
        v.verify(&sign(&old, &claims(&sub))).await.unwrap_err(),
        AuthError::UnknownKey
    );
}

#[tokio::test]
async fn an_unreachable_jwks_is_unavailable_not_unauthorized() {
    let v = verifier(&[("JWKS_URL", "http://127.0.0.1:9/jwks.json")]);
    let key = ec_key("k");
    let err = v
        .verify(&sign(&key, &claims(&Uuid::now_v7().to_string())))
        .await
        .unwrap_err();
    assert_eq!(err, AuthError::KeysUnavailable);
}

#[tokio::test]
async fn a_jwks_node_creates_users_from_their_first_request() {
    let key = rsa_key("k1");
    let server = JwksServer::start(&[&key]).await;
    let app = TestApp::spawn_with(
        Backend::Sqlite,
        &[("JWT_SECRET", ""), ("SUPABASE_URL", &server.url)],
    )
    .await;
    let id = Uuid::now_v7();
    let token = sign(&key, &claims(&id.to_string()));

    let (status, body) = app.get("/users/me", &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], json!(id));
    assert_eq!(body["email"], "a@example.com");

    let hs = sign_hs256(TEST_SECRET, &claims(&id.to_string()));
    let (status, body) = app.get("/users/me", &hs).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!({"error": {"code": "unauthorized", "message": "token algorithm not accepted"}})
    );
}

#[test]
fn minted_tokens_look_like_supabase_access_tokens() {
    let id = Uuid::now_v7();
    let token = ochat::auth::mint(
        &Secret::new(TEST_SECRET),
        id,
        "a@example.com",
        Duration::from_secs(3600),
    );
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["sub"], json!(id));
    assert_eq!(claims["aud"], "authenticated");
    assert_eq!(claims["role"], "authenticated");
    let (exp, iat) = (
        claims["exp"].as_i64().unwrap(),
        claims["iat"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 3600);
}

/// `aud` and `role` must be present (an HS256 token with only `sub` and
/// `exp` opens nothing), and `iss` too when one is configured.
#[tokio::test]
async fn audience_role_and_configured_issuer_are_required() {
    let sub = Uuid::now_v7().to_string();
    let without = |claim: &str| {
        let mut c = claims(&sub);
        c.as_object_mut().unwrap().remove(claim);
        sign_hs256(TEST_SECRET, &c)
    };
    let v = hs256_verifier();
    let now = chrono::Utc::now().timestamp();
    let bare = sign_hs256(TEST_SECRET, &json!({"sub": sub, "exp": now + 600}));
    assert_eq!(v.verify(&bare).await.unwrap_err(), AuthError::BadAudience);
    assert_eq!(
        v.verify(&without("aud")).await.unwrap_err(),
        AuthError::BadAudience
    );
    assert_eq!(
        v.verify(&without("role")).await.unwrap_err(),
        AuthError::BadRole
    );

    let issuer = "https://abc.supabase.co/auth/v1";
    let v = verifier(&[("JWT_SECRET", TEST_SECRET), ("JWT_ISSUER", issuer)]);
    assert_eq!(
        v.verify(&without("iss")).await.unwrap_err(),
        AuthError::BadIssuer,
        "a configured issuer must be present"
    );
    let mut wrong = claims(&sub);
    wrong["iss"] = json!("https://evil.example/auth/v1");
    assert_eq!(
        v.verify(&sign_hs256(TEST_SECRET, &wrong))
            .await
            .unwrap_err(),
        AuthError::BadIssuer
    );
    let mut right = claims(&sub);
    right["iss"] = json!(issuer);
    assert!(v.verify(&sign_hs256(TEST_SECRET, &right)).await.is_ok());
}

/// The key set is fetched again on a schedule, so a key the provider
/// dropped (revoked after a leak) stops verifying although no token named
/// an unknown `kid`.
#[tokio::test]
async fn a_key_the_provider_dropped_stops_verifying() {
    let (kept, dropped) = (ec_key("kept"), rsa_key("dropped"));
    let server = JwksServer::start(&[&kept, &dropped]).await;
    let v = verifier(&[
        ("SUPABASE_URL", &server.url),
        ("JWKS_REFRESH_INTERVAL", "200ms"),
    ]);
    let sub = Uuid::now_v7().to_string();
    v.verify(&sign(&dropped, &claims(&sub))).await.unwrap();

    server.publish(&[&kept]);
    // Lets the key set age past JWKS_REFRESH_INTERVAL (200 ms): the rule under test.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        v.verify(&sign(&dropped, &claims(&sub))).await.unwrap_err(),
        AuthError::UnknownKey
    );
    v.verify(&sign(&kept, &claims(&sub))).await.unwrap();
    assert_eq!(server.fetches.load(Ordering::SeqCst), 2);
}

/// Thousands of made-up `kid`s cost the auth server one fetch per interval
/// and grow nothing.
#[tokio::test]
async fn thousands_of_unknown_kids_fetch_once() {
    let key = ec_key("real");
    let server = JwksServer::start(&[&key]).await;
    let v = verifier(&[("SUPABASE_URL", &server.url)]);
    let sub = Uuid::now_v7().to_string();
    let forger = ec_key("forger");
    for i in 0..3000 {
        let made_up = TestKey {
            kid: format!("kid-{i}"),
            alg: forger.alg,
            encoding: forger.encoding.clone(),
            jwk: Value::Null,
        };
        assert_eq!(
            v.verify(&sign(&made_up, &claims(&sub))).await.unwrap_err(),
            AuthError::UnknownKey
        );
    }
    assert_eq!(server.fetches.load(Ordering::SeqCst), 1);
    v.verify(&sign(&key, &claims(&sub))).await.unwrap();
}

/// The key confusion attack: an HS256 token whose "secret" is the
/// provider's public key. HS256 verifies only with `JWT_SECRET`, so it is
/// refused whether or not a secret is configured.
#[tokio::test]
async fn hs256_signed_with_a_jwks_public_key_is_refused() {
    let key = rsa_key("k1");
    let server = JwksServer::start(&[&key]).await;
    let public = serde_json::to_string(&key.jwk).unwrap();
    let sub = Uuid::now_v7().to_string();
    let forged = sign_hs256(&public, &claims(&sub));
    let jwks_only = verifier(&[("SUPABASE_URL", &server.url)]);
    assert_eq!(
        jwks_only.verify(&forged).await.unwrap_err(),
        AuthError::BadAlgorithm
    );
    let both = verifier(&[("SUPABASE_URL", &server.url), ("JWT_SECRET", TEST_SECRET)]);
    assert_eq!(
        both.verify(&forged).await.unwrap_err(),
        AuthError::BadSignature
    );
}
