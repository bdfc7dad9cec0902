//! RFC 9728 discovery by a real MCP client: the Python SDK (with its OAuth support) meets a
//! hyper server guarded by `AuthnLayer`, gets a 401 whose challenge points at the metadata
//! document, discovers the real IdP, registers, authorizes with PKCE and a resource indicator,
//! and calls a tool that reports the identity the layer verified.

use crate::common;

use std::{convert::Infallible, process::Command, sync::Arc, time::Duration};

use bytes::Bytes;
use common::Idp;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mcp_identity::{
    Authenticator, AuthnLayer, FailMode, Identity, JwksCache, JwtValidator, KeySource, Mode,
    ProtectedResourceMetadata, jwks::JwksTiming,
};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt, service_fn};

/// Just enough MCP (JSON responses) for the SDK: initialize, tools/list, tools/call whoami.
async fn mcp(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let id = req.extensions().get::<Arc<Identity>>().cloned();
    if req.method() != http::Method::POST {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        return Ok(r);
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let msg: Value = serde_json::from_slice(&body).unwrap_or_default();
    let Some(rpc_id) = msg.get("id").cloned() else {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::ACCEPTED;
        return Ok(r);
    };
    let result = match msg["method"].as_str() {
        Some("initialize") => json!({"protocolVersion": msg["params"]["protocolVersion"],
            "capabilities": {"tools": {}}, "serverInfo": {"name": "authn-test", "version": "1"}}),
        Some("tools/list") => {
            json!({"tools": [{"name": "whoami", "inputSchema": {"type": "object"}}]})
        }
        Some("tools/call") => {
            let who =
                id.map(|i| format!("{} teams={:?} scopes={:?}", i.subject, i.teams, i.scopes));
            json!({"content": [{"type": "text", "text": who.unwrap_or_default()}]})
        }
        _ => json!({}),
    };
    let mut r = Response::new(Full::new(Bytes::from(
        json!({"jsonrpc": "2.0", "id": rpc_id, "result": result}).to_string(),
    )));
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    Ok(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_discovers_and_authenticates() {
    let idp = Idp::start();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let resource = format!("http://{}/mcp", l.local_addr().unwrap());
    let jwks = JwksCache::new(
        KeySource::Discover {
            issuer: idp.issuer.clone(),
        },
        JwksTiming {
            fetch_timeout: Duration::from_secs(2),
            ..JwksTiming::default()
        },
        FailMode::Closed,
    )
    .unwrap();
    let v = JwtValidator::new(
        Arc::new(jwks),
        idp.issuer.clone(),
        vec![resource.clone()],
        vec![jsonwebtoken::Algorithm::RS256],
    )
    .unwrap();
    let mut meta = ProtectedResourceMetadata::new(resource.clone(), vec![idp.issuer.clone()]);
    meta.scopes_supported = vec!["mcp:tools".into()];
    let layer = AuthnLayer::new(
        Authenticator::new(Mode::Required)
            .jwt(v)
            .metadata(meta)
            .required_scopes(vec!["mcp:tools".into()]),
    );
    let svc = layer.layer(service_fn(mcp));
    tokio::spawn(async move {
        while let Ok((io, _)) = l.accept().await {
            let svc = svc.clone();
            tokio::spawn(async move {
                let hs = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let line = format!(
                        "{} {} auth={}",
                        req.method(),
                        req.uri(),
                        req.headers().contains_key("authorization")
                    );
                    let fut = svc.clone().oneshot(req);
                    async move {
                        let r = fut.await;
                        if let Ok(r) = &r {
                            eprintln!(
                                "server: {line} -> {} {:?}",
                                r.status(),
                                r.headers().get("www-authenticate")
                            );
                        }
                        r
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), hs)
                    .await;
            });
        }
    });
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/py/identity_oauth_discovery.py");
    let url = resource.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tools"], json!(["whoami"]));
    // The oauth2-mock-server names authorization-code users `johndoe`.
    assert!(v["whoami"].as_str().unwrap().starts_with("johndoe"), "{v}");
    assert!(v["whoami"].as_str().unwrap().contains("mcp:tools"), "{v}");
    assert!(
        v["client_id"].as_str().unwrap().starts_with("dcr-client-"),
        "{v}"
    );
    assert_eq!(v["resource"], resource);
    assert_eq!(v["code_challenge_method"], "S256");
    assert_eq!(v["scope"], "mcp:tools");
}
