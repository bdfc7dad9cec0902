//! 10,000 open sessions fit well under 1 GiB: initialize 10,000 sessions in process and compare
//! the resident set size before and after.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use mcp_gateway_core::{
    BoxError, McpRequest,
    http::{HttpConfig, StreamableHttp},
};
use serde_json::json;
use tower::{ServiceExt, service_fn};

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

#[tokio::test(flavor = "current_thread")]
async fn ten_thousand_sessions_fit_well_under_a_gibibyte() {
    let mcp = service_fn(|req: McpRequest| async move {
        Ok::<_, BoxError>(req.reply(json!({
            "protocolVersion": "2025-11-25",
            "capabilities": {"tools": {"listChanged": true}},
            "serverInfo": {"name": "mem", "version": "1"},
        })))
    });
    let adapter = StreamableHttp::new(mcp, HttpConfig::new()).expect("adapter");
    let init = |i: usize| {
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}},
            "clientInfo": {"name": format!("client-{i}"), "version": "1.2.3"},
        }})
        .to_string()
    };
    let before = rss_bytes();
    let mut ids = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        let req = http::Request::post("/mcp")
            .header("host", "localhost")
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(init(i))))
            .expect("request");
        let res = adapter.clone().oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), 200);
        let sid = res.headers()["mcp-session-id"]
            .to_str()
            .expect("ascii")
            .to_owned();
        let _ = res.into_body().collect().await;
        ids.push(sid);
    }
    let after = rss_bytes();
    assert_eq!(adapter.live_sessions(), 10_000);
    let grown = after.saturating_sub(before);
    // The client keeps the 10,000 ids too (counted in the growth); the bound is generous on
    // purpose but still 10x below the 1 GiB budget.
    eprintln!(
        "10,000 sessions: RSS grew by {} KiB ({} bytes per session, ids included)",
        grown / 1024,
        grown / 10_000
    );
    assert!(grown < 100 * 1024 * 1024, "RSS grew by {grown} bytes");
    drop(ids);
}
