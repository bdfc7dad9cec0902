//! The webhook engine against a real local HTTP server (hyper on 127.0.0.1): pass, modify and
//! block verdicts; down, slow and garbage engines in fail-open and fail-closed modes.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn as hyper_fn};
use hyper_util::rt::TokioIo;
use mcp_dlp::{DlpLayer, EngineRule, FailMode, WebhookEngine};
use mcp_gateway_core::{Annotation, BoxError, McpRequest, McpResponse, Method, codes};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// Starts the engine server; the path picks its behaviour.
async fn engine_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper_fn(|req: Request<Incoming>| async move {
                    let path = req.uri().path().to_string();
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let inspection: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let (status, answer) = match path.as_str() {
                        "/pass" => (200, json!({"verdict": "pass"}).to_string()),
                        "/modify" => {
                            let mut content = inspection["content"].clone();
                            if content["arguments"]["text"].is_string() {
                                content["arguments"]["text"] = json!("[NAME]");
                            } else if content["content"].is_array() {
                                content["content"][0]["text"] = json!("[NAME]");
                            }
                            (
                                200,
                                json!({"verdict": "modify", "content": content}).to_string(),
                            )
                        }
                        "/block" => (
                            200,
                            json!({"verdict": "block", "reason": "person name"}).to_string(),
                        ),
                        "/slow" => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            (200, json!({"verdict": "pass"}).to_string())
                        }
                        "/garbage" => (200, "<html>not json</html>".to_string()),
                        "/wrongtype" => (
                            200,
                            json!({"verdict": "modify", "content": "a string"}).to_string(),
                        ),
                        "/echo-inspection" => (
                            200,
                            json!({"verdict": "block", "reason": inspection.to_string()})
                                .to_string(),
                        ),
                        _ => (500, "oops".to_string()),
                    };
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(answer)))
                            .unwrap_or_default(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn layer(addr: SocketAddr, path: &str, fail: FailMode, timeout_ms: u64) -> DlpLayer {
    let url = reqwest::Url::parse(&format!("http://{addr}{path}")).expect("url");
    DlpLayer::new().engine(
        EngineRule::new(WebhookEngine::new(
            "guard",
            url,
            Duration::from_millis(timeout_ms),
        ))
        .fail(fail),
    )
}

fn call(text: &str) -> McpRequest {
    McpRequest::new(
        Some(mcp_gateway_core::RequestId::Number(1)),
        Method::ToolsCall,
        json!({"name": "echo", "arguments": {"text": text}})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    )
}

async fn run(layer: DlpLayer, text: &str) -> (McpResponse, bool, Vec<Annotation>) {
    let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r2 = reached.clone();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |req: McpRequest| {
            let r2 = r2.clone();
            async move {
                r2.store(true, std::sync::atomic::Ordering::SeqCst);
                let text = req
                    .arguments()
                    .and_then(|a| a.get("text"))
                    .cloned()
                    .unwrap_or(Value::Null);
                Ok::<_, BoxError>(req.reply(json!({"content": [{"type": "text", "text": text}]})))
            }
        }));
    let req = call(text);
    let ann = req.ctx.annotations.clone();
    let res = svc.oneshot(req).await.expect("service");
    (
        res,
        reached.load(std::sync::atomic::Ordering::SeqCst),
        ann.snapshot(),
    )
}

#[tokio::test]
async fn pass_modify_block() {
    let addr = engine_server().await;
    let (res, reached, _) = run(layer(addr, "/pass", FailMode::Closed, 2000), "Alice Smith").await;
    assert!(reached);
    assert_eq!(res.body.expect("ok")["content"][0]["text"], "Alice Smith");

    let (res, _, ann) = run(
        layer(addr, "/modify", FailMode::Closed, 2000),
        "Alice Smith",
    )
    .await;
    assert_eq!(res.body.expect("ok")["content"][0]["text"], "[NAME]");
    assert!(ann.iter().any(|a| matches!(a, Annotation::Dlp { detector, action: "replace", .. } if detector == "engine:guard")));

    let (res, reached, _) = run(layer(addr, "/block", FailMode::Closed, 2000), "Alice Smith").await;
    assert!(!reached, "blocked request reached the upstream");
    let err = res.body.expect_err("blocked");
    assert_eq!(err.code.0, codes::DLP_BLOCKED);
    assert_eq!(err.data.expect("data")["rule"], "engine:guard");
}

#[tokio::test]
async fn engine_never_sees_what_builtins_redacted() {
    let addr = engine_server().await;
    let (res, _, _) = run(
        layer(addr, "/echo-inspection", FailMode::Closed, 2000),
        "mail bob@example.com",
    )
    .await;
    let err = res.body.expect_err("blocked");
    assert!(!err.message.contains("bob@example.com"), "{}", err.message);
    assert!(err.message.contains("[REDACTED:email]"), "{}", err.message);
    assert!(
        err.message.contains("\"direction\":\"request\""),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn failures_follow_fail_mode() {
    let addr = engine_server().await;
    // a port nothing listens on
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let cases = [
        (addr, "/slow", 200u64),
        (addr, "/garbage", 2000),
        (addr, "/wrongtype", 2000),
        (addr, "/status500", 2000),
        (down, "/pass", 2000),
    ];
    for (a, path, timeout) in cases {
        let start = std::time::Instant::now();
        let (res, reached, ann) = run(layer(a, path, FailMode::Closed, timeout), "hello").await;
        assert!(!reached, "{path}: fail-closed let the request through");
        let err = res.body.expect_err("fail-closed blocks");
        assert_eq!(err.code.0, codes::DLP_BLOCKED, "{path}");
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{path}: timeout not honoured"
        );
        assert!(
            ann.iter().any(|x| matches!(
                x,
                Annotation::Other {
                    key: "dlp.engine_error",
                    ..
                }
            )),
            "{path}"
        );

        let (res, reached, ann) = run(layer(a, path, FailMode::Open, timeout), "hello").await;
        assert!(reached, "{path}: fail-open blocked");
        assert_eq!(
            res.body.expect("fail-open passes")["content"][0]["text"],
            "hello"
        );
        assert!(
            ann.iter().any(|x| matches!(
                x,
                Annotation::Other {
                    key: "dlp.engine_error",
                    ..
                }
            )),
            "{path}"
        );
    }
}
