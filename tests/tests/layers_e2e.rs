//! Every layer through the reference gateway binary, driven by its TOML: API-key identities,
//! policy scoping (two identities, two tool lists, hidden == missing), a kill switch on an open
//! session, DLP redaction of a tool result, the audit log verified by the CLI, and `/metrics`.

use std::path::Path;

use mcp_gateway_tests::{HttpPeer, python, scratch_dir, workspace_bin};
use mcp_gateway_tests::{create_api_key, gateway_cli};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "admin-token-for-the-test-0123456789";

fn config(dir: &Path) -> String {
    let exe = workspace_bin("mcp-gateway").unwrap();
    let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap();
    format!(
        r#"listen = "127.0.0.1:0"

[identity]
mode = "required"
[identity.api_keys]
file = {keys}

[policy]
[policy.servers.demo]
tools = "allow-all"
[[policy.rules]]
name = "team-a"
teams = ["a"]
server = "demo"
features = ["echo", "contact_card"]
[[policy.rules]]
name = "team-b"
teams = ["b"]
server = "demo"
features = ["add"]

[dlp]

[audit]
[audit.file]
dir = {audit}

[admin]
token_env = "GW_ADMIN_TOKEN"

[[server]]
name = "demo"
command = {exe}
args = ["demo-server"]
"#,
        keys = q(&dir.join("keys.json")),
        audit = q(&dir.join("audit")),
        exe = q(&exe),
    )
}

fn spawn(config: &Path) -> HttpPeer {
    mcp_gateway_tests::spawn_gateway("layers", config, &[("GW_ADMIN_TOKEN", ADMIN_TOKEN)]).unwrap()
}

fn client_as(key: &str, url: &str, plan: Value) -> Value {
    let headers = json!({"authorization": format!("Bearer {key}")}).to_string();
    python::run_script_with_env(
        "gateway_client.py",
        &["legacy", url, &plan.to_string()],
        &[("MCP_HEADERS", headers.as_str())],
    )
    .unwrap()
}

struct Raw {
    client: reqwest::blocking::Client,
    url: String,
}

impl Raw {
    fn post(
        &self,
        key: Option<&str>,
        session: Option<&str>,
        body: Value,
    ) -> (u16, Option<String>, Value) {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        let res = req.send().unwrap();
        let status = res.status().as_u16();
        let sid = res
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = res.text().unwrap();
        (status, sid, mcp_gateway_tests::jsonrpc_message(&text))
    }

    fn initialize(&self, key: &str) -> String {
        let (status, sid, v) = self.post(
            Some(key),
            None,
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}}),
        );
        assert_eq!(status, 200, "{v}");
        sid.unwrap()
    }

    fn call(&self, key: &str, sid: &str, tool: &str, args: Value) -> (u16, Value) {
        let (status, _, v) = self.post(
            Some(key),
            Some(sid),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": args}}),
        );
        (status, v)
    }

    fn admin(&self, method: &str, path: &str, body: Value) -> u16 {
        let base = self.url.trim_end_matches("/mcp");
        let req = match method {
            "POST" => self.client.post(format!("{base}{path}")),
            _ => self.client.delete(format!("{base}{path}")),
        };
        req.header("authorization", format!("Bearer {ADMIN_TOKEN}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
            .status()
            .as_u16()
    }
}

#[test]
fn identity_policy_dlp_audit_and_kill_switch_through_the_gateway() {
    let dir = scratch_dir("layers").unwrap();
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, config(&dir)).unwrap();
    let (code, out, err) = gateway_cli(&config_path, &["check"]);
    assert_eq!(code, 0, "check: {out}{err}");
    let alice = create_api_key(&config_path, "alice", "a");
    let bob = create_api_key(&config_path, "bob", "b");
    let gw = spawn(&config_path);

    // Two identities, two curated lists from the same upstream.
    let a = client_as(
        &alice,
        &gw.url,
        json!({"calls": [{"name": "demo__contact_card", "arguments": {"name": "Ada Lovelace"}},
                         {"name": "demo__add", "arguments": {"a": 1, "b": 2}}]}),
    );
    let mut tools: Vec<&str> = a["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    tools.sort();
    assert_eq!(tools, ["demo__contact_card", "demo__echo"], "{a}");
    // DLP redacted the e-mail address in the tool result.
    let card = a["calls"]["demo__contact_card"]["text"].as_str().unwrap();
    assert!(card.contains("[REDACTED:email]"), "{card}");
    assert!(!card.contains("@example"), "{card}");
    // Outside her scope: answered exactly like a tool that does not exist.
    let hidden = a["calls"]["demo__add"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let b = client_as(
        &bob,
        &gw.url,
        json!({"calls": [{"name": "demo__echo", "arguments": {"message": "x"}},
                                                       {"name": "demo__nope", "arguments": {}}]}),
    );
    assert_eq!(b["tools"], json!(["demo__add"]), "{b}");
    let hidden_b = b["calls"]["demo__echo"]["error"]
        .as_str()
        .unwrap_or_default();
    let missing_b = b["calls"]["demo__nope"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(hidden.contains("Unknown tool: demo__add"), "{a}");
    assert_eq!(
        hidden_b.replace("demo__echo", "X"),
        missing_b.replace("demo__nope", "X"),
        "{b}"
    );

    let raw = Raw {
        client: reqwest::blocking::Client::new(),
        url: gw.url.clone(),
    };
    // No credentials: 401 with a challenge.
    let (status, _, _) = raw.post(
        None,
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
    );
    assert_eq!(status, 401);
    // Alice's session presented with Bob's key is refused.
    let sid = raw.initialize(&alice);
    let (status, v) = raw.call(&alice, &sid, "demo__echo", json!({"message": "hello"}));
    assert_eq!(
        (status, v["result"]["content"][0]["text"].as_str()),
        (200, Some("hello")),
        "{v}"
    );
    let (status, _) = raw.call(&bob, &sid, "demo__echo", json!({"message": "hijack"}));
    assert_eq!(status, 404);

    // A kill switch cuts the open session's next call; lifting it restores service.
    let tool = json!({"scope": "tool", "server": "demo", "tool": "echo"});
    assert_eq!(raw.admin("POST", "/admin/kill-switches", tool.clone()), 200);
    let (_, v) = raw.call(&alice, &sid, "demo__echo", json!({"message": "after kill"}));
    assert!(
        v["error"].is_object() || v["result"]["isError"] == true,
        "{v}"
    );
    assert_eq!(raw.admin("DELETE", "/admin/kill-switches", tool), 200);
    let (_, v) = raw.call(&alice, &sid, "demo__echo", json!({"message": "restored"}));
    assert_eq!(v["result"]["content"][0]["text"], "restored", "{v}");
    // The admin endpoint refuses callers without the token or role.
    let status = raw
        .client
        .post(gw.url.replace("/mcp", "/admin/kill-switches"))
        .body("{}")
        .send()
        .unwrap()
        .status()
        .as_u16();
    assert!(status == 401 || status == 403, "{status}");

    // Metrics count the calls.
    let metrics = raw
        .client
        .get(gw.url.replace("/mcp", "/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("tools/call"), "{metrics}");

    // The audit log verifies and holds attributed records.
    drop(gw);
    let (code, out, err) = gateway_cli(&config_path, &["audit", "verify"]);
    assert_eq!(code, 0, "verify: {out}{err}");
    let (code, out, err) = gateway_cli(
        &config_path,
        &["audit", "export", "--format", "json", "--identity", "alice"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("alice") && out.contains("demo"), "{out}");
}

/// Managed servers through the gateway: two identities reach two dedicated instances (two
/// processes), a third caller picks the shared `ops` instance with the `mcp-instance` header, and
/// the instances answer only with their bridge secret, which the gateway attaches.
#[test]
fn managed_dedicated_and_shared_instances_through_the_gateway() {
    let dir = scratch_dir("managed").unwrap();
    let config_path = dir.join("gateway.toml");
    let faulty = mcp_gateway_tests::repo_root().join("tests/py/faulty_server.py");
    let q = |p: &Path| serde_json::to_string(&p.to_string_lossy()).unwrap();
    std::fs::write(
        &config_path,
        format!(
            r#"listen = "127.0.0.1:0"

[identity]
mode = "required"
[identity.api_keys]
file = {keys}

[[managed]]
sharing = "per_identity"
idle_timeout_secs = 600
max_instances = 10
runtime = {{ type = "local" }}
[managed.spec]
name = "py"
kind = "command"
command = "python3"
args = [{faulty}]
[managed.instances.ops]
teams = ["ops"]
"#,
            keys = q(&dir.join("keys.json")),
            faulty = q(&faulty),
        ),
    )
    .unwrap();
    let (code, out, err) = gateway_cli(&config_path, &["check"]);
    assert_eq!(code, 0, "check: {out}{err}");
    let alice = create_api_key(&config_path, "alice", "a");
    let bob = create_api_key(&config_path, "bob", "b");
    let carol = create_api_key(&config_path, "carol", "ops");
    let gw = spawn(&config_path);
    let raw = Raw {
        client: reqwest::blocking::Client::new(),
        url: gw.url.clone(),
    };

    let pid_of = |key: &str, instance: Option<&str>| -> String {
        let sid = raw.initialize(key);
        let mut req = raw
            .client
            .post(&raw.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("authorization", format!("Bearer {key}"))
            .header("mcp-session-id", &sid);
        if let Some(i) = instance {
            req = req.header("mcp-instance", i);
        }
        let text = req
            .body(json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                         "params": {"name": "py__ok", "arguments": {"text": key.len().to_string()}}}).to_string())
            .send()
            .unwrap()
            .text()
            .unwrap();
        let v = mcp_gateway_tests::jsonrpc_message(&text);
        let out = v["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{text}"))
            .to_owned();
        out.rsplit("pid ")
            .next()
            .unwrap()
            .trim_end_matches(')')
            .to_owned()
    };
    let a1 = pid_of(&alice, None);
    let a2 = pid_of(&alice, None);
    let b = pid_of(&bob, None);
    let c = pid_of(&carol, Some("ops"));
    assert_eq!(a1, a2, "alice keeps her dedicated instance");
    assert_ne!(a1, b, "bob gets his own instance");
    assert_ne!(c, a1);
    assert_ne!(c, b);
    // Alice may not use the ops instance.
    let sid = raw.initialize(&alice);
    let res = raw
        .client
        .post(&raw.url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("authorization", format!("Bearer {alice}"))
        .header("mcp-session-id", &sid)
        .header("mcp-instance", "ops")
        .body(
            json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                     "params": {"name": "py__ok", "arguments": {}}})
            .to_string(),
        )
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(res.contains("\"error\""), "{res}");
}
