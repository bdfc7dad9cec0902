//! The upstream OAuth client against the real IdP: an upstream that demands OAuth publishes RFC
//! 9728 metadata naming the IdP; the gateway discovers the IdP (OIDC discovery), registers
//! dynamically (RFC 7591), sends the user to authorize with PKCE S256 and a resource indicator,
//! completes the callback, stores the tokens in the vault, uses them, refreshes them, and builds
//! a step-up URL on `insufficient_scope`.

use crate::common;

use std::{convert::Infallible, sync::Arc, sync::Mutex};

use bytes::Bytes;
use common::Idp;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use mcp_gateway_core::{
    BoxError, Identity, McpRequest, McpResponse, Method, RequestId, Target, codes,
};
use mcp_identity::{
    AuthMethod,
    credential::{CredentialLayer, ServerCredentials, UpstreamAuth, UpstreamCredentials},
    oauth::{OAuthClientConfig, OAuthRegistry, TokenSet, UpstreamOAuth},
    parse::parse_www_authenticate,
    vault::{MemoryStore, Vault},
};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// An upstream that wants OAuth: metadata at the well-known path, 401 + challenge without a JWT.
async fn oauth_upstream(issuer: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    let url = format!("{base}/mcp");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (seen2, url2) = (Arc::clone(&seen), url.clone());
    tokio::spawn(async move {
        while let Ok((io, _)) = l.accept().await {
            let (seen, url, issuer, base) = (
                Arc::clone(&seen2),
                url2.clone(),
                issuer.clone(),
                base.clone(),
            );
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (seen, url, issuer, base) =
                        (Arc::clone(&seen), url.clone(), issuer.clone(), base.clone());
                    async move {
                        let resp = if req.uri().path()
                            == "/.well-known/oauth-protected-resource/mcp"
                        {
                            Response::new(Full::new(Bytes::from(
                                json!({"resource": url, "authorization_servers": [issuer],
                                       "scopes_supported": ["files:read"]})
                                .to_string(),
                            )))
                        } else {
                            let bearer = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.strip_prefix("Bearer "))
                                .map(str::to_owned);
                            let needs = req
                                .headers()
                                .get("x-needs-scope")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            match bearer.filter(|b| b.split('.').count() == 3) {
                                Some(_) if needs.is_some() => {
                                    let mut r = Response::new(Full::new(Bytes::new()));
                                    *r.status_mut() = StatusCode::FORBIDDEN;
                                    r.headers_mut().insert(
                                        "www-authenticate",
                                        format!(
                                            "Bearer error=\"insufficient_scope\", scope=\"{}\"",
                                            needs.unwrap_or_default()
                                        )
                                        .parse()
                                        .unwrap(),
                                    );
                                    r
                                }
                                Some(b) => {
                                    seen.lock().unwrap().push(b.clone());
                                    Response::new(Full::new(Bytes::from(
                                        json!({"result": {"bearer": b}}).to_string(),
                                    )))
                                }
                                None => {
                                    let mut r = Response::new(Full::new(Bytes::new()));
                                    *r.status_mut() = StatusCode::UNAUTHORIZED;
                                    r.headers_mut().insert(
                                        "www-authenticate",
                                        format!("Bearer resource_metadata=\"{base}/.well-known/oauth-protected-resource/mcp\"")
                                            .parse()
                                            .unwrap(),
                                    );
                                    r
                                }
                            }
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    (url, seen)
}

fn dispatch(
    url: String,
) -> impl tower::Service<McpRequest, Response = McpResponse, Error = BoxError, Future: Send>
+ Clone
+ Send
+ 'static {
    let http = reqwest::Client::new();
    service_fn(move |req: McpRequest| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let mut rb = http.post(&url);
            if let Some(c) = req.ctx.extensions.get::<UpstreamCredentials>() {
                for (n, v) in &c.headers {
                    rb = rb.header(n, v);
                }
            }
            if let Some(needs) = req.params.get("needs_scope").and_then(Value::as_str) {
                rb = rb.header("x-needs-scope", needs);
            }
            let resp = rb.body("{}").send().await?;
            if matches!(
                resp.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) {
                // As core reports a refusal: the challenge goes along.
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                return Ok(req.error(mcp_gateway_core::error(
                    codes::UPSTREAM_AUTH_REQUIRED,
                    format!("HTTP {}", resp.status().as_u16()),
                    Some(json!({"server": "files", "wwwAuthenticate": challenge})),
                )));
            }
            let v: Value = resp.json().await?;
            Ok(req.reply(v["result"].clone()))
        }
    })
}

fn request(identity: &Identity) -> McpRequest {
    let mut req = McpRequest::new(
        Some(RequestId::Number(1)),
        Method::ToolsCall,
        Default::default(),
    );
    req.ctx.identity = Some(Arc::new(identity.clone()));
    req.ctx.target = Some(Target::server("files"));
    req
}

fn query(url: &str) -> std::collections::HashMap<String, String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

#[tokio::test]
async fn discovery_dcr_pkce_callback_refresh_and_step_up() {
    let idp = Idp::start();
    let (upstream, seen) = oauth_upstream(idp.issuer.clone()).await;
    let vault = Vault::new(Arc::new(MemoryStore::default()), "k1", &[5u8; 32]).unwrap();
    let cfg = OAuthClientConfig {
        redirect_uri: "http://127.0.0.1:9/oauth/callback".into(),
        client_name: Some("test gateway".into()),
        ..Default::default()
    };
    // Discovery starts from the upstream's own challenge.
    let challenge = {
        let r = reqwest::Client::new()
            .post(&upstream)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        parse_www_authenticate(r.headers()["www-authenticate"].to_str().unwrap()).unwrap()
    };
    assert!(challenge.resource_metadata.is_some());
    let registry = Arc::new(OAuthRegistry::new().client(UpstreamOAuth::new(
        "files",
        &upstream,
        cfg,
        vault.clone(),
    )));
    let layer = CredentialLayer::new()
        .vault(vault.clone())
        .oauth(Arc::clone(&registry))
        .server("files", ServerCredentials::new(UpstreamAuth::OAuth));
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(dispatch(upstream.clone()));
    let mut alice = Identity::new("alice", AuthMethod::Jwt);
    alice.issuer = Some("https://corp-idp".into());

    // 1. No token yet: a clear MCP error carrying the URL to authorize at.
    let r = svc.clone().oneshot(request(&alice)).await.unwrap();
    let e = r.body.unwrap_err();
    assert_eq!(e.code.0, codes::UPSTREAM_AUTH_REQUIRED);
    let auth_url = e.data.unwrap()["authorizationUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        auth_url.starts_with(&format!("{}/authorize?", idp.issuer)),
        "{auth_url}"
    );
    let q = query(&auth_url);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(q["resource"], upstream);
    assert_eq!(q["scope"], "files:read");
    assert!(
        q["client_id"].starts_with("dcr-client-"),
        "dynamic registration: {}",
        q["client_id"]
    );
    assert!(seen.lock().unwrap().is_empty());

    // 2. The user's browser: the IdP redirects to the gateway's callback with code + state.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirect.get(&auth_url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FOUND);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("http://127.0.0.1:9/oauth/callback?"));
    let cb_query = location.split_once('?').unwrap().1.to_owned();
    // A wrong state is refused; the right one completes (code + PKCE verifier at the token endpoint).
    assert!(registry.callback("code=x&state=forged").await.is_err());
    assert_eq!(registry.callback(&cb_query).await.unwrap(), "files");
    // The state is single-use.
    assert!(registry.callback(&cb_query).await.is_err());

    // 3. Later calls use the stored token; its audience is the upstream (resource indicator).
    let r = svc.clone().oneshot(request(&alice)).await.unwrap();
    let token = r.body.unwrap()["bearer"].as_str().unwrap().to_owned();
    let payload: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["aud"], upstream);
    let client = registry.get("files").unwrap();
    let stored = client.tokens(&alice).unwrap().unwrap();
    assert_eq!(stored.access_token, token);
    let refresh = stored.refresh_token.clone().unwrap();

    // 4. Expired: refreshed transparently, the rotated refresh token is stored.
    let expired = TokenSet {
        expires_at: Some(1),
        ..stored
    };
    vault
        .put(
            &format!(
                "{}/oauth",
                mcp_identity::credential::user_secret_name(&alice, "files")
            ),
            &serde_json::to_vec(&expired).unwrap(),
        )
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await; // new iat => new token
    let r = svc.clone().oneshot(request(&alice)).await.unwrap();
    let refreshed = r.body.unwrap()["bearer"].as_str().unwrap().to_owned();
    assert_ne!(refreshed, token);
    let after = client.tokens(&alice).unwrap().unwrap();
    assert_eq!(after.access_token, refreshed);
    assert_ne!(
        after.refresh_token.unwrap(),
        refresh,
        "rotated refresh token stored"
    );

    // 5. Step-up: the upstream says insufficient_scope for files:write.
    let step = parse_www_authenticate(r#"Bearer error="insufficient_scope", scope="files:write""#)
        .unwrap();
    let url = registry
        .authorization_url(&alice, "files", Some(&step))
        .await
        .unwrap();
    let scopes: Vec<String> = query(&url)["scope"].split(' ').map(str::to_owned).collect();
    assert!(
        scopes.contains(&"files:read".to_owned()) && scopes.contains(&"files:write".to_owned()),
        "{scopes:?}"
    );

    // The same when the upstream refuses a call through the layer: the user's grant lacks
    // `files:write`, and the caller gets a step-up URL for the union instead of a bare refusal.
    let mut needs_write = request(&alice);
    needs_write
        .params
        .insert("needs_scope".into(), json!("files:write"));
    let r = svc.clone().oneshot(needs_write).await.unwrap();
    let e = r.body.unwrap_err();
    assert_eq!(e.code.0, codes::UPSTREAM_AUTH_REQUIRED, "{e:?}");
    let url = e.data.unwrap()["authorizationUrl"]
        .as_str()
        .expect("a step-up URL, not the upstream's bare refusal")
        .to_owned();
    let scopes: Vec<String> = query(&url)["scope"].split(' ').map(str::to_owned).collect();
    assert!(
        scopes.contains(&"files:read".to_owned()) && scopes.contains(&"files:write".to_owned()),
        "{scopes:?}"
    );

    // The same through the helper the upstream connection code calls on a 403.
    let e = registry
        .challenge_error(
            &alice,
            "files",
            Some(r#"Bearer error="insufficient_scope", scope="files:admin""#),
        )
        .await;
    assert_eq!(e.code.0, codes::UPSTREAM_AUTH_REQUIRED);
    let url = e.data.unwrap()["authorizationUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(query(&url)["scope"].split(' ').any(|s| s == "files:admin"));

    // Another user has nothing stored and is asked to authorize.
    let bob = Identity::new("bob", AuthMethod::Jwt);
    let r = svc.clone().oneshot(request(&bob)).await.unwrap();
    assert_eq!(r.body.unwrap_err().code.0, codes::UPSTREAM_AUTH_REQUIRED);
    assert_eq!(seen.lock().unwrap().len(), 2);
}
