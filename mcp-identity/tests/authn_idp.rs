//! AuthnLayer against a real OpenID provider (oauth2-mock-server, started by the test): a good
//! token is accepted and its identity reaches the inner service; every bad-token class is refused
//! with 401 + the right `WWW-Authenticate` and no detail.

use crate::common;

use std::{convert::Infallible, sync::Arc, time::Duration};

use base64::Engine as _;
use bytes::Bytes;
use common::Idp;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use mcp_identity::{
    Authenticator, AuthnLayer, FailMode, Identity, JwksCache, JwtValidator, KeySource, Mode,
    ProtectedResourceMetadata, jwks::JwksTiming,
};
use serde_json::json;
use tower::{ServiceBuilder, ServiceExt, service_fn, util::BoxCloneSyncService};

const RESOURCE: &str = "http://127.0.0.1:7777/mcp";
const META: &str = "http://127.0.0.1:7777/.well-known/oauth-protected-resource/mcp";

type Svc = BoxCloneSyncService<
    Request<String>,
    Response<mcp_identity::authn::AuthnBody<Full<Bytes>>>,
    Infallible,
>;

fn timing() -> JwksTiming {
    JwksTiming {
        ttl: Duration::from_secs(300),
        min_refresh_interval: Duration::from_secs(30),
        fetch_timeout: Duration::from_millis(500),
        max_stale: Duration::from_secs(3600),
    }
}

fn validator(issuer: &str, timing: JwksTiming, fail: FailMode) -> JwtValidator {
    let jwks = JwksCache::new(
        KeySource::Discover {
            issuer: issuer.into(),
        },
        timing,
        fail,
    )
    .unwrap();
    JwtValidator::new(
        Arc::new(jwks),
        issuer,
        vec![RESOURCE.into()],
        vec![
            jsonwebtoken::Algorithm::RS256,
            jsonwebtoken::Algorithm::ES256,
        ],
    )
    .unwrap()
}

fn service(auth: Authenticator) -> Svc {
    let svc = ServiceBuilder::new()
        .layer(AuthnLayer::new(auth))
        .service(service_fn(|req: Request<String>| async move {
            let body = match req.extensions().get::<Arc<Identity>>() {
                Some(id) => serde_json::to_vec(&**id).unwrap(),
                None => b"none".to_vec(),
            };
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
        }));
    BoxCloneSyncService::new(svc)
}

fn auth(v: JwtValidator, mode: Mode) -> Authenticator {
    Authenticator::new(mode)
        .jwt(v)
        .metadata(ProtectedResourceMetadata::new(
            RESOURCE,
            vec!["http://idp".into()],
        ))
}

async fn call(svc: &Svc, authz: Option<&str>) -> (StatusCode, String, Option<Identity>) {
    let mut req = Request::post("/mcp");
    if let Some(a) = authz {
        req = req.header("authorization", a);
    }
    let res = svc
        .clone()
        .oneshot(req.body(String::new()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let id = serde_json::from_slice(&body).ok();
    if status != StatusCode::OK {
        assert!(body.is_empty(), "refusals carry no detail, got {body:?}");
    }
    (status, challenge, id)
}

fn good_claims(idp: &Idp) -> serde_json::Value {
    json!({"sub": "alice", "aud": RESOURCE, "iss": idp.issuer, "groups": ["eng", "sre"],
           "scope": "mcp:tools", "email": "alice@example.com", "jti": "t-1"})
}

fn invalid_token(challenge: &str) {
    assert_eq!(
        challenge,
        format!("Bearer error=\"invalid_token\", resource_metadata=\"{META}\"")
    );
}

#[tokio::test]
async fn real_token_accepted_and_identity_in_extensions() {
    let idp = Idp::start();
    let svc = service(auth(
        validator(&idp.issuer, timing(), FailMode::Closed),
        Mode::Required,
    ));
    let token = idp.mint(good_claims(&idp), 600).await;
    let (status, _, id) = call(&svc, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, StatusCode::OK);
    let id = id.unwrap();
    assert_eq!(&*id.subject, "alice");
    assert_eq!(id.teams, ["eng", "sre"]);
    assert_eq!(id.scopes, ["mcp:tools"]);
    assert_eq!(id.email.as_deref(), Some("alice@example.com"));
    assert_eq!(id.issuer.as_deref(), Some(idp.issuer.as_str()));
    // Second time: served from the verified-token cache, same identity.
    let (status, _, again) = call(&svc, Some(&format!("bearer {token}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again.unwrap().subject, id.subject);
}

#[tokio::test]
async fn token_from_real_token_endpoint_with_resource_indicator() {
    let idp = Idp::start();
    let svc = service(auth(
        validator(&idp.issuer, timing(), FailMode::Closed),
        Mode::Required,
    ));
    let r: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "agent-7"),
            ("client_secret", "x"),
            ("scope", "mcp:tools"),
            ("resource", RESOURCE),
            ("groups", "bots"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = r["access_token"].as_str().unwrap();
    let (status, _, id) = call(&svc, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let id = id.unwrap();
    assert_eq!(&*id.subject, "agent-7");
    assert_eq!(id.kind, mcp_identity::PrincipalKind::Agent);
    assert_eq!(id.teams, ["bots"]);
    assert!(id.scopes.contains(&"mcp:tools".to_owned()));
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let idp = Idp::start();
    let svc = service(auth(
        validator(&idp.issuer, timing(), FailMode::Closed),
        Mode::Required,
    ));
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let mut good = good_claims(&idp);

    // expired (beyond the 30 s leeway)
    good["exp"] = json!(now - 120);
    let t = idp.mint(good.clone(), 600).await;
    let (s, c, _) = call(&svc, Some(&format!("Bearer {t}"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    invalid_token(&c);

    // not yet valid
    let mut g = good_claims(&idp);
    g["nbf"] = json!(now + 600);
    let t = idp.mint(g, 1200).await;
    let (s, c, _) = call(&svc, Some(&format!("Bearer {t}"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    invalid_token(&c);

    // wrong issuer (signed by the real key!)
    let mut g = good_claims(&idp);
    g["iss"] = json!("http://evil.example");
    let t = idp.mint(g, 600).await;
    assert_eq!(
        call(&svc, Some(&format!("Bearer {t}"))).await.0,
        StatusCode::UNAUTHORIZED
    );

    // wrong audience, and no audience
    let mut g = good_claims(&idp);
    g["aud"] = json!("http://other-resource/mcp");
    let t = idp.mint(g, 600).await;
    assert_eq!(
        call(&svc, Some(&format!("Bearer {t}"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    let mut g = good_claims(&idp);
    g["aud"] = json!(null);
    let t = idp.mint(g, 600).await;
    assert_eq!(
        call(&svc, Some(&format!("Bearer {t}"))).await.0,
        StatusCode::UNAUTHORIZED
    );

    // alg none: a real token's payload with an unsigned header
    let real = idp.mint(good_claims(&idp), 600).await;
    let payload = real.split('.').nth(1).unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    for header in [r#"{"alg":"none","typ":"JWT"}"#, r#"{"alg":"None"}"#] {
        let t = format!("{}.{payload}.", b64(header));
        let (s, c, _) = call(&svc, Some(&format!("Bearer {t}"))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        invalid_token(&c);
    }

    // HS256/RS256 confusion: HMAC over the real header+payload keyed with the RSA public key
    // (as its JWK JSON and as the modulus bytes), with the real kid.
    let jwks = idp.jwks().await;
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_owned();
    let n = jwks["keys"][0]["n"].as_str().unwrap().to_owned();
    for secret in [jwks["keys"][0].to_string().into_bytes(), n.into_bytes()] {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some(kid.clone());
        let t = jsonwebtoken::encode(
            &h,
            &good_claims(&idp),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        let (s, c, _) = call(&svc, Some(&format!("Bearer {t}"))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        invalid_token(&c);
    }

    // a tampered payload with the real signature
    let mut parts: Vec<String> = real.split('.').map(str::to_owned).collect();
    let mut claims = good_claims(&idp);
    claims["sub"] = json!("mallory");
    parts[1] = b64(&claims.to_string());
    let (s, _, _) = call(&svc, Some(&format!("Bearer {}", parts.join(".")))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // oversized
    let mut g = good_claims(&idp);
    g["pad"] = json!("x".repeat(10_000));
    let t = idp.mint(g, 600).await;
    let (s, c, _) = call(&svc, Some(&format!("Bearer {t}"))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    invalid_token(&c);

    // malformed Authorization headers
    for h in [
        "Basic YWxpY2U6cHc=",
        "Bearer",
        "Bearer a b c",
        "Bearertoken",
        "Bearer ====",
    ] {
        let (s, c, _) = call(&svc, Some(h)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{h}");
        assert_eq!(
            c,
            format!("Bearer error=\"invalid_request\", resource_metadata=\"{META}\""),
            "{h}"
        );
    }
    // not a JWT at all
    let (s, c, _) = call(&svc, Some("Bearer abc.def")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    invalid_token(&c);
    // two Authorization headers
    let req = Request::post("/mcp")
        .header("authorization", format!("Bearer {real}"))
        .header("authorization", format!("Bearer {real}"))
        .body(String::new())
        .unwrap();
    assert_eq!(
        svc.clone().oneshot(req).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // no credentials: a plain challenge (no error code)
    let (s, c, _) = call(&svc, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(c, format!("Bearer resource_metadata=\"{META}\""));

    // and the good token still works
    assert_eq!(
        call(&svc, Some(&format!("Bearer {real}"))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn unknown_kid_flood_fetches_at_most_once_per_interval_and_rotation_works() {
    let idp = Idp::start();
    let v = validator(&idp.issuer, timing(), FailMode::Closed);
    let jwks = Arc::clone(v.jwks());
    let svc = service(auth(v, Mode::Required));
    let good = idp.mint(good_claims(&idp), 600).await;
    assert_eq!(
        call(&svc, Some(&format!("Bearer {good}"))).await.0,
        StatusCode::OK
    );
    assert_eq!(jwks.fetch_count(), 1);
    // 200 tokens, each with a kid the IdP never issued, concurrently.
    let real = idp.mint(good_claims(&idp), 600).await;
    let parts: Vec<&str> = real.split('.').collect();
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let header = b64(&format!(r#"{{"alg":"RS256","kid":"flood-{i}"}}"#));
        let t = format!("{header}.{}.{}", parts[1], parts[2]);
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            call(&svc, Some(&format!("Bearer {t}"))).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    assert!(
        jwks.fetch_count() <= 2,
        "flood caused {} JWKS fetches",
        jwks.fetch_count()
    );

    // A key rotated in at the IdP is picked up on its first use after the refresh interval.
    let idp2 = Idp::start();
    let mut t = timing();
    t.min_refresh_interval = Duration::from_millis(50);
    let v = validator(&idp2.issuer, t, FailMode::Closed);
    let jwks = Arc::clone(v.jwks());
    let svc = service(auth(v, Mode::Required));
    let first = idp2.mint(good_claims(&idp2), 600).await;
    assert_eq!(
        call(&svc, Some(&format!("Bearer {first}"))).await.0,
        StatusCode::OK
    );
    let kid = idp2.rotate().await;
    let rotated = idp2
        .mint_with(json!({"claims": good_claims(&idp2), "expiresIn": 600, "kid": kid}))
        .await;
    tokio::time::sleep(Duration::from_millis(60)).await; // past the refresh interval
    assert_eq!(
        call(&svc, Some(&format!("Bearer {rotated}"))).await.0,
        StatusCode::OK
    );
    assert_eq!(jwks.fetch_count(), 2);
}

#[tokio::test]
async fn jwks_down_follows_fail_mode() {
    // Nothing listens: first use cannot load keys in either mode.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    for mode in [FailMode::Closed, FailMode::ServeStale] {
        let svc = service(auth(validator(&dead, timing(), mode), Mode::Required));
        let (s, c, _) = call(&svc, Some("Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        invalid_token(&c);
    }

    // Keys loaded, then the IdP goes away and the keys age past their TTL.
    for (mode, expect) in [
        (FailMode::ServeStale, StatusCode::OK),
        (FailMode::Closed, StatusCode::UNAUTHORIZED),
    ] {
        let mut idp = Idp::start();
        let mut t = timing();
        t.ttl = Duration::from_millis(100);
        t.min_refresh_interval = Duration::from_millis(10);
        let svc = service(auth(validator(&idp.issuer, t, mode), Mode::Required));
        let a = idp.mint(good_claims(&idp), 600).await;
        let mut c2 = good_claims(&idp);
        c2["sub"] = json!("bob");
        let b = idp.mint(c2, 600).await;
        assert_eq!(
            call(&svc, Some(&format!("Bearer {a}"))).await.0,
            StatusCode::OK
        );
        idp.stop();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (s, _, id) = call(&svc, Some(&format!("Bearer {b}"))).await;
        assert_eq!(s, expect, "{mode:?}");
        // A token verified before the outage follows the same rule.
        assert_eq!(
            call(&svc, Some(&format!("Bearer {a}"))).await.0,
            expect,
            "{mode:?}"
        );
        if expect == StatusCode::OK {
            assert_eq!(&*id.unwrap().subject, "bob");
        }
    }
}

#[tokio::test]
async fn jwks_slow_times_out_and_refuses() {
    // Accepts connections and never answers.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", l.local_addr().unwrap());
    let hold = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = l.accept().await {
            conns.push(c);
        }
    });
    let mut t = timing();
    t.fetch_timeout = Duration::from_millis(200);
    let svc = service(auth(
        validator(&issuer, t, FailMode::ServeStale),
        Mode::Required,
    ));
    let (s, c, _) = call(
        &svc,
        Some("Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.e30.c2ln"),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    invalid_token(&c);
    hold.abort();
}

#[tokio::test]
async fn insufficient_scope_is_403_with_step_up_challenge() {
    let idp = Idp::start();
    let a = auth(
        validator(&idp.issuer, timing(), FailMode::Closed),
        Mode::Required,
    )
    .required_scopes(vec!["mcp:tools".into(), "mcp:admin".into()]);
    let svc = service(a);
    let t = idp.mint(good_claims(&idp), 600).await;
    let (s, c, _) = call(&svc, Some(&format!("Bearer {t}"))).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        c,
        format!(
            "Bearer error=\"insufficient_scope\", resource_metadata=\"{META}\", scope=\"mcp:tools mcp:admin\""
        )
    );
    let mut g = good_claims(&idp);
    g["scope"] = json!("mcp:admin mcp:tools");
    let t = idp.mint(g, 600).await;
    assert_eq!(
        call(&svc, Some(&format!("Bearer {t}"))).await.0,
        StatusCode::OK
    );
    let (s, c, _) = call(&svc, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(
        c,
        format!("Bearer resource_metadata=\"{META}\", scope=\"mcp:tools mcp:admin\"")
    );
}

#[tokio::test]
async fn optional_and_permissive_modes() {
    let idp = Idp::start();
    let optional = service(auth(
        validator(&idp.issuer, timing(), FailMode::Closed),
        Mode::Optional,
    ));
    let (s, _, id) = call(&optional, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(id.unwrap().auth_method, mcp_identity::AuthMethod::Anonymous);
    assert_eq!(
        call(&optional, Some("Bearer abc.def.ghi")).await.0,
        StatusCode::UNAUTHORIZED
    );
    let t = idp.mint(good_claims(&idp), 600).await;
    assert_eq!(
        &*call(&optional, Some(&format!("Bearer {t}")))
            .await
            .2
            .unwrap()
            .subject,
        "alice"
    );

    let permissive = service(auth(
        validator(&idp.issuer, timing(), FailMode::Closed),
        Mode::Permissive,
    ));
    let (s, _, id) = call(&permissive, Some("Bearer abc.def.ghi")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(id.unwrap().auth_method, mcp_identity::AuthMethod::Anonymous);
    assert_eq!(
        &*call(&permissive, Some(&format!("Bearer {t}")))
            .await
            .2
            .unwrap()
            .subject,
        "alice"
    );
}

#[tokio::test]
async fn metadata_document_served_without_credentials() {
    let idp = Idp::start();
    let svc = service(auth(
        validator(&idp.issuer, timing(), FailMode::Closed),
        Mode::Required,
    ));
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let res = svc
            .clone()
            .oneshot(Request::get(path).body(String::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "application/json");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["resource"], RESOURCE);
        assert_eq!(v["authorization_servers"], json!(["http://idp"]));
    }
    // POST to the metadata path is not exempt.
    let res = svc
        .clone()
        .oneshot(
            Request::post("/.well-known/oauth-protected-resource")
                .body(String::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn api_keys_through_the_layer() {
    let path = std::env::temp_dir().join(format!(
        "mcp-identity-authn-keys-{}.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let store = Arc::new(mcp_identity::apikey::ApiKeyStore::open(&path, "gw").unwrap());
    let (key, rec) = store
        .create(mcp_identity::apikey::NewApiKey {
            agent: "agent-x".into(),
            teams: vec!["bots".into()],
            ..Default::default()
        })
        .unwrap();
    let a = Authenticator::new(Mode::Required).api_keys(
        Arc::clone(&store),
        Some(http::HeaderName::from_static("x-api-key")),
    );
    let svc = service(a);
    let (s, _, id) = call(&svc, Some(&format!("Bearer {key}"))).await;
    assert_eq!(s, StatusCode::OK);
    let id = id.unwrap();
    assert_eq!(&*id.subject, "agent-x");
    assert_eq!(id.kind, mcp_identity::PrincipalKind::Agent);
    let req = Request::post("/mcp")
        .header("x-api-key", &key)
        .body(String::new())
        .unwrap();
    assert_eq!(
        svc.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );
    store.revoke(&rec.id).unwrap();
    assert_eq!(
        call(&svc, Some(&format!("Bearer {key}"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    let _ = std::fs::remove_file(&path);
}
