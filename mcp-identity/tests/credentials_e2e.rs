//! CredentialLayer end to end: an HTTP upstream that checks bearer tokens, a dispatch stand-in
//! that sends each MCP request upstream with exactly the `UpstreamCredentials` headers, and the
//! real IdP for token exchange. Shared vs per-user credentials, RFC 8693 exchange, the identity
//! JWT, and: the client's own token never reaches the upstream.

use crate::common;

use std::{
    collections::HashSet,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use common::Idp;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mcp_gateway_core::{BoxError, Identity, McpRequest, McpResponse, Method, Target, codes};
use mcp_identity::{
    AuthMethod, BearerToken,
    credential::{
        AuthorizationUrls, CredentialLayer, IdentitySigner, ServerCredentials, TokenExchange,
        UpstreamAuth, UpstreamCredentials, user_secret_name,
    },
    vault::{MemoryStore, Vault},
};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// Every header set the upstream received.
type Seen = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// An upstream that accepts only the given bearer tokens (or any JWT when `accept_jwt`), and
/// answers a tools/call with the bearer it saw.
async fn upstream(accepted: HashSet<String>, accept_jwt: bool) -> (String, Seen) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", l.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let seen2 = Arc::clone(&seen);
    let accepted = Arc::new(accepted);
    tokio::spawn(async move {
        while let Ok((io, _)) = l.accept().await {
            let (seen, accepted) = (Arc::clone(&seen2), Arc::clone(&accepted));
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (seen, accepted) = (Arc::clone(&seen), Arc::clone(&accepted));
                    async move {
                        let headers: Vec<(String, String)> = req
                            .headers()
                            .iter()
                            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect();
                        seen.lock().unwrap().push(headers);
                        let bearer = req
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.strip_prefix("Bearer "))
                            .map(str::to_owned);
                        let ok = bearer.as_ref().is_some_and(|b| {
                            accepted.contains(b) || (accept_jwt && b.split('.').count() == 3)
                        });
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let rpc: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let mut resp = if ok {
                            Response::new(Full::new(Bytes::from(
                                json!({"jsonrpc":"2.0","id":rpc["id"],"result":{"bearer": bearer}})
                                    .to_string(),
                            )))
                        } else {
                            let mut r = Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = StatusCode::UNAUTHORIZED;
                            r
                        };
                        resp.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
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

/// Stand-in for core dispatch: POSTs the request upstream with the credential headers only.
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
            assert!(
                req.ctx.extensions.get::<BearerToken>().is_none(),
                "client token still in context"
            );
            // Core dispatch sends the headers of the `Endpoint` extension; so does this stand-in.
            let mut rb = http.post(&url);
            let endpoint = req
                .ctx
                .extensions
                .get::<mcp_gateway_core::upstream::Endpoint>();
            let creds = req.ctx.extensions.get::<UpstreamCredentials>();
            assert_eq!(
                endpoint.map(|e| e.headers.clone()).unwrap_or_default(),
                creds.map(|c| c.headers.clone()).unwrap_or_default()
            );
            if let Some(e) = endpoint {
                for (n, v) in &e.headers {
                    rb = rb.header(n, v);
                }
            }
            let body =
                json!({"jsonrpc":"2.0","id":1,"method":req.method.as_str(),"params":req.params});
            let resp = rb.json(&body).send().await?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                return Ok(req.error(mcp_gateway_core::error(
                    codes::UPSTREAM_AUTH_REQUIRED,
                    "upstream said 401",
                    None,
                )));
            }
            let v: Value = resp.json().await?;
            Ok(req.reply(v["result"].clone()))
        }
    })
}

fn request(identity: &Identity, client_token: &str, server: &str) -> McpRequest {
    let mut req = McpRequest::new(
        Some(mcp_gateway_core::RequestId::Number(1)),
        Method::ToolsCall,
        json!({"name":"whoami"}).as_object().cloned().unwrap(),
    );
    req.ctx.identity = Some(Arc::new(identity.clone()));
    req.ctx.target = Some(Target::server(server));
    req.ctx.extensions.insert(BearerToken::new(client_token));
    req
}

fn user(sub: &str) -> Identity {
    let mut i = Identity::new(sub, AuthMethod::Jwt);
    i.issuer = Some("https://idp".into());
    i.teams = vec!["eng".into()];
    i
}

struct Urls;
impl AuthorizationUrls for Urls {
    fn authorization_url(&self, identity: &Identity, server: &str) -> Option<String> {
        Some(format!(
            "https://gw/oauth/start?server={server}&u={}",
            identity.subject
        ))
    }
}

#[tokio::test]
async fn shared_vs_per_user_and_client_token_never_upstream() {
    let (url, seen) = upstream(
        ["svc-secret".into(), "alice-own-token".into()].into(),
        false,
    )
    .await;
    let vault = Vault::new(Arc::new(MemoryStore::default()), "k1", &[3u8; 32]).unwrap();
    vault.put("github-service-account", b"svc-secret").unwrap();
    vault.put("ticket-api-key", b"key-123").unwrap();
    let alice = user("alice");
    let bob = user("bob");
    vault
        .put(&user_secret_name(&alice, "personal"), b"alice-own-token")
        .unwrap();
    let mut shared = ServerCredentials::new(UpstreamAuth::Shared {
        secret: "github-service-account".into(),
        header: http::header::AUTHORIZATION,
        format: "Bearer {secret}".into(),
    });
    shared.secret_headers.push((
        HeaderName::from_static("x-api-key"),
        "ticket-api-key".into(),
    ));
    let layer = CredentialLayer::new()
        .vault(vault)
        .server("shared", shared)
        .server(
            "personal",
            ServerCredentials::new(UpstreamAuth::PerUser {
                header: http::header::AUTHORIZATION,
                format: "Bearer {secret}".into(),
            }),
        )
        .authorization_urls(Arc::new(Urls));
    let svc = ServiceBuilder::new().layer(layer).service(dispatch(url));

    // Shared: both users reach the upstream as the service account.
    for (who, tok) in [(&alice, "alice-client-jwt"), (&bob, "bob-client-jwt")] {
        let r = svc
            .clone()
            .oneshot(request(who, tok, "shared"))
            .await
            .unwrap();
        assert_eq!(r.body.as_ref().unwrap()["bearer"], "svc-secret");
    }
    // Per-user: alice uses her own token; bob has none and gets a clear error with the URL.
    let r = svc
        .clone()
        .oneshot(request(&alice, "alice-client-jwt", "personal"))
        .await
        .unwrap();
    assert_eq!(r.body.as_ref().unwrap()["bearer"], "alice-own-token");
    let r = svc
        .clone()
        .oneshot(request(&bob, "bob-client-jwt", "personal"))
        .await
        .unwrap();
    let e = r.body.unwrap_err();
    assert_eq!(e.code.0, codes::UPSTREAM_AUTH_REQUIRED);
    assert_eq!(
        e.data.unwrap()["authorizationUrl"],
        "https://gw/oauth/start?server=personal&u=bob"
    );
    // Anonymous callers cannot use per-user servers.
    let anon = Identity::new("anonymous", AuthMethod::Anonymous);
    let r = svc
        .clone()
        .oneshot(request(&anon, "x", "personal"))
        .await
        .unwrap();
    assert_eq!(r.body.unwrap_err().code.0, codes::UNAUTHORIZED);

    // The upstream saw the API key header, and never any client token.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    assert!(
        seen[0]
            .iter()
            .any(|(n, v)| n == "x-api-key" && v == "key-123")
    );
    for headers in seen.iter() {
        for (_, v) in headers {
            assert!(
                !v.contains("client-jwt"),
                "client token reached the upstream: {v}"
            );
        }
    }
}

#[tokio::test]
async fn token_exchange_and_identity_jwt() {
    let idp = Idp::start();
    let (url, seen) = upstream(HashSet::new(), true).await;
    let client_token = idp
        .mint(
            json!({"sub":"alice","aud":"http://127.0.0.1/gw","groups":["eng"]}),
            600,
        )
        .await;
    let signer = IdentitySigner::from_pkcs8(
        &IdentitySigner::generate_pkcs8().unwrap(),
        "https://gw",
        Duration::from_secs(60),
    )
    .unwrap();
    let mut creds = ServerCredentials::new(UpstreamAuth::TokenExchange(TokenExchange {
        token_endpoint: format!("{}/token-exchange", idp.issuer),
        client_id: "gateway".into(),
        client_secret: None,
        audience: None,
        resource: Some("http://upstream.example/mcp".into()),
        scope: Some("tickets:read".into()),
    }));
    creds.identity_header = Some(HeaderName::from_static("x-gateway-identity"));
    let layer = CredentialLayer::new()
        .server("tickets", creds)
        .signer(signer.clone());
    let svc = ServiceBuilder::new().layer(layer).service(dispatch(url));
    let alice = user("alice");
    let r = svc
        .clone()
        .oneshot(request(&alice, &client_token, "tickets"))
        .await
        .unwrap();
    let exchanged = r.body.unwrap()["bearer"].as_str().unwrap().to_owned();
    assert_ne!(exchanged, client_token);
    let payload: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            exchanged.split('.').nth(1).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(payload["sub"], "alice");
    assert_eq!(payload["aud"], "http://upstream.example/mcp");
    assert_eq!(payload["act"]["sub"], "gateway");
    // Second call: served from the exchange cache, same token.
    let r = svc
        .clone()
        .oneshot(request(&alice, &client_token, "tickets"))
        .await
        .unwrap();
    assert_eq!(r.body.unwrap()["bearer"], exchanged);

    // The identity JWT verifies with the signer's JWKS and names alice for this server.
    let seen_now = seen.lock().unwrap().clone();
    let ident = seen_now[0]
        .iter()
        .find(|(n, _)| n == "x-gateway-identity")
        .unwrap()
        .1
        .clone();
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(signer.jwks()).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(&jwks.keys[0]).unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    v.set_audience(&["tickets"]);
    v.set_issuer(&["https://gw"]);
    let claims = jsonwebtoken::decode::<Value>(&ident, &key, &v)
        .unwrap()
        .claims;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["groups"], json!(["eng"]));
    for headers in seen_now.iter() {
        for (_, v) in headers {
            assert!(
                !v.contains(&client_token),
                "client token reached the upstream"
            );
        }
    }

    // A forged caller token is refused by the IdP: a clear MCP error, nothing sent upstream.
    let before = seen_now.len();
    let r = svc
        .clone()
        .oneshot(request(&alice, "eyJhbGciOiJSUzI1NiJ9.e30.bad", "tickets"))
        .await
        .unwrap();
    assert_eq!(r.body.unwrap_err().code.0, codes::UPSTREAM_AUTH_REQUIRED);
    assert_eq!(seen.lock().unwrap().len(), before);
}
