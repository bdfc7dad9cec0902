//! Sealed sessions across gateway processes, and bad input against the reference gateway: each
//! gets a clear HTTP or JSON-RPC error and the gateway keeps serving.

use std::path::PathBuf;

use mcp_gateway_tests::{HttpPeer, scratch_dir, workspace_bin};
use serde_json::{Value, json};

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const OTHER_KEY: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

fn spawn_gateway(label: &str, extra: &str) -> HttpPeer {
    let dir = scratch_dir(label).unwrap();
    let path: PathBuf = dir.join("gateway.toml");
    let exe = workspace_bin("mcp-gateway").unwrap();
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nmax_body_bytes = 65536\n{extra}\n[[server]]\nname = \"demo\"\ncommand = {}\nargs = [\"demo-server\"]\n",
            serde_json::to_string(&exe.to_string_lossy()).unwrap()
        ),
    )
    .unwrap();
    mcp_gateway_tests::spawn_gateway(label, &path, &[]).unwrap()
}

fn post(url: &str, session: Option<&str>, body: &str) -> (u16, Option<String>, String) {
    let client = reqwest::blocking::Client::new();
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_owned());
    if let Some(s) = session {
        req = req
            .header("mcp-session-id", s)
            .header("mcp-protocol-version", "2025-11-25");
    }
    let res = req.send().unwrap();
    let status = res.status().as_u16();
    let sid = res
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, sid, res.text().unwrap())
}

use mcp_gateway_tests::jsonrpc_message as message;

fn initialize(url: &str) -> String {
    let (status, sid, body) = post(
        url,
        None,
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}})
        .to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let sid = sid.expect("a session id");
    let (status, _, _) = post(
        url,
        Some(&sid),
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    );
    assert_eq!(status, 202);
    sid
}

fn echo(url: &str, sid: &str, text: &str) -> (u16, Value) {
    let (status, _, body) = post(
        url,
        Some(sid),
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "demo__echo", "arguments": {"message": text}}})
        .to_string(),
    );
    let v = if status == 200 {
        message(&body)
    } else {
        serde_json::from_str(&body).unwrap_or(Value::Null)
    };
    (status, v)
}

#[test]
fn a_session_resumes_on_a_second_process_with_the_same_key_only() {
    let a = spawn_gateway("session-a", &format!("session_key = \"{KEY}\""));
    let b = spawn_gateway("session-b", &format!("session_key = \"{KEY}\""));
    let c = spawn_gateway("session-c", &format!("session_key = \"{OTHER_KEY}\""));
    let sid = initialize(&a.url);
    let (status, v) = echo(&a.url, &sid, "on a");
    assert_eq!(status, 200);
    assert_eq!(v["result"]["content"][0]["text"], "on a");
    // Another process with the same key resumes the session: no initialize, no shared store.
    let (status, v) = echo(&b.url, &sid, "on b");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["content"][0]["text"], "on b");
    // A process with another key refuses it.
    let (status, _) = echo(&c.url, &sid, "on c");
    assert_eq!(status, 404);
    // Forged and garbled ids are refused; the gateway keeps serving.
    let mut forged = sid.clone().into_bytes();
    let mid = forged.len() / 2;
    forged[mid] = if forged[mid] == b'A' { b'B' } else { b'A' };
    let (status, _) = echo(&a.url, &String::from_utf8(forged).unwrap(), "forged");
    assert_eq!(status, 404);
    let (status, _) = echo(&a.url, "not base64 at all!", "garbled");
    assert!(status == 404 || status == 400, "{status}");
    assert_eq!(echo(&a.url, &sid, "still fine").0, 200);
}

#[test]
fn bad_input_gets_clear_errors_and_the_gateway_keeps_serving() {
    let gw = spawn_gateway("bad-input", "");
    let sid = initialize(&gw.url);

    // Malformed JSON.
    let (status, _, body) = post(&gw.url, Some(&sid), "{not json");
    assert_eq!(status, 400);
    assert_eq!(message(&body)["error"]["code"], -32700, "{body}");
    // Valid JSON, invalid JSON-RPC.
    let (status, _, body) = post(&gw.url, Some(&sid), r#"{"hello":"world"}"#);
    assert_eq!(status, 400);
    assert_eq!(message(&body)["error"]["code"], -32600, "{body}");
    // Unknown method.
    let (status, _, body) = post(
        &gw.url,
        Some(&sid),
        r#"{"jsonrpc":"2.0","id":5,"method":"no/such","params":{}}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(message(&body)["error"]["code"], -32601, "{body}");
    // Unknown tool, and a known server with an unknown tool.
    for name in ["nope", "demo__nope"] {
        let (status, _, body) = post(
            &gw.url,
            Some(&sid),
            &json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call", "params": {"name": name, "arguments": {}}}).to_string(),
        );
        assert_eq!(status, 200);
        let m = message(&body);
        let refused = m["error"]["code"].is_number() || m["result"]["isError"] == true;
        assert!(refused, "{name}: {body}");
    }
    // Oversized body.
    let big = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
                     "params": {"name": "demo__echo", "arguments": {"message": "x".repeat(200_000)}}});
    let (status, _, _) = post(&gw.url, Some(&sid), &big.to_string());
    assert_eq!(status, 413);
    // Missing session id on a non-initialize request.
    let (status, _, _) = post(
        &gw.url,
        None,
        r#"{"jsonrpc":"2.0","id":8,"method":"tools/list"}"#,
    );
    assert_eq!(status, 400);
    // Still serving.
    let (status, v) = echo(&gw.url, &sid, "alive");
    assert_eq!(status, 200);
    assert_eq!(v["result"]["content"][0]["text"], "alive");
}
