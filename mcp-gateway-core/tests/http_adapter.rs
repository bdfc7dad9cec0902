//! The Streamable HTTP adapter over a real TCP listener, driven by reqwest and by the real Python
//! SDK client, in front of a small inner `service_fn`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use mcp_gateway_core::{
    BoxError, EventBus, GatewayEvent, Identity, McpRequest, McpResponse, Method, ServerMessage,
    http::{HttpConfig, StreamableHttp, serve},
    identity::AuthMethod,
    session::{SessionKey, UpstreamSessions},
};
use serde_json::{Value, json};
use tokio::sync::{Notify, oneshot};
use tower::{Service, ServiceExt, service_fn};

// === the inner MCP service ===

#[derive(Default)]
struct State {
    cancelled: AtomicUsize,
    slow_started: Notify,
    slow_dropped: Notify,
    release: Notify,
}

fn text(t: impl Into<String>) -> Value {
    json!({"content": [{"type": "text", "text": t.into()}]})
}

async fn handle(st: Arc<State>, req: McpRequest) -> Result<McpResponse, BoxError> {
    match &req.method {
        Method::Initialize => {
            let pv = req
                .params
                .get("protocolVersion")
                .cloned()
                .unwrap_or(json!("2025-11-25"));
            let mut res = req.reply(json!({
                "protocolVersion": pv,
                "capabilities": {"tools": {"listChanged": true}, "resources": {"subscribe": true}},
                "serverInfo": {"name": "adapter-test", "version": "1.0.0"},
            }));
            let mut up = UpstreamSessions::default();
            up.0.insert("up".into(), "upstream-session-1".into());
            res.extensions.insert(up);
            Ok(res)
        }
        Method::Discover => Ok(req.reply(json!({
            "supportedVersions": ["2026-07-28"],
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "adapter-test", "version": "1.0.0"},
        }))),
        m if req.is_notification() => {
            let _ = m;
            Ok(McpResponse::accepted())
        }
        Method::ToolsList => Ok(req.reply(json!({"tools": [
            {"name": "echo", "inputSchema": {"type": "object"}},
            {"name": "progress", "inputSchema": {"type": "object"}},
            {"name": "sample", "inputSchema": {"type": "object"}},
            {"name": "slow", "inputSchema": {"type": "object"}},
            {"name": "whoami", "inputSchema": {"type": "object"}},
        ]}))),
        Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => Ok(req.reply(json!({}))),
        Method::ToolsCall => {
            let args = req.arguments().cloned().unwrap_or_default();
            match req.name() {
                Some("echo") => {
                    Ok(req.reply(text(args.get("text").and_then(Value::as_str).unwrap_or(""))))
                }
                Some("whoami") => {
                    let s = &req.ctx.session;
                    Ok(req.reply(json!({"content": [], "structuredContent": {
                        "subject": req.ctx.identity.as_ref().map(|i| i.subject.to_string()),
                        "session": s.id.is_some(),
                        "protocolVersion": s.protocol_version.as_deref(),
                        "clientName": s.client_name(),
                        "upstream": req.ctx.extensions.get::<UpstreamSessions>().map(|u| u.0.clone()),
                        "remote": req.ctx.origin.remote_addr.map(|a| a.ip().to_string()),
                        "traceId": req.ctx.trace.trace_id_hex(),
                    }})))
                }
                Some("progress") => {
                    let count = args.get("count").and_then(Value::as_u64).unwrap_or(3);
                    let gate = args.get("gate").and_then(Value::as_bool).unwrap_or(false);
                    let token = req.progress_token().cloned().unwrap_or(json!("none"));
                    let ds = req.ctx.downstream.clone().ok_or("no downstream")?;
                    for i in 1..=count {
                        ds.notify(ServerMessage {
                            server: None,
                            method: "notifications/progress".into(),
                            params: json!({"progressToken": token, "progress": i, "total": count})
                                .as_object()
                                .cloned()
                                .unwrap_or_default(),
                        })
                        .await?;
                        if gate && i == 1 {
                            // Wait until the test dropped its connection.
                            st.release.notified().await;
                        }
                    }
                    Ok(req.reply(text(format!("progressed {count}"))))
                }
                Some("sample") => {
                    let ds = req.ctx.downstream.clone().ok_or("no downstream")?;
                    let prompt = args.get("prompt").and_then(Value::as_str).unwrap_or("");
                    let answer = ds
                        .request(ServerMessage {
                            server: None,
                            method: "sampling/createMessage".into(),
                            params: json!({
                                "messages": [{"role": "user", "content": {"type": "text", "text": prompt}}],
                                "maxTokens": 10,
                            })
                            .as_object()
                            .cloned()
                            .unwrap_or_default(),
                        })
                        .await;
                    match answer {
                        Ok(Ok(v)) => Ok(req.reply(text(
                            v["content"]["text"].as_str().unwrap_or("?").to_owned(),
                        ))),
                        Ok(Err(e)) => Ok(req.reply(text(format!("client error: {}", e.message)))),
                        Err(e) => Ok(req.reply(text(format!("cannot ask: {e}")))),
                    }
                }
                Some("slow") => {
                    struct OnDrop(Arc<State>);
                    impl Drop for OnDrop {
                        fn drop(&mut self) {
                            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
                            self.0.slow_dropped.notify_one();
                        }
                    }
                    let _guard = OnDrop(st.clone());
                    st.slow_started.notify_one();
                    st.release.notified().await;
                    Ok(req.reply(text("slow done")))
                }
                _ => Ok(req.error(mcp_gateway_core::error(-32602, "unknown tool", None))),
            }
        }
        _ => Ok(req.error(mcp_gateway_core::error(-32601, "method not found", None))),
    }
}

// === harness ===

struct Server {
    url: String,
    state: Arc<State>,
    bus: EventBus,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn start(config: HttpConfig) -> Server {
    let state = Arc::new(State::default());
    let bus = EventBus::new(64);
    let st = state.clone();
    let mcp = service_fn(move |req: McpRequest| handle(st.clone(), req));
    let adapter = StreamableHttp::new(mcp, config.events(bus.clone())).expect("adapter");
    // Stand-in for the authn layer: `x-test-user` becomes the request's Identity.
    let svc = service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
        let mut adapter = adapter.clone();
        async move {
            if let Some(user) = req
                .headers()
                .get("x-test-user")
                .and_then(|v| v.to_str().ok())
            {
                let id = Arc::new(Identity::new(user.to_owned(), AuthMethod::ApiKey));
                req.extensions_mut().insert(id);
            }
            ServiceExt::<http::Request<hyper::body::Incoming>>::ready(&mut adapter).await?;
            adapter.call(req).await
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(listener, svc, async move {
        let _ = rx.await;
    }));
    Server {
        url,
        state,
        bus,
        stop: Some(tx),
        done: Some(done),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

fn post(url: &str) -> reqwest::RequestBuilder {
    client()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
}

async fn initialize_as(url: &str, user: Option<&str>) -> String {
    let mut rb = post(url).body(
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {"sampling": {}},
            "clientInfo": {"name": "reqwest-test", "version": "0.1"},
        }})
        .to_string(),
    );
    if let Some(u) = user {
        rb = rb.header("x-test-user", u);
    }
    let res = rb.send().await.expect("initialize");
    assert_eq!(res.status(), 200);
    let sid = res
        .headers()
        .get("mcp-session-id")
        .expect("session id header")
        .to_str()
        .expect("ascii")
        .to_owned();
    let body: Value = res.json_value().await;
    assert_eq!(body["result"]["serverInfo"]["name"], "adapter-test");
    sid
}

async fn initialize(url: &str) -> String {
    initialize_as(url, Some("alice")).await
}

fn call(name: &str, args: Value, id: i64) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {
        "name": name, "arguments": args, "_meta": {"progressToken": "tok"}}})
    .to_string()
}

fn in_session(url: &str, sid: &str) -> reqwest::RequestBuilder {
    post(url)
        .header("mcp-session-id", sid)
        .header("mcp-protocol-version", "2025-11-25")
        .header("x-test-user", "alice")
}

trait JsonValue {
    async fn json_value(self) -> Value;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Value {
        let bytes = self.bytes().await.expect("body");
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    }
}

/// Reads SSE events from a streaming response.
struct Sse {
    res: reqwest::Response,
    buf: String,
}

impl Sse {
    fn new(res: reqwest::Response) -> Self {
        assert_eq!(
            res.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        Self {
            res,
            buf: String::new(),
        }
    }

    /// The next event carrying data: (event id, JSON). `None` at the end of the stream.
    async fn next(&mut self) -> Option<(Option<String>, Value)> {
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let raw: String = self.buf.drain(..pos + 2).collect();
                let mut id = None;
                let mut data = String::new();
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push_str(v);
                    }
                }
                if data.is_empty() {
                    continue; // keep-alive comment or priming event
                }
                return Some((id, serde_json::from_str(&data).expect("event JSON")));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.res.chunk())
                .await
                .expect("SSE event within 10 s")
                .expect("SSE read")?;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

fn assert_jsonrpc_error(body: &Value, code: i64) {
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

// === happy paths ===

#[tokio::test]
async fn legacy_session_json_call_and_context() {
    let s = start(HttpConfig::new()).await;
    let sid = initialize(&s.url).await;
    let res = in_session(&s.url, &sid)
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .body(call("whoami", json!({}), 1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let body = res.json_value().await;
    let sc = &body["result"]["structuredContent"];
    assert_eq!(body["id"], 1);
    assert_eq!(sc["subject"], "alice");
    assert_eq!(sc["session"], true);
    assert_eq!(sc["protocolVersion"], "2025-11-25");
    assert_eq!(sc["clientName"], "reqwest-test");
    assert_eq!(sc["upstream"]["up"], "upstream-session-1");
    assert_eq!(sc["remote"], "127.0.0.1");
    assert_eq!(sc["traceId"], "0af7651916cd43dd8448eb211c80319c");

    let res = in_session(&s.url, &sid)
        .body(call("echo", json!({"text": "hi"}), 2))
        .send()
        .await
        .unwrap();
    let body = res.json_value().await;
    assert_eq!(body["result"]["content"][0]["text"], "hi");

    // Notifications and client responses get 202.
    let res = in_session(&s.url, &sid)
        .body(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
}

#[tokio::test]
async fn progress_switches_the_response_to_sse() {
    let s = start(HttpConfig::new()).await;
    let sid = initialize(&s.url).await;
    let res = in_session(&s.url, &sid)
        .body(call("progress", json!({"count": 3}), 7))
        .send()
        .await
        .unwrap();
    let mut sse = Sse::new(res);
    let mut ids = Vec::new();
    for i in 1..=3 {
        let (id, ev) = sse.next().await.expect("progress event");
        assert_eq!(ev["method"], "notifications/progress");
        assert_eq!(ev["params"]["progress"], i);
        assert_eq!(ev["params"]["progressToken"], "tok");
        ids.push(id.expect("event id"));
    }
    let (id, last) = sse.next().await.expect("final response");
    assert_eq!(last["id"], 7);
    assert_eq!(last["result"]["content"][0]["text"], "progressed 3");
    ids.push(id.expect("event id"));
    assert!(sse.next().await.is_none(), "stream ends after the response");
    // `<stream>-<seq>`, same stream, increasing.
    let parsed: Vec<(u64, u64)> = ids
        .iter()
        .map(|i| {
            let (a, b) = i.split_once('-').expect("dash");
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert!(
        parsed
            .windows(2)
            .all(|w| w[0].0 == w[1].0 && w[0].1 < w[1].1),
        "{ids:?}"
    );
}

#[tokio::test]
async fn sampling_round_trip_through_a_client_post() {
    let s = start(HttpConfig::new()).await;
    let sid = initialize(&s.url).await;
    let res = in_session(&s.url, &sid)
        .body(call("sample", json!({"prompt": "2+2?"}), 3))
        .send()
        .await
        .unwrap();
    let mut sse = Sse::new(res);
    let (_, req) = sse.next().await.expect("sampling request");
    assert_eq!(req["method"], "sampling/createMessage");
    assert_eq!(req["params"]["messages"][0]["content"]["text"], "2+2?");
    let ask_id = req["id"].clone();
    assert!(ask_id.is_string(), "{req}");
    let answer = in_session(&s.url, &sid)
        .body(
            json!({"jsonrpc": "2.0", "id": ask_id, "result": {
                "role": "assistant", "model": "m", "content": {"type": "text", "text": "four"}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let (_, last) = sse.next().await.expect("final");
    assert_eq!(last["id"], 3);
    assert_eq!(last["result"]["content"][0]["text"], "four");
}

#[tokio::test]
async fn stateless_2026_request_needs_no_session() {
    let s = start(HttpConfig::new()).await;
    let meta = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "modern", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let res = post(&s.url)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "server/discover")
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().get("mcp-session-id").is_none());
    let body = res.json_value().await;
    assert_eq!(body["result"]["supportedVersions"][0], "2026-07-28");

    let whoami = |name: &str| {
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": name, "arguments": {"prompt": "x"}, "_meta": meta}})
        .to_string()
    };
    let res = post(&s.url)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "whoami")
        .body(whoami("whoami"))
        .send()
        .await
        .unwrap();
    let body = res.json_value().await;
    let sc = &body["result"]["structuredContent"];
    assert_eq!(sc["session"], false);
    assert_eq!(sc["protocolVersion"], "2026-07-28");
    assert_eq!(sc["clientName"], "modern");

    // The client cannot be asked: Downstream::request errs, the inner service says so.
    let res = post(&s.url)
        .header("mcp-protocol-version", "2026-07-28")
        .body(whoami("sample"))
        .send()
        .await
        .unwrap();
    let body = res.json_value().await;
    let t = body["result"]["content"][0]["text"].as_str().unwrap_or("");
    assert!(
        t.starts_with("cannot ask: client cannot be asked"),
        "{body}"
    );

    // Mcp-Name that contradicts the body: 400 header mismatch.
    let res = post(&s.url)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", "echo")
        .body(whoami("whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_jsonrpc_error(&res.json_value().await, -32020);

    // Header version and _meta version disagree: 400.
    let res = post(&s.url)
        .header("mcp-protocol-version", "2025-11-25")
        .body(whoami("whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn resume_after_disconnect_with_last_event_id() {
    let s = start(HttpConfig::new()).await;
    let sid = initialize(&s.url).await;
    let res = in_session(&s.url, &sid)
        .body(call("progress", json!({"count": 3, "gate": true}), 9))
        .send()
        .await
        .unwrap();
    let mut sse = Sse::new(res);
    let (first_id, ev) = sse.next().await.expect("first progress");
    assert_eq!(ev["params"]["progress"], 1);
    let first_id = first_id.expect("id");
    drop(sse); // the client goes away; the request keeps running
    s.state.release.notify_one();
    // Resume: the remaining events and the final response, none of what was already seen.
    let mut got = Vec::new();
    for _ in 0..50 {
        let res = client()
            .get(&s.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &sid)
            .header("x-test-user", "alice")
            .header("last-event-id", &first_id)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let mut sse = Sse::new(res);
        got.clear();
        while let Some((_, ev)) = sse.next().await {
            got.push(ev);
        }
        if got.last().is_some_and(|e| e["id"] == 9) {
            break;
        }
        // The request had not finished yet when we resumed and then the stream was attached;
        // it ends only with the final response, so reaching here means it was not yet buffered.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let progress: Vec<_> = got
        .iter()
        .filter(|e| e["method"] == "notifications/progress")
        .map(|e| e["params"]["progress"].as_u64().unwrap())
        .collect();
    assert_eq!(progress, vec![2, 3], "{got:?}");
    assert_eq!(
        got.last().unwrap()["result"]["content"][0]["text"],
        "progressed 3"
    );
}

/// A session call slower than `stream_after` becomes an SSE stream that opens with a priming
/// event (id, `retry`, empty data; SEP-1699); a client that drops it resumes from that id and
/// gets the answer. A fast call stays plain JSON.
#[tokio::test]
async fn slow_answer_opens_a_resumable_stream_with_a_priming_event() {
    let s = start(
        HttpConfig::new()
            .stream_after(Some(Duration::from_millis(50)))
            .sse_retry(Duration::from_millis(250)),
    )
    .await;
    let sid = initialize(&s.url).await;
    let fast = in_session(&s.url, &sid)
        .body(call("echo", json!({"text": "quick"}), 1))
        .send()
        .await
        .unwrap();
    assert_eq!(fast.headers()["content-type"], "application/json");

    // Without the switch the headers would wait for the answer, which waits for us.
    let mut res = tokio::time::timeout(
        Duration::from_secs(10),
        in_session(&s.url, &sid)
            .body(call("slow", json!({}), 2))
            .send(),
    )
    .await
    .expect("headers before the answer")
    .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(10), res.chunk())
        .await
        .expect("priming event in time")
        .unwrap()
        .expect("a first chunk");
    let first = String::from_utf8(first.to_vec()).unwrap();
    let priming_id = first
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("priming event has an id: {first:?}"))
        .to_owned();
    assert!(first.contains("retry: 250\n"), "{first:?}");
    assert!(first.contains("data: \n\n"), "{first:?}");
    drop(res); // the connection is lost mid-call
    s.state.release.notify_one();

    let mut got = None;
    for _ in 0..50 {
        let res = client()
            .get(&s.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &sid)
            .header("x-test-user", "alice")
            .header("last-event-id", &priming_id)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let mut sse = Sse::new(res);
        while let Some((_, ev)) = sse.next().await {
            if ev["id"] == 2 {
                got = Some(ev);
            }
        }
        if got.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = got.expect("the answer after resuming");
    assert_eq!(got["result"]["content"][0]["text"], "slow done", "{got}");
}

#[tokio::test]
async fn get_stream_carries_bus_events_and_is_unique() {
    let s = start(HttpConfig::new()).await;
    let sid = initialize(&s.url).await;
    let get = || {
        client()
            .get(&s.url)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &sid)
            .header("x-test-user", "alice")
    };
    let res = get().send().await.unwrap();
    assert_eq!(res.status(), 200);
    let mut sse = Sse::new(res);
    assert_eq!(
        get().send().await.unwrap().status(),
        409,
        "one GET stream per session"
    );

    let res = in_session(&s.url, &sid)
        .body(json!({"jsonrpc": "2.0", "id": 5, "method": "resources/subscribe", "params": {"uri": "file:///a"}}).to_string())
        .send()
        .await
        .unwrap();
    assert!(res.json_value().await["result"].is_object());

    let note = |method: &str, uri: &str| ServerMessage {
        server: None,
        method: method.into(),
        params: json!({"uri": uri}).as_object().cloned().unwrap_or_default(),
    };
    s.bus.publish(GatewayEvent::ResourceUpdated {
        uri: "file:///b".into(),
        message: note("notifications/resources/updated", "file:///b"),
    });
    s.bus.publish(GatewayEvent::ResourceUpdated {
        uri: "file:///a".into(),
        message: note("notifications/resources/updated", "file:///a"),
    });
    s.bus.publish(GatewayEvent::ListChanged(note(
        "notifications/tools/list_changed",
        "",
    )));
    let (_, a) = sse.next().await.expect("resource update");
    assert_eq!(a["method"], "notifications/resources/updated");
    assert_eq!(
        a["params"]["uri"], "file:///a",
        "unsubscribed URI must be skipped"
    );
    let (_, b) = sse.next().await.expect("list changed");
    assert_eq!(b["method"], "notifications/tools/list_changed");
}

#[tokio::test]
async fn cancelled_notification_aborts_the_request() {
    let s = start(HttpConfig::new()).await;
    let sid = initialize(&s.url).await;
    let url = s.url.clone();
    let sid2 = sid.clone();
    let pending = tokio::spawn(async move {
        in_session(&url, &sid2)
            .body(call("slow", json!({}), 42))
            .send()
            .await
    });
    s.state.slow_started.notified().await;
    let res = in_session(&s.url, &sid)
        .body(json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 42, "reason": "user"}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    tokio::time::timeout(Duration::from_secs(5), s.state.slow_dropped.notified())
        .await
        .expect("the inner future is dropped");
    assert_eq!(s.state.cancelled.load(Ordering::SeqCst), 1);
    // The POST ends with no response message.
    let res = pending.await.unwrap().unwrap();
    let body = res.text().await.unwrap();
    assert!(!body.contains("slow done"), "{body}");
}

#[tokio::test]
async fn subscriptions_listen_acknowledges_and_streams() {
    let s = start(HttpConfig::new()).await;
    let res = post(&s.url)
        .header("mcp-protocol-version", "2026-07-28")
        .body(
            json!({"jsonrpc": "2.0", "id": "L1", "method": "subscriptions/listen", "params": {
                "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                          "io.modelcontextprotocol/clientCapabilities": {}},
                "notifications": {"toolsListChanged": true}}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let mut sse = Sse::new(res);
    let (_, ack) = sse.next().await.expect("ack");
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(ack["params"]["notifications"]["toolsListChanged"], true);
    assert_eq!(
        ack["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "L1"
    );
    let msg = |m: &str| ServerMessage {
        server: None,
        method: m.into(),
        params: Default::default(),
    };
    s.bus.publish(GatewayEvent::ListChanged(msg(
        "notifications/prompts/list_changed",
    )));
    s.bus.publish(GatewayEvent::ListChanged(msg(
        "notifications/tools/list_changed",
    )));
    let (_, ev) = sse.next().await.expect("event");
    assert_eq!(
        ev["method"], "notifications/tools/list_changed",
        "not asked for prompts"
    );
    assert_eq!(
        ev["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"],
        "L1"
    );
}

#[tokio::test]
async fn second_process_with_the_same_key_resumes_and_another_key_refuses() {
    let key = [11u8; 32];
    let a = start(HttpConfig::new().session_key(SessionKey::from_bytes(key))).await;
    let b = start(HttpConfig::new().session_key(SessionKey::from_bytes(key))).await;
    let c = start(HttpConfig::new().session_key(SessionKey::from_bytes([12u8; 32]))).await;
    let sid = initialize(&a.url).await;
    let res = in_session(&b.url, &sid)
        .body(call("whoami", json!({}), 1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.json_value().await;
    let sc = &body["result"]["structuredContent"];
    assert_eq!(
        sc["clientName"], "reqwest-test",
        "initialize state travels in the id"
    );
    assert_eq!(sc["upstream"]["up"], "upstream-session-1");
    assert_eq!(sc["protocolVersion"], "2025-11-25");

    let res = in_session(&c.url, &sid)
        .body(call("whoami", json!({}), 1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_requests_finish() {
    let mut s = start(HttpConfig::new()).await;
    let sid = initialize(&s.url).await;
    let url = s.url.clone();
    let pending = tokio::spawn(async move {
        in_session(&url, &sid)
            .body(call("slow", json!({}), 1))
            .send()
            .await
            .unwrap()
            .json_value()
            .await
    });
    s.state.slow_started.notified().await;
    let _ = s.stop.take().unwrap().send(());
    // New connections are refused once the listener is closed.
    let done = s.done.take().unwrap();
    let url = s.url.clone();
    let refused = async {
        for _ in 0..200 {
            if client().get(&url).send().await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    };
    assert!(refused.await, "the listener stops accepting");
    s.state.release.notify_one();
    let body = pending.await.unwrap();
    assert_eq!(body["result"]["content"][0]["text"], "slow done");
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
}

// === bad input: one test each ===

async fn bad(s: &Server, rb: reqwest::RequestBuilder, status: u16, code: Option<i64>) {
    let _ = s;
    let res = rb.send().await.unwrap();
    assert_eq!(res.status(), status);
    if let Some(code) = code {
        assert_jsonrpc_error(&res.json_value().await, code);
    }
}

#[tokio::test]
async fn malformed_json_is_400_parse_error() {
    let s = start(HttpConfig::new()).await;
    bad(
        &s,
        post(&s.url).body("{\"jsonrpc\": \"2.0\", "),
        400,
        Some(-32700),
    )
    .await;
}

#[tokio::test]
async fn invalid_jsonrpc_is_400_invalid_request() {
    let s = start(HttpConfig::new()).await;
    let sid = initialize(&s.url).await;
    for body in [
        json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}),
        json!({"jsonrpc": "2.0", "id": 1, "method": 5}),
        json!({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}),
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": [1]}),
        json!({"jsonrpc": "2.0"}),
        json!("just a string"),
    ] {
        bad(
            &s,
            in_session(&s.url, &sid).body(body.to_string()),
            400,
            Some(-32600),
        )
        .await;
    }
}

#[tokio::test]
async fn batch_is_refused_with_a_clear_error() {
    let s = start(HttpConfig::new()).await;
    let sid = initialize(&s.url).await;
    let res = in_session(&s.url, &sid)
        .body(json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body = res.json_value().await;
    assert_jsonrpc_error(&body, -32600);
    assert!(body["error"]["message"].as_str().unwrap().contains("batch"));
}

#[tokio::test]
async fn oversized_body_is_413() {
    let s = start(HttpConfig::new().max_body_bytes(1024)).await;
    let sid = initialize(&s.url).await;
    let big = call("echo", json!({"text": "x".repeat(4096)}), 1);
    bad(&s, in_session(&s.url, &sid).body(big), 413, Some(-32600)).await;
}

#[tokio::test]
async fn wrong_accept_is_406() {
    let s = start(HttpConfig::new()).await;
    let rb = client()
        .post(&s.url)
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(call("echo", json!({}), 1));
    bad(&s, rb, 406, Some(-32600)).await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let s = start(HttpConfig::new()).await;
    let rb = client()
        .post(&s.url)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "text/plain")
        .body(call("echo", json!({}), 1));
    bad(&s, rb, 415, Some(-32600)).await;
}

#[tokio::test]
async fn bad_host_is_403() {
    let s = start(HttpConfig::new()).await;
    bad(
        &s,
        post(&s.url).header("host", "evil.example.com"),
        403,
        Some(-32600),
    )
    .await;
    // A configured host is let through.
    let s2 = start(HttpConfig::new().allowed_host("gw.example.com")).await;
    let res = post(&s2.url)
        .header("host", "gw.example.com:8080")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "passes the Host check, fails parsing");
}

#[tokio::test]
async fn bad_origin_is_403() {
    let s = start(HttpConfig::new()).await;
    bad(
        &s,
        post(&s.url).header("origin", "https://evil.example.com"),
        403,
        Some(-32600),
    )
    .await;
    let res = post(&s.url)
        .header("origin", "http://localhost:5173")
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "a localhost origin passes");
}

#[tokio::test]
async fn unsupported_protocol_version_is_400() {
    let s = start(HttpConfig::new()).await;
    let sid = initialize(&s.url).await;
    let rb = post(&s.url)
        .header("mcp-session-id", &sid)
        .header("x-test-user", "alice")
        .header("mcp-protocol-version", "1999-01-01")
        .body(call("echo", json!({}), 1));
    bad(&s, rb, 400, Some(-32600)).await;
    // The stateless revision on a legacy session: 400.
    let rb = post(&s.url)
        .header("mcp-session-id", &sid)
        .header("x-test-user", "alice")
        .header("mcp-protocol-version", "2026-07-28")
        .body(call("echo", json!({}), 1));
    bad(&s, rb, 400, Some(-32600)).await;
    // Another supported legacy version than the negotiated one is accepted (as rmcp and the
    // TypeScript SDK do; the conformance suite sends one).
    let res = post(&s.url)
        .header("mcp-session-id", &sid)
        .header("x-test-user", "alice")
        .header("mcp-protocol-version", "2025-03-26")
        .body(call("echo", json!({}), 1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn missing_session_id_is_400() {
    let s = start(HttpConfig::new()).await;
    let rb = post(&s.url)
        .header("mcp-protocol-version", "2025-11-25")
        .body(call("echo", json!({}), 1));
    bad(&s, rb, 400, Some(-32600)).await;
}

#[tokio::test]
async fn forged_session_id_is_404() {
    let s = start(HttpConfig::new()).await;
    let sid = initialize(&s.url).await;
    // Flip one character in the middle of a real id.
    let mut forged: Vec<char> = sid.chars().collect();
    let mid = forged.len() / 2;
    forged[mid] = if forged[mid] == 'A' { 'B' } else { 'A' };
    let forged: String = forged.into_iter().collect();
    bad(
        &s,
        in_session(&s.url, &forged).body(call("echo", json!({}), 1)),
        404,
        Some(-32600),
    )
    .await;
}

#[tokio::test]
async fn garbled_base64_session_id_is_404() {
    let s = start(HttpConfig::new()).await;
    bad(
        &s,
        in_session(&s.url, "not*base64*at*all").body(call("echo", json!({}), 1)),
        404,
        Some(-32600),
    )
    .await;
}

#[tokio::test]
async fn session_id_from_another_identity_is_404() {
    let s = start(HttpConfig::new()).await;
    let sid = initialize_as(&s.url, Some("alice")).await;
    let as_bob = post(&s.url)
        .header("mcp-session-id", &sid)
        .header("x-test-user", "bob")
        .body(call("echo", json!({}), 1));
    bad(&s, as_bob, 404, Some(-32600)).await;
    let anonymous = post(&s.url)
        .header("mcp-session-id", &sid)
        .body(call("echo", json!({}), 1));
    bad(&s, anonymous, 404, Some(-32600)).await;
    // And on another replica with the same key (no in-memory state): still refused.
    let key = [5u8; 32];
    let a = start(HttpConfig::new().session_key(SessionKey::from_bytes(key))).await;
    let b = start(HttpConfig::new().session_key(SessionKey::from_bytes(key))).await;
    let sid = initialize_as(&a.url, Some("alice")).await;
    let rb = post(&b.url)
        .header("mcp-session-id", &sid)
        .header("x-test-user", "mallory")
        .body(call("echo", json!({}), 1));
    bad(&b, rb, 404, Some(-32600)).await;
}

#[tokio::test]
async fn deleted_session_id_is_404() {
    let s = start(HttpConfig::new()).await;
    let sid = initialize(&s.url).await;
    let res = client()
        .delete(&s.url)
        .header("mcp-session-id", &sid)
        .header("x-test-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    bad(
        &s,
        in_session(&s.url, &sid).body(call("echo", json!({}), 1)),
        404,
        Some(-32600),
    )
    .await;
}

#[tokio::test]
async fn expired_session_id_is_404() {
    let key = [6u8; 32];
    let a = start(HttpConfig::new().session_key(SessionKey::from_bytes(key))).await;
    let b = start(
        HttpConfig::new()
            .session_key(SessionKey::from_bytes(key))
            .max_session_age(Duration::ZERO),
    )
    .await;
    let sid = initialize(&a.url).await;
    // Created in this second or the previous: with age 0 it is expired once a second passes.
    let mut status = 200;
    for _ in 0..30 {
        let res = in_session(&b.url, &sid)
            .body(call("echo", json!({}), 1))
            .send()
            .await
            .unwrap();
        status = res.status().as_u16();
        if status == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 404);
}

#[tokio::test]
async fn wrong_path_and_method() {
    let s = start(HttpConfig::new()).await;
    let other = s.url.replace("/mcp", "/other");
    assert_eq!(post(&other).body("{}").send().await.unwrap().status(), 404);
    let res = client().put(&s.url).send().await.unwrap();
    assert_eq!(res.status(), 405);
    // GET without a session: 400.
    let res = client()
        .get(&s.url)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
}

// === the real Python SDK client ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_client_end_to_end() {
    let have_sdk = std::process::Command::new("python3")
        .args(["-c", "import mcp.client.streamable_http"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        have_sdk,
        "the Python SDK `mcp` is required: bash scripts/install-test-deps.sh"
    );
    let s = start(HttpConfig::new()).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/py/http_adapter_client.py"
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("python3")
            .arg(script)
            .arg(&s.url)
            .output(),
    )
    .await
    .expect("python client finishes")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim().lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("bad output ({e}): {stdout}"));
    assert_eq!(v["protocol_version"], "2025-11-25");
    assert_eq!(v["server_name"], "adapter-test");
    assert_eq!(
        v["tools"],
        json!(["echo", "progress", "sample", "slow", "whoami"])
    );
    assert_eq!(v["echo"], "hello from python");
    assert_eq!(v["progress"], json!([1.0, 2.0, 3.0]));
    assert_eq!(v["progress_result"], "progressed 3");
    assert_eq!(v["sampling_requests"], 1);
    assert_eq!(v["sample"], "sampled:hi");
}

#[tokio::test]
async fn idle_sse_streams_get_keep_alive_comments() {
    let s = start(HttpConfig::new().sse_keep_alive(Some(Duration::from_millis(50)))).await;
    let sid = initialize(&s.url).await;
    let mut res = client()
        .get(&s.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("x-test-user", "alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let chunk = tokio::time::timeout(Duration::from_secs(10), res.chunk())
        .await
        .expect("a keep-alive arrives")
        .unwrap()
        .expect("stream open");
    assert_eq!(&chunk[..], b": keep-alive\n\n");
}
