//! The policy layer through the reference gateway binary: a rug pull by a real upstream (Python
//! SDK server that changes a pinned tool and sends `notifications/tools/list_changed`) is withheld
//! with an event and restored by re-approval; scoped callers get hidden tools answered exactly
//! like missing ones; rate limits refuse beyond the rate and recover; the kill-switch CLI cuts an
//! open session's next call and lifting restores it.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use mcp_gateway_tests::{HttpPeer, python, scratch_dir, workspace_bin};
use mcp_gateway_tests::{create_api_key, gateway_cli_with_env};
use serde_json::{Value, json};

const ADMIN_TOKEN: &str = "policy-admin-token-0123456789abcdef";
const KILL_SWITCH: i64 = -32022;
const RATE_LIMITED: i64 = -32021;

fn q(p: &Path) -> String {
    serde_json::to_string(&p.to_string_lossy()).unwrap()
}

fn spawn(label: &str, config: &Path) -> HttpPeer {
    mcp_gateway_tests::spawn_gateway(label, config, &[("GW_ADMIN_TOKEN", ADMIN_TOKEN)]).unwrap()
}

/// A Streamable HTTP client session over plain requests.
struct Session {
    client: reqwest::blocking::Client,
    url: String,
    key: Option<String>,
    sid: String,
    next_id: u64,
}

/// One answer: HTTP status, headers and the JSON-RPC message.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    message: Value,
}

impl Session {
    fn open(url: &str, key: Option<&str>) -> Self {
        let mut s = Self {
            client: reqwest::blocking::Client::new(),
            url: url.to_owned(),
            key: key.map(str::to_owned),
            sid: String::new(),
            next_id: 1,
        };
        let a = s.send(
            json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "policy-e2e", "version": "1"}}}),
        );
        assert_eq!(a.status, 200, "{}", a.message);
        s.sid = a
            .headers
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .unwrap()
            .to_owned();
        s.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        s
    }

    fn send(&mut self, body: Value) -> Answer {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string());
        if let Some(k) = &self.key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if !self.sid.is_empty() {
            req = req
                .header("mcp-session-id", &self.sid)
                .header("mcp-protocol-version", "2025-11-25");
        }
        let res = req.send().unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().unwrap();
        Answer {
            status,
            headers,
            message: mcp_gateway_tests::jsonrpc_message(&text),
        }
    }

    fn request(&mut self, method: &str, params: Value) -> Answer {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
    }

    fn call(&mut self, tool: &str, args: Value) -> Value {
        self.request("tools/call", json!({"name": tool, "arguments": args}))
            .message
    }

    /// `(name, description)` of every listed tool.
    fn tools(&mut self) -> Vec<(String, String)> {
        let a = self.request("tools/list", json!({}));
        a.message["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("{}", a.message))
            .iter()
            .map(|t| {
                (
                    t["name"].as_str().unwrap_or_default().to_owned(),
                    t["description"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }
}

fn admin(url: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let base = url.trim_end_matches("/mcp");
    let client = reqwest::blocking::Client::new();
    let req = match method {
        "GET" => client.get(format!("{base}{path}")),
        "POST" => client.post(format!("{base}{path}")),
        _ => client.delete(format!("{base}{path}")),
    };
    let res = req
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .header("content-type", "application/json")
        .body(body.map(|b| b.to_string()).unwrap_or_default())
        .send()
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().unwrap_or(Value::Null))
}

/// The error of a JSON-RPC answer with the tool's name replaced, to compare hidden with missing.
fn error_shape(answer: &Value, name: &str) -> String {
    assert!(answer["error"].is_object(), "expected an error: {answer}");
    answer["error"].to_string().replace(name, "<TOOL>")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn rug_pull_is_withheld_with_an_event_and_reapproval_restores_it() {
    let dir = scratch_dir("rug-pull").unwrap();
    let config_path = dir.join("gateway.toml");
    let server = mcp_gateway_tests::repo_root().join("tests/py/rug_pull_server.py");
    std::fs::write(
        &config_path,
        format!(
            r#"listen = "127.0.0.1:0"

[policy]
approvals = {approvals}
[policy.servers.py]
tools = "allow-all"
[[policy.rules]]
name = "everyone"
server = "py"

[admin]
token_env = "GW_ADMIN_TOKEN"

[[server]]
name = "py"
command = {python}
args = [{server}]
"#,
            approvals = q(&dir.join("approvals.json")),
            python = serde_json::to_string(&python::interpreter()).unwrap(),
            server = q(&server),
        ),
    )
    .unwrap();
    let gw = spawn("rug-pull", &config_path);
    let mut s = Session::open(&gw.url, None);

    // Approved (pinned on first sight) and served.
    let tools = s.tools();
    let lookup = tools.iter().find(|(n, _)| n == "py__lookup").cloned();
    assert_eq!(
        lookup.as_ref().map(|t| t.1.as_str()),
        Some("Looks up a word in the dictionary."),
        "{tools:?}"
    );
    let v = s.call("py__lookup", json!({"word": "gate"}));
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("gate:")),
        "{v}"
    );
    let approvals: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("approvals.json")).unwrap())
            .unwrap();
    let pinned = approvals["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "lookup")
        .and_then(|a| a["pin"].as_str())
        .unwrap_or_else(|| panic!("lookup is not pinned: {approvals}"))
        .to_owned();

    // The upstream changes `lookup` and sends notifications/tools/list_changed.
    let v = s.call("py__mutate", json!({}));
    assert_eq!(v["result"]["content"][0]["text"], "lookup changed", "{v}");

    // The gateway refreshes its catalog, sees the pin broken and withholds the tool, before any
    // client lists again: the admin listing shows it.
    let mut withheld = Value::Null;
    wait_until("the changed tool to be withheld", || {
        let (status, body) = admin(&gw.url, "GET", "/admin/approvals", None);
        assert_eq!(status, 200, "{body}");
        withheld = body["withheld"].clone();
        withheld
            .as_array()
            .is_some_and(|w| w.iter().any(|t| t["tool"] == "lookup"))
    });
    let w = &withheld[0];
    assert_eq!(
        (w["server"].as_str(), w["reason"].as_str()),
        (Some("py"), Some("rug_pull")),
        "{withheld}"
    );
    assert_ne!(w["pin"].as_str(), Some(pinned.as_str()));
    // An event was raised.
    let (_, events) = admin(&gw.url, "GET", "/admin/policy/events", None);
    let rug = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "rug_pull")
        .unwrap_or_else(|| panic!("no rug_pull event: {events}"));
    assert_eq!(
        (
            rug["server"].as_str(),
            rug["tool"].as_str(),
            rug["pinned"].as_str(),
            rug["withheld"].as_bool()
        ),
        (
            Some("py"),
            Some("lookup"),
            Some(pinned.as_str()),
            Some(true)
        ),
        "{rug}"
    );

    // Withheld: not listed, and a call is answered exactly like a call of a missing tool.
    let tools = s.tools();
    assert!(!tools.iter().any(|(n, _)| n == "py__lookup"), "{tools:?}");
    assert!(tools.iter().any(|(n, _)| n == "py__mutate"), "{tools:?}");
    let withheld_call = s.call("py__lookup", json!({"word": "gate"}));
    let missing_call = s.call("py__nothing", json!({"word": "gate"}));
    assert_eq!(
        error_shape(&withheld_call, "py__lookup"),
        error_shape(&missing_call, "py__nothing")
    );

    // Re-approval pins the new definition and restores the tool.
    let (status, body) = admin(
        &gw.url,
        "POST",
        "/admin/approvals",
        Some(json!({"server": "py", "name": "lookup"})),
    );
    assert_eq!(status, 200, "{body}");
    let tools = s.tools();
    let lookup = tools.iter().find(|(n, _)| n == "py__lookup");
    assert!(
        lookup.is_some_and(|(_, d)| d.contains("last message")),
        "{tools:?}"
    );
    let v = s.call("py__lookup", json!({"word": "again"}));
    assert!(
        v["result"]["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("again:")),
        "{v}"
    );
    let (_, body) = admin(&gw.url, "GET", "/admin/approvals", None);
    assert_eq!(body["withheld"], json!([]), "{body}");
    let approved = body["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "lookup")
        .cloned()
        .unwrap_or_default();
    assert_eq!(approved["by"], "admin", "{body}");
    assert_eq!(approved["pin"].as_str(), w["pin"].as_str(), "{body}");
}

fn demo_config(dir: &Path) -> String {
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
features = ["echo", "add"]
[[policy.rules]]
name = "team-b"
teams = ["b"]
server = "demo"
features = ["add"]
[[policy.rate_limits]]
name = "add-per-caller"
key = "identity"
rate = 2
per = "1s"
burst = 2
methods = ["tools/call"]
features = ["add"]

[admin]
token_env = "GW_ADMIN_TOKEN"

[[server]]
name = "demo"
command = {exe}
args = ["demo-server"]
"#,
        keys = q(&dir.join("keys.json")),
        exe = q(&workspace_bin("mcp-gateway").unwrap()),
    )
}

#[test]
fn scope_rate_limit_and_kill_switch_cli_through_the_gateway() {
    let dir = scratch_dir("policy-demo").unwrap();
    let config_path = dir.join("gateway.toml");
    std::fs::write(&config_path, demo_config(&dir)).unwrap();
    let alice = create_api_key(&config_path, "alice", "a");
    let bob = create_api_key(&config_path, "bob", "b");
    let gw = spawn("policy-demo", &config_path);
    let mut a = Session::open(&gw.url, Some(&alice));
    let mut b = Session::open(&gw.url, Some(&bob));

    // Scope: bob sees only `add`; his call of `echo` (outside his scope) fails exactly like a
    // call of a tool that does not exist: same HTTP status, same JSON-RPC error.
    let names = |t: Vec<(String, String)>| t.into_iter().map(|t| t.0).collect::<Vec<_>>();
    assert_eq!(names(b.tools()), ["demo__add"]);
    let mut sorted = names(a.tools());
    sorted.sort();
    assert_eq!(sorted, ["demo__add", "demo__echo"]);
    let hidden = b.request(
        "tools/call",
        json!({"name": "demo__echo", "arguments": {"message": "x"}}),
    );
    let missing = b.request(
        "tools/call",
        json!({"name": "demo__nope", "arguments": {"message": "x"}}),
    );
    assert_eq!(hidden.status, missing.status);
    assert_eq!(
        error_shape(&hidden.message, "demo__echo"),
        error_shape(&missing.message, "demo__nope")
    );
    let v = a.call("demo__echo", json!({"message": "in scope"}));
    assert_eq!(v["result"]["content"][0]["text"], "in scope", "{v}");

    // Rate limit: 2 calls of `add` per second per identity, burst 2. The third is refused with
    // a clear error; alice has her own bucket; after the advertised wait bob is served again.
    for i in 0..2 {
        let v = b.call("demo__add", json!({"a": i, "b": 1}));
        assert!(v["result"].is_object(), "call {i}: {v}");
    }
    let answer = b.request(
        "tools/call",
        json!({"name": "demo__add", "arguments": {"a": 5, "b": 1}}),
    );
    let refused = answer.message;
    assert_eq!(refused["error"]["code"], RATE_LIMITED, "{refused}");
    // A plain JSON answer, so HTTP carries the wait too (whole seconds, rounded up).
    assert_eq!(
        answer
            .headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "{:?}",
        answer.headers
    );
    assert_eq!(refused["error"]["data"]["limit"], "add-per-caller");
    let wait = refused["error"]["data"]["retryAfterMs"].as_u64().unwrap();
    assert!((1..=1000).contains(&wait), "{refused}");
    let v = a.call("demo__add", json!({"a": 1, "b": 1}));
    assert!(v["result"].is_object(), "alice is not limited by bob: {v}");
    std::thread::sleep(Duration::from_millis(wait + 20));
    let v = b.call("demo__add", json!({"a": 2, "b": 2}));
    assert!(v["result"].is_object(), "recovered: {v}");

    // Kill switches through the CLI, on open sessions.
    let env = [("GW_ADMIN_TOKEN", ADMIN_TOKEN)];
    let base = gw.url.trim_end_matches("/mcp").to_owned();
    let cli = |args: &[&str]| {
        let mut all = vec!["kill-switch"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--url", &base]);
        gateway_cli_with_env(&config_path, &all, &env)
    };
    let (code, out, err) = cli(&["set", "--server", "demo", "--tool", "echo"]);
    assert_eq!(code, 0, "{out}{err}");
    let active: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        active["active"],
        json!([{"scope": "tool", "server": "demo", "tool": "echo"}])
    );
    let v = a.call("demo__echo", json!({"message": "after kill"}));
    assert_eq!(v["error"]["code"], KILL_SWITCH, "{v}");
    assert_eq!(v["error"]["data"]["scope"], "tool", "{v}");
    // Other tools still work.
    let v = a.call("demo__add", json!({"a": 1, "b": 2}));
    assert!(v["result"].is_object(), "{v}");
    // An identity switch cuts only that identity.
    let (code, _, err) = cli(&["set", "--identity", "bob"]);
    assert_eq!(code, 0, "{err}");
    // (Bob's calls of `add` are rate limited: his session is checked with lists here.)
    let v = b.request("tools/list", json!({})).message;
    assert_eq!(v["error"]["code"], KILL_SWITCH, "{v}");
    assert_eq!(v["error"]["data"]["scope"], "identity", "{v}");
    let v = a.call("demo__add", json!({"a": 1, "b": 2}));
    assert!(v["result"].is_object(), "alice is not cut: {v}");
    let (code, out, _) = cli(&["list"]);
    assert_eq!(code, 0);
    let active: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(active["active"].as_array().map(Vec::len), Some(2), "{out}");
    // Lifting restores service on the same open sessions.
    let (code, _, err) = cli(&["lift", "--server", "demo", "--tool", "echo"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&["lift", "--identity", "bob"]);
    assert_eq!(code, 0, "{err}");
    let v = a.call("demo__echo", json!({"message": "restored"}));
    assert_eq!(v["result"]["content"][0]["text"], "restored", "{v}");
    assert_eq!(names(b.tools()), ["demo__add"]);
    // The whole gateway.
    let (code, _, err) = cli(&["set", "--gateway"]);
    assert_eq!(code, 0, "{err}");
    let v = a.request("tools/list", json!({})).message;
    assert_eq!(v["error"]["code"], KILL_SWITCH, "{v}");
    let (code, _, err) = cli(&["lift", "--gateway"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(names(b.tools()), ["demo__add"]);

    // Bad CLI use: clear errors, non-zero exit, the gateway keeps serving.
    let (code, _, err) = gateway_cli_with_env(
        &config_path,
        &["kill-switch", "list", "--url", &base],
        &[("GW_ADMIN_TOKEN", "wrong-token")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("403") || err.contains("401"), "{err}");
    let (code, _, err) =
        gateway_cli_with_env(&config_path, &["kill-switch", "list", "--url", &base], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("GW_ADMIN_TOKEN"), "{err}");
    let (code, _, err) = cli(&["set", "--tool", "echo"]);
    assert_ne!(code, 0);
    assert!(err.contains("--server"), "{err}");
    let (code, _, err) = cli(&["set"]);
    assert_ne!(code, 0, "{err}");
    let (code, _, err) = gateway_cli_with_env(&config_path, &["kill-switch", "list"], &env);
    assert_eq!(code, 2);
    assert!(err.contains("--url"), "{err}");
    let v = a.call("demo__echo", json!({"message": "still serving"}));
    assert_eq!(v["result"]["content"][0]["text"], "still serving", "{v}");
}
