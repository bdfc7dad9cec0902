//! Helpers shared by the integration tests: real servers, a real MCP client (rmcp), raw HTTP,
//! a small dispatch that forwards to the managed instance, and orphan checks.
#![allow(dead_code, unreachable_pub)]

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use mcp_gateway_core::identity::AuthMethod;
use mcp_gateway_core::{
    BoxError, Identity, McpRequest, McpResponse, Method, RequestId, codes, error,
};
use mcp_managed::{InstanceEndpoint, InstanceSpec};
use rmcp::{
    ServiceExt,
    transport::{
        StreamableHttpClientTransport, streamable_http_client::StreamableHttpClientTransportConfig,
    },
};
use serde_json::{Value, json};

pub fn bridge_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcp-bridge")
}

/// A unique marker put into every test instance's environment, to find leftover processes.
pub fn marker(test: &str) -> String {
    format!("mcp-managed-test-{test}-{}", std::process::id())
}

/// `mcp-server-time` (PyPI) as a `command` spec, marked for orphan checks.
pub fn time_spec(name: &str, marker: &str) -> InstanceSpec {
    let mut s = InstanceSpec::new(name, "command");
    s.command = Some("python3".into());
    s.args = vec![
        "-m".into(),
        "mcp_server_time".into(),
        "--local-timezone".into(),
        "UTC".into(),
    ];
    s.env.insert("MCP_TEST_MARKER".into(), marker.into());
    s
}

/// Pids of processes whose environment holds `marker`.
pub fn processes_with(marker: &str) -> Vec<u32> {
    let needle = format!("MCP_TEST_MARKER={marker}");
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in dir.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        if let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) {
            // Zombies have an empty environ; they are not running processes.
            if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
                found.push(pid);
            }
        }
    }
    found
}

/// Waits until no process carries `marker` (processes may take a moment to exit after SIGTERM).
pub async fn assert_no_orphans(marker: &str) {
    for _ in 0..100 {
        if processes_with(marker).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("orphan processes left: {:?}", processes_with(marker));
}

pub fn identity(subject: &str, teams: &[&str]) -> Arc<Identity> {
    let mut i = Identity::new(subject, AuthMethod::Jwt);
    i.teams = teams.iter().map(|t| t.to_string()).collect();
    Arc::new(i)
}

/// An rmcp client (the same transport the gateway's dispatch uses) to an instance.
pub async fn rmcp_client(
    ep: &InstanceEndpoint,
) -> Result<rmcp::service::RunningService<rmcp::RoleClient, ()>, BoxError> {
    let headers = HashMap::from([(ep.secret_header.0.clone(), ep.secret_header.1.clone())]);
    let config =
        StreamableHttpClientTransportConfig::with_uri(ep.url.to_string()).custom_headers(headers);
    let transport = StreamableHttpClientTransport::from_config(config);
    Ok(().serve(transport).await?)
}

/// One raw HTTP request; returns status and body text.
pub async fn raw(
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Result<(http::StatusCode, String), BoxError> {
    let uri: http::Uri = url.parse()?;
    let host = uri.authority().ok_or("no authority")?.to_string();
    let stream = tokio::net::TcpStream::connect(&host).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(uri.path())
        .header("host", &host)
        .header("accept", "application/json, text/event-stream")
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let res = sender
        .send_request(req.body(Full::new(Bytes::from(body)))?)
        .await?;
    let status = res.status();
    let bytes = res.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// A JSON-RPC call to an endpoint over raw HTTP with its secret.
pub async fn call(ep: &InstanceEndpoint, method: &str, params: Value) -> Result<Value, BoxError> {
    let secret = ep.secret_header.1.to_str()?.to_string();
    let (status, text) = raw(
        http::Method::POST,
        &ep.url,
        &[(ep.secret_header.0.as_str(), &secret)],
        Some(json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})),
    )
    .await?;
    if !status.is_success() {
        return Err(format!("status {status}: {text}").into());
    }
    Ok(serde_json::from_str(&text)?)
}

/// The innermost service of the test stack: forwards the request to the managed instance the
/// layer chose (what the gateway's dispatch does with the `InstanceEndpoint`), and reports which
/// instance answered in `_instance`.
pub async fn dispatch(req: McpRequest) -> Result<McpResponse, BoxError> {
    let Some(ep) = req.ctx.extensions.get::<InstanceEndpoint>().cloned() else {
        return Ok(req.error(error(codes::INTERNAL_ERROR, "no instance endpoint", None)));
    };
    let v = call(&ep, req.method.as_str(), Value::Object(req.params.clone())).await?;
    match v.get("result") {
        Some(r) => {
            let mut r = r.clone();
            r["_instance"] = json!(format!("{}|{}", ep.instance, ep.url));
            Ok(req.reply(r))
        }
        None => Ok(req.error(serde_json::from_value(v["error"].clone())?)),
    }
}

/// A `tools/call` request to `server` from `who`.
pub fn tool_call(server: &str, tool: &str, args: Value, who: Option<Arc<Identity>>) -> McpRequest {
    let mut params = serde_json::Map::new();
    params.insert("name".into(), json!(tool));
    params.insert("arguments".into(), args);
    let mut req = McpRequest::new(Some(RequestId::Number(1)), Method::ToolsCall, params);
    let mut t = mcp_gateway_core::Target::server(server);
    t.name = Some(tool.into());
    req.ctx.target = Some(t);
    req.ctx.identity = who;
    req
}
