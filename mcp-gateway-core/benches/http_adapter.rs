//! Costs of the downstream Streamable HTTP adapter, in process (no sockets):
//!
//! - `session/seal`, `session/open`: AES-256-GCM sealing and opening of a realistic session id;
//! - `post/tools_call_legacy`: an HTTP POST `tools/call` with a session id -> JSON-RPC parse ->
//!   `McpRequest` (context filled, request task spawned) -> echo service -> JSON response body;
//! - `post/tools_call_stateless`: the same for a 2026-07-28 request with per-request `_meta`;
//! - `post/tools_call_sse`: the same with one progress notification, so the answer is an SSE
//!   stream of two events.
//!
//! Run with `cargo bench -p mcp-gateway-core --bench http_adapter`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use mcp_gateway_core::{
    BoxError, McpRequest, ServerMessage,
    http::{HttpConfig, StreamableHttp},
    session::{SessionClaims, SessionKey, UpstreamSessions, identity_binding},
};
use serde_json::json;
use tower::{Service, ServiceExt, service_fn};

// `StreamableHttp::poll_ready` is always ready, so `call` is used directly below.

fn claims() -> SessionClaims {
    let mut c = SessionClaims::new(identity_binding(None), "2025-11-25");
    c.client_info = Some(json!({"name": "claude-code", "version": "2.1.0"}));
    c.client_capabilities =
        Some(json!({"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}}));
    c.upstream = UpstreamSessions(
        [
            ("time", "8f1c2e3d-4b5a-6978-8a9b-0c1d2e3f4a5b"),
            ("everything", "c0ffee00-1234-5678-9abc-def012345678"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect(),
    );
    c
}

fn bench_session(c: &mut Criterion) {
    let key = SessionKey::from_bytes([9; 32]);
    let claims = claims();
    let id = key.seal(&claims).expect("seal");
    let mut g = c.benchmark_group("session");
    g.bench_function("seal", |b| b.iter(|| key.seal(black_box(&claims))));
    g.bench_function("open", |b| b.iter(|| key.open(black_box(&id))));
    g.finish();
}

fn request(body: &str, session: Option<&str>, version: &str) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::post("http://127.0.0.1:8080/mcp")
        .header("host", "127.0.0.1:8080")
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json")
        .header("mcp-protocol-version", version);
    if let Some(s) = session {
        b = b.header("mcp-session-id", s);
    }
    b.body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .expect("request")
}

fn bench_post(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let echo = service_fn(|req: McpRequest| async move {
        if req.method.as_str() == "initialize" {
            return Ok::<_, BoxError>(req.reply(json!({
                "protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                "serverInfo": {"name": "bench", "version": "1"}})));
        }
        let progress = req.name() == Some("progress");
        if progress && let Some(ds) = &req.ctx.downstream {
            ds.notify(ServerMessage {
                server: None,
                method: "notifications/progress".into(),
                params: json!({"progressToken": 1, "progress": 1})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            })
            .await?;
        }
        let args = req.arguments().cloned().unwrap_or_default();
        Ok(req.reply(json!({"content": [{"type": "text", "text": args.get("text").cloned().unwrap_or_default()}]})))
    });
    let mut adapter = rt.block_on(async {
        StreamableHttp::new(echo, HttpConfig::new().sse_keep_alive(None)).expect("adapter")
    });
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
        "clientInfo": {"name": "bench", "version": "1"}}})
    .to_string();
    let sid = rt.block_on(async {
        let res = adapter
            .call(request(&init, None, "2025-11-25"))
            .await
            .expect("infallible");
        res.headers()["mcp-session-id"]
            .to_str()
            .expect("ascii")
            .to_owned()
    });
    let text = "x".repeat(150);
    let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}}})
    .to_string();
    let stateless = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": text}, "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}}}})
    .to_string();
    let sse = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "progress", "arguments": {"text": text}}})
    .to_string();

    let mut g = c.benchmark_group("post");
    let mut run = |name: &str, body: &str, session: Option<&str>, version: &str| {
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let svc = adapter.clone();
                    let res = svc
                        .oneshot(request(body, session, version))
                        .await
                        .expect("infallible");
                    assert_eq!(res.status(), 200);
                    let bytes = res.into_body().collect().await.expect("body").to_bytes();
                    black_box(bytes)
                })
            })
        });
    };
    run("tools_call_legacy", &call, Some(&sid), "2025-11-25");
    run("tools_call_stateless", &stateless, None, "2026-07-28");
    run("tools_call_sse", &sse, Some(&sid), "2025-11-25");
    g.finish();
}

#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group!(benches, bench_session, bench_post);
}
criterion_main!(group::benches);
